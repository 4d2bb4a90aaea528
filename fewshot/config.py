"""The run config: typed dataclasses filled from YAML and `key.sub=value` overrides.

Example:
    >>> config = load_config("configs/cifar_fs.yaml", ["episodes.count=100", "heads.sgd.lr=0.1"])
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from backbones.config import BackboneConfig, PretrainConfig
from episodes.config import DatasetConfig, EpisodesConfig
from episodes.errors import fail
from fewshot.tune_settings import TuneConfig
from fewshot.volume.config import VolumeConfig

# The demo's heads; pattern search runs both with the first-fit stop and on to a support loss of 0.1.
DEFAULT_HEADS: dict[str, dict[str, Any]] = {
    "sgd": {}, "pattern_search": {}, "pattern_search_loss0.1": {"head": "pattern_search", "loss_threshold": 0.1},
    "logistic_regression": {}, "prototype": {}, "swa": {}, "max_margin": {}, "poisoned": {},
    "guess_check_exact": {"head": "guess_check", "method": "exact", "distribution": "gaussian",
                          "exact": {"chains": 16, "repeats": 2, "sweeps": 1, "max_levels": 1000}}}
# The demo's volume analysis: first 100 episodes per setting, good/poisoned volumes on the first
# 8 of them, sized to fit its time budget (see the README's "The volume lab"). Blocks of 10 points:
# whole-column moves fail on the 100-point poisoned polytopes (runs stall or die).
DEMO_VOLUME = {"enabled": True, "episodes": 100, "chains": 48, "repeats": 2, "sweeps": 1, "level_fraction": 0.6,
               "max_levels": 1000, "block_size": 10, "poisoned": True, "poisoned_episodes": 8}


@dataclass
class FeaturesConfig:
    """Args:
        normalize: `l2` scales every feature vector to unit length; `none` leaves it.
        center: subtract the episode's support mean before normalizing.
        batch_size: images per forward pass when extracting features (0: 32 on CPU, 512 on CUDA).
    """

    normalize: Literal["l2", "none"] = "l2"
    center: bool = False
    batch_size: int = 0


@dataclass
class Config:
    """A whole run. `heads` maps a registered head name to its config overrides."""

    name: str = "demo"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=0.5))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(epochs=15, flip=False, crop_padding=0))
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    heads: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_HEADS))
    tune: TuneConfig = field(default_factory=TuneConfig)
    volume: VolumeConfig = field(default_factory=lambda: VolumeConfig(**DEMO_VOLUME))


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _coerce(kind: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `kind`; return it (ints widen to floats)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return build_dataclass(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except Exception:
                continue
    elif origin is Literal:
        if value in args:
            return value
        raise fail(f"Config key {where!r} is {value!r}, which is not one of {list(args)}.",
                   f"Set it to one of {list(args)}.")
    elif origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(args[0], item, f"{where}[{i}]") for i, item in enumerate(items)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    elif kind is Any:
        return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise fail(f"Config key {where!r} must be of type {_type_name(kind)}, but got {value!r} "
               f"({type(value).__name__}).", f"Give {where} a value of type {_type_name(kind)}.")


def build_dataclass(cls: type, values: Any, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types.

    Args:
        cls: the dataclass.
        values: a mapping of field names to values, or an instance of `cls`.
        where: dotted path used in error messages.
    """
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise fail(f"Config key {where!r} must be a mapping of settings, but got {values!r}.",
                   f"Write {where} as `key: value` lines.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((key for key in values if key not in fields), key=str)
    if unknown:
        prefix = "" if where == "config" else f"{where}."
        raise fail(f"Unknown config key {prefix}{unknown[0]}.",
                   f"Valid keys{' under ' + where if prefix else ''}: {', '.join(fields) or '(none)'}.")
    default = cls()
    kwargs = {}
    for name in fields:
        sub = f"{where}.{name}" if where != "config" else name
        if name in values:
            current = getattr(default, name)
            value = values[name]
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = {**dataclasses.asdict(current), **value}  # keep non-default defaults
            kwargs[name] = _coerce(hints[name], value, sub)
    return dataclasses.replace(default, **kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a", "b", "c"], value parsed as a YAML scalar)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise fail(f"Cannot read the override {text!r}.", "Write overrides as key.sub=value, "
                   "for example episodes.count=100.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    for depth, key in enumerate(keys[:-1]):
        child = tree.get(key)
        if child is not None and not isinstance(child, dict):  # `episodes.count.x=1`: a value has no keys
            where = ".".join(keys[:depth + 1])
            raise fail(f"Cannot apply the override {'.'.join(keys)}=...: {where} is a single value "
                       f"({child!r}), not a section with keys.", f"Write it as {where}=VALUE.")
        if child is None:
            child = {}
            tree[key] = child
        tree = child
    tree[keys[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a `UserError`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise fail(f"Config file {str(path)!r} does not exist.",
                   "Check the path given to --config (the bundled ones are in configs/).") from None
    except yaml.YAMLError as error:
        raise fail(f"Config file {str(path)!r} is not valid YAML ({error}).",
                   "Fix the syntax at the line it names.") from None
    except UnicodeDecodeError as error:
        raise fail(f"Config file {str(path)!r} is not UTF-8 text (byte {error.start} cannot be decoded).",
                   "Pass a YAML file saved as UTF-8 to --config.") from None
    except OSError as error:  # a folder, a device, no permission
        raise fail(f"Config file {str(path)!r} cannot be read ({error.strerror or error}).",
                   "Pass --config a readable YAML file (the bundled ones are in configs/).") from None
    if not isinstance(data, dict):
        raise fail(f"Config file {str(path)!r} does not hold a mapping.",
                   "Write the config as `key: value` sections like configs/demo.yaml.")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The config from a YAML file (or the built-in demo) with overrides applied, validated.

    Args:
        path: a YAML file; None starts from the demo defaults.
        overrides: `key.sub=value` strings, applied in order.
    """
    tree = read_yaml(path) if path else config_to_dict(Config())
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(tree, keys, value)
    config = build_dataclass(Config, tree)
    if "heads" in tree:  # a config's heads replace the demo's list instead of adding to it
        config.heads = _coerce(dict[str, dict[str, Any]], tree["heads"] or {}, "heads")
    from fewshot.bands import expand_bands
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
    from fewshot.heads import head_class
    for label, entry in config.heads.items():
        name, settings = head_spec(label, entry)
        build_dataclass(head_class(name).Config, settings, f"heads.{label}")


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (for results files and checkpoints)."""
    return dataclasses.asdict(config)
