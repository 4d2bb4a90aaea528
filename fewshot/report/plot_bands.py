"""The band panel of the accuracy plot: accuracy (%) per loss band, one line per head."""
from __future__ import annotations

from matplotlib.axes import Axes

from fewshot.report.leaderboard import paired_band_table
from fewshot.results.bands import band_name


def draw_band_panel(axes: Axes, doc: dict) -> None:
    """Bands along x, one line per head column of the band table, mean ± CI95 over each band's paired
    episodes (`fewshot.report.leaderboard.paired_band_table`: those every head of the band fitted).

    Args:
        axes: where to draw.
        doc: a results document with a `band_table` (`fewshot.results.bands.band_table`).
    """
    table = paired_band_table(doc["heads"])
    names = [band_name(*row["band"]) for row in table["rows"]]
    for offset, column in enumerate(table["columns"]):
        points = [(x, row["cells"][column]["accuracy"]) for x, row in enumerate(table["rows"])
                  if column in row["cells"] and row["cells"][column]["accuracy"]["mean"] is not None]
        if not points:
            continue
        shift = 0.08 * (offset - (len(table["columns"]) - 1) / 2)  # keep the error bars apart
        axes.errorbar([x + shift for x, _ in points], [100 * a["mean"] for _, a in points],
                      yerr=[100 * (a["ci95"] or 0.0) for _, a in points], fmt="o-", capsize=3, label=column)
    axes.set_xticks(list(range(len(names))), names, fontsize=8)
    axes.set_xlabel("decision-loss band (low-high]", fontsize=8)
    axes.set_ylabel("query accuracy (%), paired episodes")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7)
    episodes = doc["episodes"]
    axes.set_title(f"{doc['dataset']['name']}: {episodes['n_way']}-way {episodes['k_shot']}-shot, per band", fontsize=10)
