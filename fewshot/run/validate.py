"""One validation pass over a run's input, before any pretraining or output.

Each check is a rule on the loaded config, the dataset, the checkpoint or the device, and
raises `UserError` naming the setting to change; settings that run but are probably a mistake
(1-way episodes, evaluating the pretraining classes) come back as warnings. The commands call
these in `prepare_run`, so a bad setting costs seconds, not a pretraining.

Example:
    >>> warnings = check_config(config, pretraining=True)
    >>> warnings += check_dataset(config, dataset) + check_checkpoint(config, path)
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from backbones.checkpoint import build_backbone, load_weights, read_checkpoint
from backbones.config import BackboneConfig
from episodes.base import SPLIT_ALIASES, FewShotDataset
from episodes.duplicates import cross_split_duplicates
from episodes.errors import fail
from fewshot.config import head_spec
from fewshot.heads import get_head
from fewshot.typed import build_dataclass

Rule = tuple[str, Callable[[Any], bool], str]  # dotted config key, holds, the rule in words


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


CONFIG_RULES: tuple[Rule, ...] = (
    ("dataset.image_size", lambda v: v >= 0, ">= 0 (0 keeps the native size)"),
    ("backbone.width", lambda v: _finite(v) and v > 0, "> 0"),
    ("backbone.dropblock", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("features.batch_size", lambda v: v >= 0, ">= 0 (0 picks one for the device)"),
)
EVALUATE_RULES: tuple[Rule, ...] = (
    ("episodes.n_way", lambda v: v >= 1, ">= 1"),
    ("episodes.k_shot", lambda v: len(v) > 0, "a non-empty list of shots, such as [1, 5]"),
    ("episodes.k_shot", lambda v: all(k >= 1 for k in v), "a list of shots that are all >= 1"),
    ("episodes.k_shot", lambda v: len(set(v)) == len(v), "a list without repeated shots"),
    ("episodes.n_query", lambda v: v >= 1, ">= 1"),
    ("episodes.count", lambda v: v >= 1, ">= 1"),
    ("episodes.split", lambda v: v in SPLIT_ALIASES, f"one of {sorted(SPLIT_ALIASES)}"),
    ("heads", lambda v: len(v) >= 1, "at least one head, such as heads.prototype={}"),
)
PRETRAIN_RULES: tuple[Rule, ...] = (
    ("pretrain.epochs", lambda v: v >= 1, ">= 1"),
    ("pretrain.batch_size", lambda v: v >= 1, ">= 1"),
    ("pretrain.lr", lambda v: _finite(v) and v > 0, "> 0"),
    ("pretrain.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("pretrain.weight_decay", lambda v: _finite(v) and v >= 0, ">= 0"),
    ("pretrain.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("pretrain.checkpoint_every", lambda v: v >= 0, ">= 0"),
    ("pretrain.val_episodes", lambda v: v >= 0, ">= 0"),
    ("pretrain.crop_padding", lambda v: v is None or v >= 0, ">= 0 or null"),
    ("pretrain.jitter", lambda v: 0 <= v <= 1, "in [0, 1]"),
)


RESNET12_PARAMETERS = 12_424_320  # ResNet-12 at width 1; the count grows with width^2
FIRST_STAGE_CHANNELS = 64  # channels of the first residual block at width 1 (at full image size)


def memory_limit() -> int:
    """Bytes of memory this machine has (the limit a setting's estimate is held to)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a 16 GiB machine
        return 16 << 30


def _refuse_if_too_big(needed: float, subject: str, what: str, fix: str) -> None:
    limit = memory_limit()
    if needed > limit:
        raise fail(f"{subject} would need at least {needed / 2**30:,.3g} GiB of memory for {what}, "
                   f"more than this machine's {limit / 2**30:,.3g} GiB.", fix)


def backbone_bytes(width: float, *, training: bool) -> float:
    """Bytes of a ResNet-12's weights at `width` (x4 when training: gradients, momentum, a copy)."""
    return RESNET12_PARAMETERS * width ** 2 * 4 * (4 if training else 1)


def check_width(width: Any, subject: str, *, training: bool) -> None:
    """Refuse a backbone width that is not a positive number or whose weights would not fit in memory.

    Args:
        width: the width multiplier.
        subject: what has that width, as the start of a sentence ("The setting backbone.width=2.0").
        training: the backbone will be trained (gradients and optimizer state too).
    """
    if not _finite(width) or width <= 0:
        raise fail(f"{subject} is not a finite width > 0.", "Use a width such as 0.5 or 1.")
    _refuse_if_too_big(backbone_bytes(width, training=training), subject, "the backbone's weights",
                       "Use a width such as 0.5 or 1 (the standard ResNet-12 has width 1, 12.4 million weights).")


def check_resources(config: Any, *, pretraining: bool, evaluating: bool) -> None:
    """Estimate what the settings allocate and refuse, before any work, those that cannot fit in memory.

    The estimates are lower bounds: the episode indices and per-episode results of a setting, the
    backbone's weights, and the first residual stage of one batch of images.
    """
    check_width(config.backbone.width, f"The setting backbone.width={config.backbone.width!r}", training=pretraining)
    size = config.dataset.image_size
    batch = max(config.pretrain.batch_size if pretraining else 0, config.features.batch_size or 32)
    # one batch through the first stage: 3 convolutions and a shortcut, each kept for the backward pass
    activations = batch * max(1, round(FIRST_STAGE_CHANNELS * config.backbone.width)) * size ** 2 * 4 * 4
    _refuse_if_too_big(activations * (2 if pretraining else 1), f"The setting dataset.image_size={size}",
                       f"the first stage of the backbone on one batch of {batch} images",
                       "Use an image size such as 32 or 84 (0 keeps the files' own size).")
    if evaluating:
        episodes = config.episodes
        per_episode = 8 * episodes.n_way * (1 + max(episodes.k_shot, default=1) + episodes.n_query)
        per_episode += 64 * len(config.heads)  # accuracy, loss and fit records of every head
        _refuse_if_too_big(float(episodes.count) * per_episode, f"The setting episodes.count={episodes.count:,}",
                           f"the episode indices and per-episode results ({per_episode:,} bytes an episode)",
                           "Lower episodes.count (600 to 10,000 episodes give intervals of +-0.2 to 1 point).")


def _value(config: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        config = getattr(config, key)
    return config


def apply_rules(config: Any, rules: tuple[Rule, ...]) -> None:
    """Raise `UserError` for the first rule `config` breaks, naming the setting."""
    for key, holds, rule in rules:
        value = _value(config, key)
        if not holds(value):
            raise fail(f"The setting {key} is {value!r}, but it must be {rule}.",
                       f"Set {key} in the config, or override it on the command line ({key}=...).")


def check_config(config: Any, *, pretraining: bool, evaluating: bool = True) -> list[str]:
    """Check every setting of a loaded config that the run uses, heads included; return warnings.

    Args:
        config: a `fewshot.config.Config`.
        pretraining: the run trains a backbone, so the `pretrain` section matters.
        evaluating: the run evaluates heads, so the `episodes` and `heads` sections matter.
    """
    apply_rules(config, CONFIG_RULES + (PRETRAIN_RULES if pretraining else ()))
    if evaluating:
        apply_rules(config, EVALUATE_RULES)
    check_resources(config, pretraining=pretraining, evaluating=evaluating)
    if not evaluating:
        return []
    if config.volume.enabled:  # checked here so that a bad setting costs no pretraining
        config.volume.check("volume")
    for label, entry in config.heads.items():
        name, settings = head_spec(label, entry)
        get_head(name, **settings)  # the head's own setting rules (`heads.sgd.lr > 0`, ...)
    warnings = []
    if config.episodes.n_way == 1:
        warnings.append("episodes.n_way=1: a 1-way episode has one class, so every head scores 100% by "
                        "construction.")
    if SPLIT_ALIASES[config.episodes.split] == "base":
        warnings.append(f"episodes.split={config.episodes.split}: these are the classes the backbone was "
                        "pretrained on, so accuracy says little about few-shot generalization (use novel).")
    return warnings


def check_dataset(config: Any, dataset: FewShotDataset) -> list[str]:
    """Refuse images shared between splits (unless `dataset.allow_duplicates`); return warnings."""
    duplicates = cross_split_duplicates(dataset)
    if not duplicates:
        return []
    listing = "; ".join(map(str, duplicates[:3])) + (f"; and {len(duplicates) - 3} more" if len(duplicates) > 3 else "")
    what = (f"{len(duplicates)} images of dataset {dataset.name!r} appear (same pixels) in two splits: {listing}.")
    if config.dataset.allow_duplicates:
        return [f"{what} Running anyway (dataset.allow_duplicates=true)."]
    raise fail(f"{what} Test images seen in pretraining inflate few-shot accuracy.",
               "Remove the copies from all but one split, or set dataset.allow_duplicates=true to run anyway.")


def check_checkpoint(config: Any, path: Path) -> list[str]:
    """Load a checkpoint fully, refuse non-finite weights, and take its backbone settings.

    The backbone that runs is the checkpoint's, so `config.backbone` is replaced by it (results
    record what ran); a contradicting setting comes back as a warning.

    Args:
        config: the run config (its `backbone` section is updated in place).
        path: the checkpoint file.
    """
    payload = read_checkpoint(path)
    described = payload.get("backbone_config")
    if isinstance(described, dict) and "width" in described:  # before building it: the width sets its size
        check_width(described["width"], f"The checkpoint {str(path)!r} (backbone width {described['width']!r})",
                    training=False)
    load_weights(build_backbone(payload, path), payload["model"], path)
    broken = [key for key, tensor in payload["model"].items()
              if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise fail(f"The checkpoint {str(path)!r} holds NaN or infinite weights ({len(broken)} tensors, such as "
                   f"{broken[0]}): its pretraining diverged.",
                   "Pretrain again with a lower pretrain.lr, or pass another --checkpoint.")
    ran = build_dataclass(BackboneConfig, {"name": payload["backbone"], **payload["backbone_config"]}, "backbone")
    differ = [f"backbone.{key}={value!r} (checkpoint: {getattr(ran, key)!r})"
              for key, value in dataclasses.asdict(config.backbone).items() if getattr(ran, key) != value]
    config.backbone = ran
    if not differ:
        return []
    return [f"The config says {', '.join(differ)}; evaluating the checkpoint's backbone, and the results "
            "record that one."]


def check_device(spec: str) -> str:
    """A torch device string that exists on this machine, else `UserError`."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise fail(f"--device {spec!r} is not a torch device.",
                   "Pass --device cpu, cuda or cuda:N (or leave it out to use cuda when available).") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise fail(f"--device {spec} asks for a GPU, but this machine has {count} usable CUDA devices.",
                       "Pass --device cpu, or leave --device out to use a GPU only when there is one.")
    elif device.type in ("mps", "xpu"):  # torch knows them on every build, but can use them only on their hardware
        backend = getattr(torch.backends, "mps", None) if device.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise fail(f"--device {spec} asks for an {device.type.upper()} device, which this torch build cannot "
                       "use on this machine.", "Pass --device cpu (or cuda where there is a GPU).")
    elif device.type != "cpu":
        raise fail(f"--device {spec!r} is not supported here.", "Pass --device cpu or cuda.")
    return spec
