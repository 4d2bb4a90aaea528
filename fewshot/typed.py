"""Typed loading: dataclasses built from YAML mappings and `key.sub=value` overrides, checked
field by field, with errors that name the key and the fix.

The run config (`fewshot.config`) and every head's `Config` are built with `build_dataclass`.

Example:
    >>> build_dataclass(SGDHead.Config, {"lr": 0.1}, "heads.sgd")
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from episodes.errors import fail


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def coerce(kind: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `kind`; return it (ints widen to floats)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return build_dataclass(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(option, value, where)
            except Exception:
                continue
    elif origin is Literal:
        if value in args:
            return value
        raise fail(f"Config key {where!r} is {value!r}, which is not one of {list(args)}.",
                   f"Set it to one of {list(args)}.")
    elif origin is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(args[0], item, f"{where}[{i}]") for i, item in enumerate(items)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
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
            kwargs[name] = coerce(hints[name], value, sub)
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


def set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
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
