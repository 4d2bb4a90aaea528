"""A sweep's folder: its manifest, one folder per cell, and the markers of finished cells.

```
SWEEP_DIR/sweep.json              schema, grid fingerprint, the cells and their overrides
SWEEP_DIR/cells/<key>/config.yaml the cell's resolved config
SWEEP_DIR/cells/<key>/run/        the cell's `fewshot benchmark` output (results, report, ...)
SWEEP_DIR/cells/<key>/DONE        written atomically after the cell succeeded
```
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

import yaml

from episodes.errors import fail
from episodes.io import atomic_write_text
from fewshot.config import config_to_dict
from fewshot.sweep.grid import Grid

SWEEP_SCHEMA = "fewshot.sweep/1"
MANIFEST = "sweep.json"
DONE = "DONE"


def cell_dir(sweep_dir: Path, key: str) -> Path:
    return Path(sweep_dir) / "cells" / key


def is_done(sweep_dir: Path, key: str) -> bool:
    return (cell_dir(sweep_dir, key) / DONE).is_file()


def read_manifest(sweep_dir: Path) -> dict | None:
    """The sweep's manifest, None when the folder holds none; a damaged one is a `UserError`."""
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(f"The sweep manifest {str(path)!r} cannot be read ({error}).",
                   "Start the sweep in a new --output-dir (or delete the damaged sweep.json).") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SWEEP_SCHEMA:
        raise fail(f"{str(path)!r} is not a {SWEEP_SCHEMA} manifest.", "Start the sweep in a new --output-dir.")
    return manifest


def prepare(sweep_dir: Path, grid: Grid) -> None:
    """Write the manifest and the cells' configs, or check that the folder is this grid's sweep.

    A folder of another grid (other cells) is refused, so resuming never mixes two sweeps.
    """
    manifest = read_manifest(sweep_dir)
    if manifest is not None and manifest.get("grid_fingerprint") != grid.fingerprint:
        raise fail(f"The folder {str(sweep_dir)!r} holds a sweep of another grid ({manifest.get('grid_file')!r}, "
                   f"{len(manifest.get('cells', []))} cells), not of {str(grid.path)!r}.",
                   "Pass a new --output-dir for this grid, or the grid file that made that sweep to resume it.")
    if manifest is None:
        atomic_write_text(Path(sweep_dir) / MANIFEST, json.dumps({
            "schema": SWEEP_SCHEMA, "grid_file": str(grid.path), "grid_fingerprint": grid.fingerprint,
            "cells": [{"key": cell.key, "overrides": list(cell.overrides)} for cell in grid.cells]},
            indent=2) + "\n")
    for cell in grid.cells:
        path = cell_dir(sweep_dir, cell.key) / "config.yaml"
        if not path.is_file():
            atomic_write_text(path, yaml.safe_dump(config_to_dict(cell.config), sort_keys=False))


def clear_unfinished(sweep_dir: Path, key: str) -> Path:
    """The cell's run folder, emptied of what an interrupted attempt left."""
    run = cell_dir(sweep_dir, key) / "run"
    if run.exists():
        shutil.rmtree(run)
    return run


def mark_done(sweep_dir: Path, key: str, overrides: Iterable[str]) -> None:
    """Mark a cell finished (atomically: the marker is complete or absent)."""
    atomic_write_text(cell_dir(sweep_dir, key) / DONE, json.dumps(
        {"key": key, "overrides": list(overrides), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime()),
         "pid": os.getpid()}, indent=2) + "\n")


def finished_results(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Expand sweep folders to the results files of their finished cells; other paths pass through.

    An unfinished cell may hold part of its results (one shot setting of two): it is left out.
    """
    expanded: list[str] = []
    for path in map(Path, paths):
        manifest = read_manifest(path) if path.is_dir() else None
        if manifest is None:
            expanded.append(str(path))
            continue
        done = [cell["key"] for cell in manifest["cells"] if is_done(path, cell["key"])]
        if not done:
            raise fail(f"The sweep {str(path)!r} has no finished cells yet.",
                       "Run (or resume) it with `fewshot sweep GRID.yaml --output-dir` that folder first.")
        expanded += [str(cell_dir(path, key) / "run") for key in done]
    return expanded
