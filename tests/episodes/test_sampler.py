"""The episode sampler: valid, deterministic, uniform, and clear about impossible episodes."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from episodes import EpisodeSampler, UserError
from episodes.sampler import episode_streams, partial_shuffle


def labels_of(counts):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])


def test_episodes_have_distinct_classes_and_disjoint_support_and_query():
    labels = labels_of([30] * 12)
    episodes = EpisodeSampler(labels, n_way=5, k_shot=5, n_query=15, seed=3).sample(200)
    assert episodes.support.shape == (200, 25) and episodes.query.shape == (200, 75)
    for e in range(200):
        assert len(set(episodes.classes[e].tolist())) == 5
        assert not set(episodes.support[e].tolist()) & set(episodes.query[e].tolist())
        # episode label i is the class classes[e, i], for support and query alike
        assert torch.equal(labels[episodes.support[e]], episodes.classes[e][episodes.support_labels[e]])
        assert torch.equal(labels[episodes.query[e]], episodes.classes[e][episodes.query_labels[e]])


def test_uneven_classes_never_yield_padding_or_repeats():
    labels = labels_of([20, 7, 50, 6, 9])
    episodes = EpisodeSampler(labels, n_way=3, k_shot=2, n_query=4, seed=0).sample(500)
    indices = torch.cat([episodes.support, episodes.query], dim=1)
    assert int(indices.min()) >= 0 and int(indices.max()) < len(labels)
    assert all(len(set(row.tolist())) == row.numel() for row in indices)


def test_same_seed_same_episodes_different_seed_different_episodes():
    labels = labels_of([40] * 20)
    first = EpisodeSampler(labels, 5, 5, 15, seed=7).sample(100)
    again = EpisodeSampler(labels, 5, 5, 15, seed=7).sample(100)
    other = EpisodeSampler(labels, 5, 5, 15, seed=8).sample(100)
    assert first.fingerprint == again.fingerprint and torch.equal(first.query, again.query)
    assert first.fingerprint != other.fingerprint


def test_same_seed_gives_same_fingerprint_in_another_process():
    code = ("import torch; from episodes import EpisodeSampler; "
            "labels = torch.arange(20).repeat_interleave(40); "
            "print(EpisodeSampler(labels, 5, 5, 15, seed=11).sample(3000).fingerprint)")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(2)}
    here = EpisodeSampler(torch.arange(20).repeat_interleave(40), 5, 5, 15, seed=11).sample(3000)
    assert outputs == {here.fingerprint + "\n"}


def test_class_frequencies_are_uniform():
    """Chi-square test: each of 20 classes should appear in n_way/20 of the episode slots."""
    labels = labels_of([25] * 20)
    episodes = EpisodeSampler(labels, n_way=5, k_shot=1, n_query=1, seed=1).sample(8000)
    observed = torch.bincount(episodes.classes.flatten(), minlength=20).double()
    expected = episodes.classes.numel() / 20
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # chi-square 0.999 quantile with 19 degrees of freedom


def test_images_within_a_class_are_uniform():
    labels = labels_of([10] * 6)
    episodes = EpisodeSampler(labels, n_way=2, k_shot=1, n_query=1, seed=2).sample(12000)
    counts = torch.bincount(episodes.support.flatten(), minlength=60).double()
    expected = episodes.support.numel() / 60
    assert float(((counts - expected) ** 2 / expected).sum()) < 99.6  # chi2 0.999, 59 dof


@pytest.mark.parametrize("n_way,k_shot,n_query,needle", [
    (6, 1, 1, "n_way to at most 5"),
    (5, 5, 15, "k_shot or episodes.n_query"),
    (0, 1, 1, "positive"),
])
def test_impossible_episodes_are_clear_errors(n_way, k_shot, n_query, needle):
    with pytest.raises(UserError, match=needle):
        EpisodeSampler(labels_of([10] * 5), n_way, k_shot, n_query)


def test_subset_keeps_settings_and_rows():
    episodes = EpisodeSampler(labels_of([10] * 5), 5, 1, 2, seed=0).sample(10)
    part = episodes.subset(slice(2, 5))
    assert len(part) == 3 and torch.equal(part.support, episodes.support[2:5]) and part.k_shot == 1


def test_any_count_is_a_prefix_of_a_larger_one():
    """Episode i comes from its own stream (seed, i): 6 episodes are the first 6 of 8, of 3000."""
    labels = labels_of([30] * 12)
    sampler = EpisodeSampler(labels, 5, 2, 3, seed=4)
    longer = sampler.sample(3000)  # three chunks
    for count in (1, 6, 8, 1025):
        shorter = sampler.sample(count)
        for name in ("classes", "support", "query"):
            assert torch.equal(getattr(shorter, name), getattr(longer, name)[:count])


def test_partial_shuffle_matches_a_plain_fisher_yates():
    """The sparse shuffle against the textbook one on a full list, with the same uniforms."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(6, 40, size=300)
    uniform = rng.random((300, 6))
    fast = partial_shuffle(sizes, uniform)
    for row, size in enumerate(sizes.tolist()):
        items = list(range(size))
        for step in range(6):
            swap = step + int(uniform[row, step] * (size - step))
            items[step], items[swap] = items[swap], items[step]
        assert fast[row].tolist() == items[:6]


def test_episode_streams_depend_on_seed_and_index_only():
    block = episode_streams(5, 0, 10, 7)
    assert np.array_equal(episode_streams(5, 3, 4, 7), block[3:7])
    assert np.array_equal(episode_streams(5, 2, 1, 3)[0], block[2, :3])
    assert not np.array_equal(episode_streams(6, 0, 10, 7), block)
    assert len(np.unique(block)) == block.size
