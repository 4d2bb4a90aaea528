"""Plots of the report, rendered to PNG bytes off-screen (own Agg canvas, never pyplot)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


@dataclass(frozen=True)
class Difference:
    """One paired comparison: mean of `a - b` over episodes (fractions), its CI95, its p-value."""

    label: str
    mean: float
    ci95: float | None
    significant: bool


def forest_plot(title: str, differences: Sequence[Difference]) -> bytes:
    """Paired differences (percentage points) with 95% intervals, a line at zero; PNG bytes.

    Args:
        title: the panel's title (dataset and episode setting).
        differences: one row each, drawn top to bottom in the given order.
    """
    height = 0.9 + 0.32 * len(differences)
    figure = Figure(figsize=(7.5, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(differences)))[::-1]
    for y, difference in zip(positions, differences):
        colour = "tab:blue" if difference.significant else "tab:gray"
        error = None if difference.ci95 is None else [[100 * difference.ci95], [100 * difference.ci95]]
        axes.errorbar([100 * difference.mean], [y], xerr=error, fmt="o", color=colour, ecolor=colour, capsize=3)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(positions, [difference.label for difference in differences], fontsize=8)
    axes.set_ylim(-0.7, len(differences) - 0.3)
    axes.set_xlabel("difference in query accuracy a − b (percentage points), mean ± 95% CI", fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.grid(axis="x", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
