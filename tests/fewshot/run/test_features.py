"""The feature cache: computed once, reused, and never trusted when damaged."""
import torch

from episodes import Split
from fewshot.run.features import FeatureCache, cache_key


def make_split(seed=0):
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return Split(images, torch.tensor([0, 0, 1, 1, 2, 2]), ("a", "b", "c"))


def counting(features):
    calls = []

    def compute():
        calls.append(1)
        return features
    return compute, calls


def test_second_request_reads_the_cache(tmp_path):
    messages = []
    cache = FeatureCache(tmp_path, log=messages.append)
    compute, calls = counting(torch.randn(6, 4))
    first, hit_first = cache.get_or_compute("k", compute)
    second, hit_second = cache.get_or_compute("k", compute)
    assert (hit_first, hit_second) == (False, True) and len(calls) == 1
    assert torch.equal(first, second) and any("reusing" in m for m in messages)


def test_truncated_entry_is_detected_and_recomputed(tmp_path):
    messages = []
    cache = FeatureCache(tmp_path, log=messages.append)
    features = torch.randn(6, 4)
    cache.store("k", features)
    path = cache.path("k")
    path.write_bytes(path.read_bytes()[:50])
    compute, calls = counting(features)
    again, hit = cache.get_or_compute("k", compute)
    assert not hit and len(calls) == 1 and torch.equal(again, features)
    assert any("damaged" in m for m in messages)
    assert cache.get_or_compute("k", compute)[1]  # the rewritten entry is complete


def test_entry_with_wrong_checksum_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    torch.save({"features": torch.zeros(6, 4), "checksum": "not-it"}, cache.path("k"))
    compute, calls = counting(torch.ones(6, 4))
    features, hit = cache.get_or_compute("k", compute)
    assert not hit and torch.equal(features, torch.ones(6, 4))


def test_no_temporary_files_are_left_behind(tmp_path):
    FeatureCache(tmp_path).store("k", torch.randn(3, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["features-k.pt"]


def test_unwritable_cache_folder_still_returns_features(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    messages = []
    features, hit = FeatureCache(blocker / "cache", log=messages.append).get_or_compute("k", lambda: torch.ones(2, 2))
    assert not hit and torch.equal(features, torch.ones(2, 2)) and any("could not write" in m for m in messages)


def test_key_changes_with_checkpoint_data_split_and_preprocessing():
    split = make_split()
    base = dict(checkpoint_sha256="abc", split=split, split_name="novel", preprocessing="p1")
    keys = {cache_key(**base),
            cache_key(**{**base, "checkpoint_sha256": "abd"}),
            cache_key(**{**base, "split": make_split(seed=1)}),
            cache_key(**{**base, "split_name": "val"}),
            cache_key(**{**base, "preprocessing": "p2"})}
    assert len(keys) == 5 and cache_key(**base) == cache_key(**dict(base))
