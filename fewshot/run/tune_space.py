"""The search space of `fewshot tune`: checking the `tune` config section against the configured
heads, and the settings each head tries, in trial order (the section itself is
`fewshot.config.TuneConfig`).

Example (YAML):
    tune:
      method: grid            # or random (then `trials` per head)
      episodes: 200           # val episodes per shot setting
      space:
        sgd: {lr: [0.1, 0.5], steps: [50, 100]}
        pattern_search: {radius: [0.5, 1.0], chunk_size: [64, 256]}
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from typing import Any

from episodes.errors import fail
from fewshot.config import TuneConfig, head_spec
from fewshot.heads import head_class

UNTUNABLE = ("head", "bands")  # what a head is and how it expands, not settings of a fit


def space_for(label: str, space: dict[str, dict[str, list[Any]]]) -> dict[str, list[Any]] | None:
    """The search space of a configured head label (exact, or its base before `@`)."""
    return space.get(label, space.get(label.split("@")[0]))


def check_space(heads: dict[str, dict[str, Any]], tune: TuneConfig) -> None:
    """Every space label names a configured head, every setting a field of its `Config`, every
    value list is non-empty, and the trial counts work out; else a `UserError` naming the fix."""
    if not tune.space:
        raise fail("The tune section has no search space.",
                   "Add tune.space, e.g. `tune: {space: {sgd: {lr: [0.1, 0.5]}}}`.")
    bases = {label.split("@")[0] for label in heads} | set(heads)
    for label, settings in tune.space.items():
        if label not in bases:
            raise fail(f"tune.space names the head {label!r}, which is not configured.",
                       f"Tune one of the configured heads: {', '.join(heads)}.")
        entry = next(entry for name, entry in heads.items() if name == label or name.split("@")[0] == label)
        head_name, _ = head_spec(label, entry)
        valid = [f.name for f in dataclasses.fields(head_class(head_name).Config)]
        for key, values in settings.items():
            if key not in valid or key in UNTUNABLE:
                raise fail(f"tune.space.{label} names the setting {key!r}, which the {head_name} head does not have.",
                           f"Its settings: {', '.join(v for v in valid if v not in UNTUNABLE)}.")
            if not isinstance(values, list) or not values:
                raise fail(f"tune.space.{label}.{key} is {values!r}, but must be a non-empty list of values.",
                           f"Write it as e.g. tune.space.{label}.{key}: [value1, value2].")
    if tune.method == "random" and tune.trials < 1:
        raise fail(f"tune.trials is {tune.trials}, but random search needs at least one trial per head.",
                   "Set tune.trials to the number of settings tried per head, e.g. 8.")
    if tune.trials < 0:
        raise fail(f"tune.trials is {tune.trials}, but must be >= 0.", "Set tune.trials to 0 (the whole grid) or more.")
    if tune.episodes < 0:
        raise fail(f"tune.episodes is {tune.episodes}, but must be >= 0.",
                   "Set tune.episodes to the val episodes per shot setting (0: episodes.count).")
    if tune.method == "grid":
        sizes = {label: len(list(itertools.product(*settings.values()))) for label, settings in tune.space.items()}
        if len(set(sizes.values())) > 1 or (tune.trials and tune.trials not in sizes.values()):
            raise fail(f"Grid search must try every tuned head equally often, but the grids have "
                       f"{', '.join(f'{label}: {n}' for label, n in sizes.items())} points"
                       + (f" and tune.trials is {tune.trials}" if tune.trials else "") + ".",
                       "Give every head a grid of the same size, or use tune.method: random with tune.trials.")


def trial_settings(label: str, tune: TuneConfig) -> list[dict[str, Any]]:
    """The settings tried for one head label, in trial order ([] when it is not tuned)."""
    settings = space_for(label, tune.space)
    if not settings:
        return []
    keys = list(settings)
    if tune.method == "grid":
        return [dict(zip(keys, values)) for values in itertools.product(*settings.values())]
    seed = int(hashlib.sha256(f"{tune.seed}/{label.split('@')[0]}".encode()).hexdigest()[:15], 16)
    draw = random.Random(seed)
    return [{key: draw.choice(settings[key]) for key in keys} for _ in range(tune.trials)]
