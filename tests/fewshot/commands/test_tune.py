"""`fewshot tune`: the best val trial is chosen, novel episodes are never seen while choosing,
and bad search spaces are user errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

import fewshot.run.tune as tune_module
from backbones import get_backbone
from backbones.checkpoint import save_checkpoint
from backbones.distributed import Ranks
from episodes import load_dataset
from episodes.errors import UserError
from fewshot.config import load_config
from fewshot.run.pipeline import RunContext
from tests.fewshot.conftest import run_fewshot

SPACE = "{sgd: {steps: [0, 30], lr: [0.5]}, pattern_search: {radius: [0.5, 1.0]}}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny backbone: its random features are enough to tell heads apart."""
    torch.manual_seed(0)
    model = get_backbone("resnet12", width=0.125)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt", model, backbone="resnet12",
                           backbone_config={"width": 0.125})


def _config(tiny_config: Path, *overrides: str):
    return load_config(tiny_config, ["heads={sgd: {}, pattern_search: {max_evaluations: 500}, prototype: {}}",
                                     f"tune.space={SPACE}", "tune.episodes=20", "episodes.count=20",
                                     "episodes.k_shot=[2]", *overrides])


def _run(tmp_path: Path, data_root: Path) -> RunContext:
    return RunContext(output_dir=tmp_path, device="cpu", data_root=data_root, console=Console(quiet=True),
                      ranks=Ranks())


def test_tune_chooses_the_best_val_trial_and_never_reads_novel_features(tmp_path, tiny_config, checkpoint,
                                                                       monkeypatch):
    config = _config(tiny_config)
    dataset = load_dataset("image_folder", None, config.dataset.path, config.dataset.image_size)
    splits, evaluated = [], []
    real_split_features = tune_module.split_features

    def spy_split_features(cfg, *args, **kwargs):
        splits.append(cfg.episodes.split)
        return real_split_features(cfg, *args, **kwargs)

    def stub_evaluate(cfg, *args, extra=None, **kwargs):  # the novel phase, after the choice
        evaluated.append((list(splits), cfg, extra))
        return []

    monkeypatch.setattr(tune_module, "split_features", spy_split_features)
    monkeypatch.setattr(tune_module, "evaluate_checkpoint", stub_evaluate)
    tune_module.run_tune(config, dataset, checkpoint, _run(tmp_path, tmp_path / "data"))
    (seen_before, tuned, extra), = evaluated
    assert seen_before == ["val"] and splits == ["val"]  # only val features were extracted
    record = extra["tuning"]
    assert record["split"] == "val" and record["trials_per_head"] == 2
    val_fingerprint = record["episodes"]["2"]["fingerprint"]
    novel = tune_module.EpisodeSampler(dataset.split("novel").labels, 3, 2, 4, config.episodes.seed).sample(20)
    assert val_fingerprint != novel.fingerprint
    for label in ("sgd", "pattern_search"):
        trials = record["heads"][label]["trials"]
        assert len(trials) == 2
        scores = [trial["score"] for trial in trials]
        best = max(range(2), key=lambda i: (scores[i], -i))
        assert record["heads"][label]["chosen_trial"] == best
        assert tuned.heads[label] == {**config.heads[label], **trials[best]["settings"]}
    sgd_scores = [t["score"] for t in record["heads"]["sgd"]["trials"]]
    assert sgd_scores[0] == pytest.approx(1 / 3)  # steps 0: a zero head predicts class 0 everywhere
    assert record["heads"]["sgd"]["chosen"]["steps"] == 30 and sgd_scores[1] > sgd_scores[0]
    assert tuned.heads["prototype"] == {} and "prototype" not in record["heads"]


def test_trial_val_accuracy_is_what_the_head_scores_on_those_val_episodes(tmp_path, tiny_config, checkpoint):
    config = _config(tiny_config, "tune.space={sgd: {steps: [5, 10]}}", "heads={sgd: {}}")
    dataset = load_dataset("image_folder", None, config.dataset.path, config.dataset.image_size)
    labels = dataset.split("val").labels
    episodes = {2: tune_module.EpisodeSampler(labels, 3, 2, 4, 0).sample(20)}
    features = torch.nn.functional.normalize(torch.randn(len(labels), 16, generator=torch.Generator().manual_seed(0)), dim=1)
    chosen, record = tune_module.tune_on_val(config, features, episodes)
    for i, steps in enumerate([5, 10]):
        direct = tune_module.evaluate_heads(features, episodes[2], {f"sgd#{i}": {"head": "sgd", "steps": steps}}, config.features,
                                            seed=0)[0]
        assert record["heads"]["sgd"]["trials"][i]["val_accuracy"]["2"]["mean"] == pytest.approx(
            float(direct.per_episode.double().mean()), abs=1e-6)


@pytest.mark.parametrize("space, words", [
    ("{sgd: {learning_rate: [0.1]}}", "does not have"),
    ("{lda: {lr: [0.1]}}", "not configured"),
    ("{sgd: {lr: []}}", "non-empty list"),
    ("{sgd: {lr: [0.1, 0.2]}, pattern_search: {radius: [1.0]}}", "same size"),
    ("{sgd: {head: [pattern_search]}}", "does not have"),
])
def test_bad_search_spaces_are_user_errors(tiny_config, space, words):
    config = _config(tiny_config, f"tune.space={space}")
    with pytest.raises(UserError, match=words):
        tune_module.check_space(config.heads, config.tune)


def test_the_cli_refuses_an_unknown_setting_without_writing_anything(tmp_path, tiny_config, checkpoint):
    out = tmp_path / "out"
    result = run_fewshot("tune", "--config", str(tiny_config), "--checkpoint", str(checkpoint),
                         "--output-dir", str(out), "tune.space={sgd: {learning_rate: [0.1]}}",
                         data_root=tmp_path / "data", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "learning_rate" in result.stderr and "Its settings" in result.stderr
    assert not out.exists()
