"""Sweep grids: a YAML file of config overrides whose product becomes the cells of a sweep.

```yaml
config: ../configs/demo.yaml         # optional base config, relative to this file (default: the demo)
overrides: [episodes.count=200]      # optional, applied to every cell
grid:                                # key: list of values; the cells are the product
  heads: [{sgd: {}}, {prototype: {}}]
  episodes.k_shot: [[1], [5]]
  episodes.seed: [0, 1]
submitit: {slurm_partition: gpu, timeout_min: 60, gpus_per_node: 1}   # optional, for --executor slurm
```
A cell is named by a hash of its resolved config, so the same cell has the same folder in
every sweep of that grid, and reordering the grid changes no name.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from episodes.errors import UserError, fail
from fewshot.config import Config, config_to_dict, load_config
from fewshot.typed import read_yaml

GRID_KEYS = ("config", "overrides", "grid", "submitit")


@dataclass(frozen=True)
class Cell:
    """One point of the grid.

    Args:
        key: hash of the resolved config (the cell's folder name).
        overrides: every override that makes the cell, fixed ones first.
        axes: the grid's values of this cell, as `key=value` override strings.
        config: the resolved config.
        values: the grid's (key, value) pairs of this cell (its label).
    """

    key: str
    overrides: tuple[str, ...]
    axes: tuple[str, ...]
    config: Config = field(compare=False)
    values: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @property
    def label(self) -> str:
        """The cell's grid values, compact: `heads={sgd: {lr: 0.1}} episodes.seed=0`."""
        return " ".join(f"{key}={_compact(value)}" for key, value in self.values)


@dataclass(frozen=True)
class Grid:
    """A loaded grid file: its cells and the executor settings."""

    path: Path
    base: Path | None
    cells: tuple[Cell, ...]
    submitit: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Identifies the set of cells (not their order, not the executor settings)."""
        return hashlib.sha256(json.dumps(sorted(cell.key for cell in self.cells)).encode()).hexdigest()[:16]


def _compact(value: Any) -> str:
    """A grid value as short YAML flow text (`{sgd: {lr: 0.1}}`, `[1, 5]`, `0`)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def override_text(key: str, value: Any) -> str:
    """`key=value` with the value as JSON (a YAML subset), so lists and mappings survive parsing."""
    return f"{key}={json.dumps(value)}"


def config_key(config: Config) -> str:
    """Hash of a resolved config."""
    return hashlib.sha256(json.dumps(config_to_dict(config), sort_keys=True).encode()).hexdigest()[:16]


def _fixed_overrides(path: Path, raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [override_text(str(key), value) for key, value in raw.items()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise fail(f"`overrides` in the grid file {str(path)!r} must be a list of key=value strings or a mapping.",
               "Write it as `overrides: [episodes.count=200]` or `overrides: {episodes.count: 200}`.")


def _axes(path: Path, raw: Any) -> dict[str, list[Any]]:
    if not isinstance(raw, dict) or not raw:
        raise fail(f"The grid file {str(path)!r} has an empty grid: there is nothing to sweep.",
                   "Add a `grid:` mapping of config keys to lists of values, e.g. `episodes.seed: [0, 1]`.")
    empty = [str(key) for key, values in raw.items() if not isinstance(values, list) or not values]
    if empty:
        raise fail(f"The grid key {empty[0]!r} in {str(path)!r} has no list of values, so the grid is empty.",
                   f"Give {empty[0]} a non-empty list, e.g. `{empty[0]}: [value1, value2]`.")
    return {str(key): values for key, values in raw.items()}


def load_grid(path: str | Path) -> Grid:
    """Read a grid file and resolve every cell's config; bad keys and values are `UserError`s.

    Args:
        path: the YAML grid file.
    """
    path = Path(path)
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(GRID_KEYS))
    if unknown:
        raise fail(f"The grid file {str(path)!r} has the unknown top-level key {unknown[0]!r}.",
                   f"Valid keys: {', '.join(GRID_KEYS)} (config keys to sweep go under `grid:`).")
    base = (path.parent / raw["config"]) if raw.get("config") else None
    fixed = _fixed_overrides(path, raw.get("overrides"))
    axes = _axes(path, raw.get("grid"))
    submitit = raw.get("submitit") or {}
    if not isinstance(submitit, dict):
        raise fail(f"`submitit` in {str(path)!r} must be a mapping of executor parameters.",
                   "Write it as `submitit: {slurm_partition: gpu, timeout_min: 60}`.")
    try:  # a bad fixed override is blamed on `overrides:`, not on the first grid key
        load_config(base, fixed)
    except UserError as error:
        raise fail(f"An entry of `overrides:` in the grid file {str(path)!r} is not a valid config setting: {error}",
                   "Fix that entry of `overrides:`.") from None
    for key, values in axes.items():  # name the bad grid key, not just the bad config key
        try:
            load_config(base, fixed + [override_text(key, values[0])])
        except UserError as error:
            raise fail(f"The grid key {key!r} in {str(path)!r} is not a valid config setting: {error}",
                       "Fix the key or its values under `grid:`.") from None
    cells: dict[str, Cell] = {}
    for values in itertools.product(*axes.values()):
        varying = [override_text(key, value) for key, value in zip(axes, values)]
        try:
            config = load_config(base, fixed + varying)
        except UserError as error:
            raise fail(f"The grid cell {' '.join(varying)} of {str(path)!r} is not a valid config: {error}",
                       "Fix the values under `grid:`.") from None
        key = config_key(config)
        cells.setdefault(key, Cell(key=key, overrides=tuple(fixed + varying), axes=tuple(varying), config=config,
                                   values=tuple(zip(axes, values))))
    return Grid(path=path, base=base, cells=tuple(cells.values()), submitit=submitit)
