"""Accuracy ± CI95 per head, one panel per (dataset, ways, shots), as PNG or SVG.

Draws on a `matplotlib.figure.Figure` with its own Agg canvas, so it never touches pyplot or
the user's global backend, and works on machines without a display.
"""
from __future__ import annotations

import io
import math
import os
from itertools import groupby
from pathlib import Path
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from episodes.errors import fail
from episodes.io import atomic_write_bytes
from fewshot.report.leaderboard import MISMATCH_MARK, ORACLE_MARK, LeaderboardRow, merge
from fewshot.report.plot_bands import draw_band_panel

FORMATS = {".png": "png", ".svg": "svg"}
MAX_COLUMNS = 3


def _label(row: LeaderboardRow, several_runs: bool) -> str:
    label = f"{row.head}\n({row.run})" if several_runs else row.head
    label = f"{label} {ORACLE_MARK}" if row.oracle else label
    return f"{label} {MISMATCH_MARK}" if row.mismatched else label


def _draw_panel(axes: Axes, rows: list[LeaderboardRow]) -> None:
    """Heads in rank order along x, accuracy (%) with CI95 error bars."""
    several_runs = len({row.source for row in rows}) > 1
    positions = range(len(rows))
    means = [100 * row.accuracy for row in rows]
    errors = [0.0 if row.ci95 is None else 100 * row.ci95 for row in rows]
    axes.errorbar(positions, means, yerr=errors, fmt="o", capsize=4, color="tab:blue", ecolor="tab:gray")
    for x, mean, error in zip(positions, means, errors):
        axes.annotate(f"{mean:.1f}", (x, mean + error), textcoords="offset points", xytext=(0, 4),
                      ha="center", fontsize=8)
    axes.set_xticks(list(positions), [_label(row, several_runs) for row in rows], fontsize=8)
    if several_runs:  # run names are long: slant them so they do not overlap
        axes.tick_params(axis="x", labelrotation=30)
        for tick in axes.get_xticklabels():
            tick.set_horizontalalignment("right")
    axes.set_xlim(-0.6, len(rows) - 0.4)
    axes.margins(y=0.15)
    axes.grid(axis="y", alpha=0.3)
    first = rows[0]
    episodes = max(row.n for row in rows)  # heads that drop failures count fewer
    axes.set_title(f"{first.dataset}: {first.n_way}-way {first.k_shot}-shot ({episodes} episodes)", fontsize=10)
    axes.set_ylabel("query accuracy (%)")


def plot_accuracy(docs: Sequence[dict], path: str | os.PathLike, *, sources: Sequence[str] | None = None) -> Path:
    """Plot mean accuracy ± CI95 of every head; write it atomically.

    Args:
        docs: results documents; runs on other episodes than their group are drawn, marked †.
        path: destination ending in .png or .svg.
        sources: file names of `docs`, passed on to `merge`.
    """
    path = Path(path)
    image_format = FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise fail(f"Cannot write a plot to {str(path)!r}: the file type {path.suffix or '(none)'!r} is not supported.",
                   f"Name the file with one of {', '.join(FORMATS)}.")
    return atomic_write_bytes(path, render_accuracy(docs, image_format, sources=sources))


def render_accuracy(docs: Sequence[dict], image_format: str = "png", *, sources: Sequence[str] | None = None,
                    dpi: int = 120) -> bytes:
    """The accuracy plot as image bytes (`png` or `svg`); see `plot_accuracy`."""
    rows = [row for row in merge(docs, sources=sources, allow_mismatch=True) if row.accuracy is not None]
    if not rows:
        raise fail("There is nothing to plot: the results hold no heads.", "Pass results files with at least one head.")
    panels: list = [list(members) for _, members in groupby(rows, key=lambda row: row.group)]
    panels += [doc for doc in docs if doc.get("band_table")]  # one band panel per banded results file
    columns = min(MAX_COLUMNS, len(panels))
    lines = math.ceil(len(panels) / columns)
    widest = max(len(panel) if isinstance(panel, list) else len(panel["band_table"]["rows"]) for panel in panels)
    figure = Figure(figsize=(columns * max(3.5, 1.1 * widest + 1.5), 3.6 * lines), layout="constrained")
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(lines, columns, index + 1)
        _draw_panel(axes, panel) if isinstance(panel, list) else draw_band_panel(axes, panel)
    note = "mean over episodes ± 95% confidence interval (Student t)"
    if any(row.mismatched for row in rows):
        note += f"; {MISMATCH_MARK} evaluated on other episodes than the rest of its panel"
    figure.supxlabel(note, fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=dpi)
    return buffer.getvalue()
