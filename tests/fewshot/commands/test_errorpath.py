"""One error path: every expected failure is one paragraph, exit code 2, no traceback."""
import json
import random

import pytest
import torch

from fewshot.cli import main
from fewshot.run.features import FeatureCache
from fewshot.results.document import write_results
from tests.fewshot.results.test_document import make_doc


def one_paragraph(err: str) -> str:
    assert "Traceback" not in err and err.startswith("error:")
    return " ".join(err.split())


@pytest.mark.parametrize("device, message", [
    ("cuda", "asks for a GPU, but this machine has 0 usable CUDA devices"),
    ("foo", "--device 'foo' is not a torch device"),
])
def test_unusable_devices(evaluate, tmp_path, device, message):
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
        message = "usable CUDA devices"
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), "--device", device)
    assert code == 2 and message in one_paragraph(err) and not (tmp_path / "out").exists()


def test_config_that_is_a_folder_or_not_utf8(evaluate, tmp_path):
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), config=tmp_path)
    assert code == 2 and "cannot be read" in one_paragraph(err)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), config=latin1)
    assert code == 2 and "is not UTF-8 text" in one_paragraph(err)


def test_override_one_level_too_deep(evaluate, tmp_path):
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), "episodes.count.x=1")
    assert code == 2 and "episodes.count is a single value" in one_paragraph(err)


def test_overrides_after_options_are_accepted(tiny_checkpoint, fast_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert main(["evaluate", "episodes.count=3", "--checkpoint", str(tiny_checkpoint), "episodes.k_shot=[1]",
                 "--config", str(fast_config), "--output-dir", str(out), "--quiet", "episodes.seed=9"]) == 0
    doc = json.loads((out / "results-3way-1shot.json").read_text())
    assert doc["episodes"]["count"] == 3 and doc["episodes"]["seed"] == 9
    assert not (out / "results-3way-2shot.json").exists()


@pytest.mark.parametrize("content, message", [
    (b'{"model": {}}', "not a PyTorch file"),
    (b"\x00" + random.Random(0).randbytes(2047), "not a PyTorch file"),
])
def test_json_or_random_checkpoint_is_not_called_code(evaluate, tmp_path, content, message):
    checkpoint = tmp_path / "fake.pt"
    checkpoint.write_bytes(content)
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), checkpoint=checkpoint)
    text = one_paragraph(err)
    assert code == 2 and message in text and "could run code" not in text


def test_negative_image_size_blames_the_setting(evaluate, tmp_path):
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), "dataset.image_size=-8")
    text = one_paragraph(err)
    assert code == 2 and "dataset.image_size is -8" in text and ".png" not in text


@pytest.fixture
def results_file(tmp_path):
    return write_results(tmp_path / "run" / "results-5way-5shot.json", make_doc())


def test_leaderboard_output_that_is_a_folder(results_file, tmp_path, capsys):
    assert main(["leaderboard", str(results_file), "--output", str(tmp_path)]) == 2
    assert "is a folder, not a file" in one_paragraph(capsys.readouterr().err)


def test_leaderboard_output_under_a_file_or_an_unwritable_folder(results_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["leaderboard", str(results_file), "--output", str(blocker / "sub" / "board.md")]) == 2
    assert "is a file, not a folder" in one_paragraph(capsys.readouterr().err)
    missing_parent = tmp_path / "new" / "deeper" / "board.md"  # a missing parent is created
    assert main(["leaderboard", str(results_file), "--output", str(missing_parent)]) == 0
    assert missing_parent.is_file()


def test_results_csv_that_cannot_be_written_is_found_before_any_results(evaluate, tmp_path):
    out = tmp_path / "out"
    (out / "results.csv").mkdir(parents=True)
    code, _, err = evaluate("--output-dir", str(out))
    assert code == 2 and "results.csv', but that is a folder" in one_paragraph(err)
    assert not list(out.glob("results-*.json"))


def test_file_errors_found_late_are_one_paragraph(results_file, tmp_path, monkeypatch, capsys):
    """An OSError the checks could not foresee (disk full, permissions changed) still gets the paragraph."""
    import fewshot.commands.leaderboard as command

    def full_disk(path, text):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(command, "atomic_write_text", full_disk)
    assert main(["leaderboard", str(results_file), "--output", str(tmp_path / "board.md")]) == 2
    assert "the disk is full" in one_paragraph(capsys.readouterr().err)


def test_feature_cache_entry_copied_under_another_key_is_refused(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.store("a" * 24, torch.ones(3, 4))
    cache.path("a" * 24).rename(cache.path("b" * 24))  # a valid entry, under the wrong name
    assert cache.load("b" * 24) is None and not cache.path("b" * 24).exists()
    features, cached = cache.get_or_compute("b" * 24, lambda: torch.zeros(3, 4))
    assert not cached and torch.equal(features, torch.zeros(3, 4))
    assert torch.equal(cache.load("b" * 24), torch.zeros(3, 4))
