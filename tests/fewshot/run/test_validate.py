"""One validation pass before any pretraining or output: config, heads, data, checkpoint."""
import json
import shutil

import pytest
import torch

from backbones.checkpoint import read_checkpoint, save_checkpoint
from backbones.registry import get_backbone
from episodes import load_dataset
from episodes.duplicates import cross_split_duplicates
from fewshot.cli import main


@pytest.mark.parametrize("override, message", [
    ("heads={}", "heads is {}, but it must be at least one head"),
    ("episodes.count=-5", "episodes.count is -5, but it must be >= 1"),
    ("episodes.count=0", "episodes.count is 0, but it must be >= 1"),
    ("heads={sgd: {lr: -1}}", "heads.sgd.lr is -1.0, but must be > 0"),
    ("episodes.n_query=0", "episodes.n_query is 0, but it must be >= 1"),
    ("episodes.k_shot=[]", "episodes.k_shot is [], but it must be a non-empty list"),
    ("episodes.k_shot=[0]", "shots that are all >= 1"),
    ("dataset.image_size=-16", "dataset.image_size is -16, but it must be >= 0"),
    ("pretrain.lr=-0.1", "pretrain.lr is -0.1, but it must be > 0"),
    ("backbone.width=0", "backbone.width is 0.0, but it must be > 0"),
])
def test_bad_settings_stop_benchmark_before_pretraining_or_output(override, message, fast_config, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert main(["benchmark", "--config", str(fast_config), "--output-dir", str(out), override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing pretrained, nothing written


def test_one_way_and_base_split_run_with_a_warning(evaluate, tmp_path):
    code, out, _ = evaluate("--output-dir", str(tmp_path / "a"), "episodes.n_way=1", "episodes.split=base",
                            quiet=False)
    assert code == 0
    assert "warning:" in out and "1-way" in out and "pretrained on" in out


def test_nan_checkpoint_is_refused_before_feature_extraction(evaluate, tiny_checkpoint, tmp_path):
    payload = read_checkpoint(tiny_checkpoint)
    broken = tmp_path / "nan.pt"
    model = get_backbone("resnet12", width=0.125)
    model.load_state_dict(payload["model"])
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    save_checkpoint(broken, model, backbone="resnet12", backbone_config=payload["backbone_config"])
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), checkpoint=broken)
    assert code == 2 and "NaN or infinite weights" in err and "pretrain.lr" in err
    assert not (tmp_path / "data" / "features").exists()  # no extraction, nothing cached
    assert not (tmp_path / "out").exists()


def test_nan_features_are_never_cached(tmp_path):
    from fewshot.run.features import FeatureCache
    cache = FeatureCache(tmp_path)
    features, cached = cache.get_or_compute("k" * 24, lambda: torch.full((3, 4), float("nan")))
    assert not cached and not list(tmp_path.iterdir())


def test_contradicting_backbone_setting_runs_the_checkpoints_and_records_it(evaluate, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = evaluate("--output-dir", str(out), "backbone.width=1.0", quiet=False)
    assert code == 0 and "backbone.width=1.0 (checkpoint: 0.125)" in " ".join(stdout.split())
    doc = json.loads((out / "results-3way-1shot.json").read_text())
    assert doc["config"]["backbone"]["width"] == 0.125 and doc["backbone"]["config"]["width"] == 0.125


def test_diverged_pretraining_blames_the_learning_rate(fast_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    code = main(["pretrain", "--config", str(fast_config), "--output-dir", str(tmp_path / "p"), "--quiet",
                 "pretrain.lr=10000"])
    err = capsys.readouterr().err
    assert code == 2 and "diverged" in err and "pretrain.lr" in err and "10000" in err
    assert not (tmp_path / "p" / "checkpoint-best.pt").exists()


@pytest.fixture
def leaky_dataset(tiny_dataset, tmp_path):
    """The tiny dataset with one training image copied, renamed, into a test class."""
    root = tmp_path / "leaky"
    shutil.copytree(tiny_dataset, root)
    test_class = sorted((root / "test").iterdir())[0]
    shutil.copy(sorted((root / "train" / "class00").iterdir())[0], test_class / "copied.png")
    return root


def test_duplicates_across_splits_are_found_by_content(leaky_dataset, tiny_dataset):
    assert cross_split_duplicates(load_dataset("image_folder", path=tiny_dataset, image_size=16)) == []
    found = cross_split_duplicates(load_dataset("image_folder", path=leaky_dataset, image_size=16))
    assert len(found) == 1
    assert (found[0].first, found[0].first_class, found[0].second) == ("base", "class00", "novel")


def test_duplicates_are_refused_unless_allowed(evaluate, leaky_dataset, tmp_path):
    leaky = f"dataset.path={leaky_dataset}"
    code, _, err = evaluate("--output-dir", str(tmp_path / "out"), leaky)
    assert code == 2 and "appear (same pixels) in two splits" in err and "dataset.allow_duplicates=true" in err
    assert not (tmp_path / "out").exists()
    code, out, _ = evaluate("--output-dir", str(tmp_path / "out"), leaky, "dataset.allow_duplicates=true", quiet=False)
    assert code == 0 and "Running anyway" in " ".join(out.split())
