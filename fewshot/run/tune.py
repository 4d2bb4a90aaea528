"""`fewshot tune`: pick each head's settings on validation episodes, then evaluate on novel ones.

Every tuned head tries the same number of settings (`fewshot.run.tune_space`) on episodes of the
val split (never the novel split: its features are not even extracted before the choice); the
setting with the best val accuracy (averaged over the shot settings; the first on ties) is then
evaluated like `fewshot evaluate`. The results files record the search space, every trial's
val accuracy and the chosen settings under "tuning".

Example:
    >>> chosen, record = tune_on_val(config, val_features, {5: val_episodes}, device="cpu")
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from backbones.checkpoint import checkpoint_sha256, load_checkpoint
from episodes import EpisodeSampler, Episodes, FewShotDataset
from fewshot.config import Config, head_spec
from fewshot.run.evaluate import evaluate_heads
from fewshot.run.pipeline import RunContext, evaluate_checkpoint, split_features
from fewshot.results.document import HeadResult, stored_fit_fields, stored_values
from fewshot.results.verify import head_statistics
from fewshot.run.tune_space import check_space, trial_settings

TRIAL_MARK = "#"


def val_accuracy(result: HeadResult) -> dict:
    """A trial's val accuracy summary, as its results file would report it (fitted-only for `drop`)."""
    return head_statistics({"per_episode": stored_values(result.per_episode), "config": result.config,
                            **stored_fit_fields(result)})["accuracy"]


def tune_on_val(config: Config, features: torch.Tensor, episodes: dict[int, Episodes], *,
                device: str = "cpu") -> tuple[dict[str, dict[str, Any]], dict]:
    """Try every head's settings on val episodes; return (heads with the chosen settings, record).

    Args:
        config: the run config (its `heads` and `tune` sections).
        features: [N, D] raw features of the val split, which `episodes` index.
        episodes: val episodes per k_shot.
        device: where the heads run.
    """
    tune = config.tune
    check_space(config.heads, tune)
    trials = {label: trial_settings(label, tune) for label in config.heads}
    runs = {f"{label}{TRIAL_MARK}{i}": {"head": head_spec(label, entry)[0], **entry, **settings}
            for label, entry in config.heads.items() for i, settings in enumerate(trials[label])}
    scores: dict[str, dict[int, dict]] = {name: {} for name in runs}
    for k_shot, shot_episodes in episodes.items():
        for result in evaluate_heads(features, shot_episodes, runs, config.features, seed=config.episodes.seed,
                                     device=device):
            scores[result.name][k_shot] = val_accuracy(result)
    chosen, record_heads = {}, {}
    for label, entry in config.heads.items():
        if not trials[label]:
            chosen[label] = entry
            continue
        rows = []
        for i, settings in enumerate(trials[label]):
            per_shot = scores[f"{label}{TRIAL_MARK}{i}"]
            means = [summary["mean"] for summary in per_shot.values()]
            score = -math.inf if any(m is None for m in means) else sum(means) / len(means)
            rows.append({"settings": settings, "val_accuracy": {str(k): v for k, v in per_shot.items()},
                         "score": None if score == -math.inf else score})
        best = max(range(len(rows)), key=lambda i: (-math.inf if rows[i]["score"] is None else rows[i]["score"], -i))
        chosen[label] = {**entry, **trials[label][best]}
        record_heads[label] = {"trials": rows, "chosen_trial": best, "chosen": trials[label][best]}
    record = {"split": "val", "method": tune.method, "seed": tune.seed,
              "trials_per_head": len(next(iter(t for t in trials.values() if t), [])),
              "space": tune.space, "selection": "highest mean val accuracy over the shot settings; first on ties",
              "episodes": {str(k): {"count": len(e), "fingerprint": e.fingerprint} for k, e in episodes.items()},
              "heads": record_heads}
    return chosen, record


def run_tune(config: Config, dataset: FewShotDataset, checkpoint: Path, run: RunContext) -> list[dict[str, Any]]:
    """Tune on the val split's episodes, then evaluate the chosen settings on `episodes.split`.

    Args:
        config: the run config with a `tune` section.
        dataset: the loaded dataset (it needs a val split).
        checkpoint: the backbone checkpoint.
        run: output directory, device, console, ranks.
    """
    check_space(config.heads, config.tune)
    val_config = dataclasses.replace(config, episodes=dataclasses.replace(config.episodes, split="val"))
    model, _ = load_checkpoint(checkpoint, device=run.device)
    features = split_features(val_config, dataset, model, checkpoint_sha256(checkpoint), run)
    del model
    settings = config.episodes
    labels = dataset.split("val").labels
    episodes = {k: EpisodeSampler(labels, settings.n_way, k, settings.n_query, settings.seed)
                .sample(config.tune.episodes or settings.count) for k in settings.k_shot}
    run.console.print(f"tuning on {sum(len(e) for e in episodes.values())} val episodes")
    chosen, record = tune_on_val(config, features, episodes, device=run.device)
    for label, entry in record["heads"].items():
        run.console.print(f"{label}: chose {entry['chosen']} (trial {entry['chosen_trial']})")
    return evaluate_checkpoint(dataclasses.replace(config, heads=chosen), dataset, checkpoint, run,
                               extra={"tuning": record})
