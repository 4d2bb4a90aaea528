"""Typed loading: dataclasses built from YAML mappings and `key.sub=value` overrides, checked
field by field, with errors that name the key and the fix.

The run config (`fewshot.config`) and every head's `Config` are built with `build_dataclass`.

Example:
    >>> build_dataclass(SGDHead.Config, {"lr": 0.1}, "heads.sgd")
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from episodes.errors import fail


MAX_FLOAT = 1e12  # larger settings overflow float32 arithmetic in the heads (max 3.4e38) or are typos
MAX_YAML_VALUES = 100_000  # values a YAML document may hold once its aliases are expanded


class RefusedYAML(yaml.MarkedYAMLError):
    """YAML that parses but that a config refuses (a duplicate key, an alias bomb)."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with the checks a config needs.

    - Floats in the forms people write (`1e-3`, `1.5E+2`) are floats; YAML 1.1 reads them as strings.
    - A key given twice in one mapping is an error (YAML would keep the last one silently).
    - Aliases (`*name`) may not expand to more than `MAX_YAML_VALUES` values: a few hundred
      bytes of nested aliases (an alias bomb) would otherwise expand to billions when serialized.
    """

    def compose_document(self) -> yaml.Node:  # type: ignore[override]
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(child: yaml.Node, open_nodes: frozenset[int]) -> int:
            if id(child) in open_nodes:
                raise RefusedYAML(None, None, "a recursive alias (a value that contains itself) "
                                                  "cannot be a config value", child.start_mark)
            if id(child) not in sizes:
                inner = open_nodes | {id(child)}
                if isinstance(child, yaml.MappingNode):
                    total = sum(expanded(k, inner) + expanded(v, inner) for k, v in child.value)
                elif isinstance(child, yaml.SequenceNode):
                    total = sum(expanded(item, inner) for item in child.value)
                else:
                    total = 0
                sizes[id(child)] = 1 + total
            return sizes[id(child)]

        count = expanded(node, frozenset()) if node is not None else 0
        if count > MAX_YAML_VALUES:
            raise RefusedYAML(
                None, None, f"its aliases (*name) expand to {count:.3g} values, more than the limit of "
                f"{MAX_YAML_VALUES:,} (an alias bomb?); write the values out or use fewer nested aliases",
                node.start_mark)
        return node

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:  # type: ignore[override]
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise RefusedYAML(
                        "while reading a mapping", node.start_mark,
                        f"the key {key!r} is given twice (the second would silently replace the first)",
                        key_node.start_mark)
                if isinstance(key, typing.Hashable):
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text with `ConfigLoader`; errors are `yaml.YAMLError`."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


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
        if not math.isfinite(value) or abs(value) > MAX_FLOAT:
            raise fail(f"Config key {where!r} is {value!r}, which is not a finite number of at most "
                       f"{MAX_FLOAT:g} in size (larger values overflow the float32 arithmetic of a fit).",
                       f"Give {where} a finite value, such as its default.")
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
        near = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        raise fail(f"Unknown config key {prefix}{unknown[0]}"
                   + (f" (did you mean {prefix}{near[0]}?)." if near else "."),
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
        value = load_yaml(raw) if raw.strip() else None
    except RefusedYAML as error:
        raise fail(f"Cannot read the override {text!r}: {error.problem}.",
                   f"Write {key}=VALUE with each key once and without nested aliases.") from None
    except yaml.YAMLError:  # not YAML at all: the text itself is the value (`name=my run: 2`)
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
        data = load_yaml(path.read_text(encoding="utf-8"))
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
