"""The run config: typed dataclasses filled from YAML and `key.sub=value` overrides.

Example:
    >>> config = load_config("configs/cifar_fs.yaml", ["episodes.count=100", "heads.sgd.lr=0.1"])
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from backbones.config import BackboneConfig, PretrainConfig
from episodes.config import DatasetConfig, EpisodesConfig
from fewshot.heads import head_class
from fewshot.results.bands import expand_bands
from fewshot.typed import build_dataclass, coerce, parse_override, read_yaml, set_path
from fewshot.volume.config import VolumeConfig

# The demo's heads; pattern search runs both with the first-fit stop and on to a support loss of 0.1.
# max_margin runs first: its solves then serve every head's max-margin diagnostic (`remembered_dual`).
DEFAULT_HEADS: dict[str, dict[str, Any]] = {
    "max_margin": {}, "sgd": {}, "pattern_search": {},
    "pattern_search_loss0.1": {"head": "pattern_search", "loss_threshold": 0.1},
    "logistic_regression": {}, "prototype": {}, "swa": {}, "poisoned": {},
    "guess_check_exact": {"head": "guess_check", "method": "exact", "distribution": "gaussian",
                          "exact": {"chains": 8, "repeats": 2, "sweeps": 1, "max_levels": 1000}},
    # An evolution strategy next to pattern search and SGD: diagonal CMA-ES, budget sized to the demo's time.
    "blackbox_cma": {"head": "blackbox", "library": "torch", "optimizer": "sep_cma", "budget": 1000, "population": 10}}
# The demo's volume analysis: first 50 episodes per setting, good/poisoned volumes on the first
# 4 of them, sized to fit its time budget (see docs/volume.md). Blocks of 10 points:
# whole-column moves fail on the 100-point poisoned polytopes (runs stall or die).
DEMO_VOLUME = {"enabled": True, "episodes": 50, "chains": 48, "repeats": 2, "sweeps": 1, "level_fraction": 0.6,
               "max_levels": 1000, "block_size": 10, "poisoned": True, "poisoned_episodes": 4}


@dataclass
class FeaturesConfig:
    """The `features` section: how frozen features are prepared for the heads.

    Args:
        normalize: `l2` scales every feature vector to unit length; `none` leaves it.
        center: subtract the episode's support mean before normalizing.
        batch_size: images per forward pass when extracting features (0: 32 on CPU, 512 on CUDA).
    """

    normalize: Literal["l2", "none"] = "l2"
    center: bool = False
    batch_size: int = 0


@dataclass
class TuneConfig:
    """The `tune` section: which head settings `fewshot tune` searches, and its trials.

    Args:
        space: head label -> setting -> candidate values. A label also matches the band entries
            it expands into (`sgd` matches `sgd@0.30-0.35`).
        method: `grid` (every combination; every tuned head needs the same number) or `random`
            (`trials` combinations per head, drawn with `seed`).
        trials: combinations per head for `random`; with `grid`, 0 or the grid size.
        seed: seed of the random draws.
        episodes: val episodes per shot setting (0: `episodes.count`).
    """

    space: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    method: Literal["grid", "random"] = "grid"
    trials: int = 0
    seed: int = 0
    episodes: int = 0


@dataclass
class Config:
    """A whole run. `heads` maps a registered head name to its config overrides."""

    name: str = "demo"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=0.5))
    # A one-epoch warm-up: without it the demo's first five epochs sit at chance (docs/speed.md).
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(epochs=10, warmup_epochs=1, flip=False,
                                                                            crop_padding=0))
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    heads: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_HEADS))
    tune: TuneConfig = field(default_factory=TuneConfig)
    volume: VolumeConfig = field(default_factory=lambda: VolumeConfig(**DEMO_VOLUME))


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The config from a YAML file (or the built-in demo) with overrides applied, validated.

    Args:
        path: a YAML file; None starts from the demo defaults.
        overrides: `key.sub=value` strings, applied in order.
    """
    tree = read_yaml(path) if path else config_to_dict(Config())
    for text in overrides:
        keys, value = parse_override(text)
        set_path(tree, keys, value)
    config = build_dataclass(Config, tree)
    if "heads" in tree:  # a config's heads replace the demo's list instead of adding to it
        config.heads = coerce(dict[str, dict[str, Any]], tree["heads"] or {}, "heads")
    config.heads = expand_bands(config.heads)  # `bands: [[low, high], ...]`: one entry per band
    if path:  # a config file's volume section starts from VolumeConfig (off), not the demo's
        config.volume = build_dataclass(VolumeConfig, tree.get("volume"), "volume")
    validate_heads(config)
    return config


def head_spec(label: str, settings: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(registered head name, its settings) of one `heads` entry.

    An entry is named after its head (`sgd: {lr: 0.1}`), or carries a `head` key so that one
    head can run twice with different settings (`ps_loss: {head: pattern_search, loss_threshold: 0.1}`).
    """
    settings = dict(settings or {})
    return str(settings.pop("head", label)), settings


def validate_heads(config: Config) -> None:
    """Check every configured head exists and its settings fit its `Config` dataclass."""
    for label, entry in config.heads.items():
        name, settings = head_spec(label, entry)
        build_dataclass(head_class(name).Config, settings, f"heads.{label}")


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (for results files and checkpoints)."""
    return dataclasses.asdict(config)
