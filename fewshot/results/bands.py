"""Loss bands: one head entry run once per band, and the band tables of results (the seed's
Tables 2-3 layout: rows = bands, columns = heads, accuracy over the heads fitted in the band).

A `heads` entry with `bands: [[low, high], ...]` expands into one entry per band, labelled
`<label>@<low>-<high>` (e.g. `sgd@0.30-0.35`), each with `band: [low, high]`. A band table
cell averages the query accuracy of the episodes whose head is fitted in that band (100%
support accuracy and decision loss in (low, high]); a band no head reaches shows 0 fitted.

Example:
    >>> expand_bands({"sgd": {"init": "uniform", "bands": [[0.3, 0.35], [0.35, 0.4]]}})
    {'sgd@0.30-0.35': {'init': 'uniform', 'head': 'sgd', 'band': [0.3, 0.35]}, 'sgd@0.35-0.40': {...}}
"""
from __future__ import annotations

import html
from typing import Any, Sequence

from episodes.errors import fail
from fewshot.results.stats import fitted_accuracy, fitted_summary

BAND_MARK = "@"


def band_name(low: float, high: float) -> str:
    """`0.30-0.35`."""
    return f"{low:.2f}-{high:.2f}"


def check_band(band: Any, where: str) -> list[float]:
    """[low, high] as floats; anything else, or low >= high, or low < 0, is a `UserError`."""
    numbers = isinstance(band, (list, tuple)) and len(band) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in band)
    if not numbers:
        raise fail(f"{where} is {band!r}, but a loss band is a pair [low, high].",
                   f"Write {where} as [low, high], e.g. [0.30, 0.35].")
    low, high = float(band[0]), float(band[1])
    if not 0 <= low < high:
        raise fail(f"{where} is [{low}, {high}], but a band needs 0 <= low < high.",
                   f"Give {where} a lower edge below its upper edge, e.g. [{min(low, high)}, {max(low, high)}].")
    return [low, high]


def expand_bands(heads: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Heads with each `bands` entry replaced by one entry per band (see the module doc)."""
    expanded: dict[str, dict[str, Any]] = {}
    for label, entry in heads.items():
        entry = dict(entry or {})
        bands = entry.pop("bands", None)
        if bands is None:
            expanded[label] = entry
            continue
        if not isinstance(bands, list) or not bands:
            raise fail(f"heads.{label}.bands is {bands!r}, but must be a non-empty list of [low, high] pairs.",
                       f"Write heads.{label}.bands as e.g. [[0.30, 0.35], [0.35, 0.40]].")
        entry.setdefault("head", label)
        for i, band in enumerate(bands):
            low, high = check_band(band, f"heads.{label}.bands[{i}]")
            expanded[f"{label}{BAND_MARK}{band_name(low, high)}"] = {**entry, "band": [low, high]}
    return expanded


def band_table(head_docs: Sequence[dict]) -> dict | None:
    """The band table of a results document's heads, or None when no head has a band.

    Rows are the bands in increasing order, columns the head labels before `@`; each cell
    holds the accuracy summary over the fitted episodes and the fitted summary, both
    recomputable from the head's `per_episode` and `per_episode_fitted`.

    Args:
        head_docs: the `heads` of a results document.
    """
    banded = [doc for doc in head_docs if isinstance(doc.get("config"), dict) and doc["config"].get("band")]
    if not banded:
        return None
    columns = list(dict.fromkeys(doc["name"].split(BAND_MARK)[0] for doc in banded))
    bands = sorted({tuple(doc["config"]["band"]) for doc in banded})
    rows = []
    for band in bands:
        cells = {}
        for doc in banded:
            if tuple(doc["config"]["band"]) == band:
                fitted = doc.get("per_episode_fitted") or [1] * len(doc["per_episode"])
                cells[doc["name"].split(BAND_MARK)[0]] = {
                    "head": doc["name"], "accuracy": fitted_accuracy(doc["per_episode"], fitted, drop=True),
                    "fitted": fitted_summary(fitted, doc.get("per_episode_restarts"))}
        rows.append({"band": list(band), "cells": cells})
    return {"columns": columns, "rows": rows}


def band_cell(cell: dict | None) -> str:
    """`acc ± ci95 (fitted/n)` in percent; "" for a head without that band."""
    if cell is None:
        return ""
    accuracy, fitted = cell["accuracy"], cell["fitted"]
    value = "n/a" if accuracy["mean"] is None else f"{100 * accuracy['mean']:.2f}" + (
        f" ± {100 * accuracy['ci95']:.2f}" if accuracy["ci95"] is not None else "")
    return f"{value} ({fitted['count']}/{fitted['n']})"


BAND_NOTE = ("Mean query accuracy over the episodes whose head is fitted in the band (100% support "
             "accuracy, decision loss in (low, high]) ± 95% CI; (fitted / episodes).")


def markdown_cell(text: object) -> str:
    """Text from a results file (a label, a head name) made safe for one Markdown table cell: HTML
    escaped (Markdown renders raw HTML), line breaks folded (they end the row), pipes escaped."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def band_table_markdown(table: dict, title: str) -> str:
    """One Markdown band table: rows = bands, columns = heads, `acc ± ci95 (fitted/n)` in percent."""
    lines = [f"### {markdown_cell(title)}: accuracy (%) per loss band", "",
             "| Band | " + " | ".join(map(markdown_cell, table["columns"])) + " |",
             "|---|" + "---:|" * len(table["columns"])]
    for row in table["rows"]:
        cells = [band_cell(row["cells"].get(column)) for column in table["columns"]]
        lines.append(f"| {band_name(*row['band'])} | " + " | ".join(cells) + " |")
    lines += ["", BAND_NOTE]
    return "\n".join(lines)


def band_tables_markdown(docs: Sequence[dict]) -> str:
    """The band tables of results documents that have one, for the leaderboard ("" if none)."""
    parts = [band_table_markdown(doc["band_table"], f"{doc['dataset']['name']}: {doc['episodes']['n_way']}-way "
                                 f"{doc['episodes']['k_shot']}-shot ({doc['config'].get('name', '')})")
             for doc in docs if doc.get("band_table")]
    return "\n\n".join(parts)
