"""The volume analysis as a Markdown table and a plot (`volume.png`).

Example:
    >>> print(volume_markdown(docs))
    >>> plot_volume(docs, run_dir / "volume.png")
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from episodes.io import atomic_write_bytes
from fewshot.results.bands import markdown_cell

if TYPE_CHECKING:       # matplotlib is imported where a plot is drawn: the tables do not need it
    from matplotlib.axes import Axes

__all__ = ["volume_markdown", "plot_volume", "render_volume", "volume_rows", "head_columns", "matched_points",
           "draw_matched"]
HEAD_COLUMNS = ("Head", "Query accuracy (%)", "Percentile in the fitting region")
# Guess & check at each head's own normalized loss (`volume.matched_loss`), beside the unmatched numbers.
MATCHED_COLUMNS = ("Its loss", "G&C accuracy at its loss (%)", "Percentile at its loss", "log10 P(fit, loss <= its)")


def _setting(doc: dict) -> str:
    return f"{doc['dataset']['name']}: {doc['episodes']['n_way']}-way {doc['episodes']['k_shot']}-shot"


def pm(estimate: dict, scale: float = 1.0, digits: int = 2) -> str:
    """`mean ± ci95 (mc ± mc_se)` of an estimate section, or `n/a`."""
    if not estimate or estimate.get("mean") is None:
        return "n/a"
    ci = estimate.get("ci95")
    text = f"{scale * estimate['mean']:.{digits}f} ± " + ("n/a" if ci is None else f"{scale * ci:.{digits}f}")
    return text + (f" (MC ± {scale * estimate['mc_se']:.{digits}f})" if "mc_se" in estimate else "")


def volume_title(doc: dict) -> str:
    """`Volume: <setting> (<episodes> episodes; <prior>)` of a document with a `volume` section."""
    volume, prior = doc["volume"], doc["volume"]["prior"]
    label = f"{prior['distribution']} prior, scale {prior['scale']:g}, bias {prior['bias_scale']:g}"
    if prior.get("approximation"):
        label += " (CLT approximation)"
    if prior.get("model") == "mlp":   # sampled in weight space at this width, not the infinite-width limit
        label += f", finite width {prior['width']} in weight space"
    return f"Volume: {_setting(doc)} ({volume['episodes']} episodes; {label})"


def volume_rows(volume: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The cells of a `volume` section's two tables: (quantity, estimate) and (head, accuracy %, percentile)."""
    quantiles = volume["accuracy_quantiles"]
    estimates = [("log10 P(fit support)", pm(volume["log10_volume"])),
                 ("G&C expected query accuracy (%)", pm(volume["expected_accuracy"], 100)),
                 ("its quantiles " + ", ".join(f"q{100 * q:g}" for q in quantiles["q"]) + " (%)",
                  ", ".join(f"{100 * v:.1f}" for v in quantiles["mean_over_episodes"]))]
    estimates += [(name.replace("_", " "), pm(volume[name]))
                  for name in ("log10_volume_good", "log10_volume_poisoned", "log10_good_over_poisoned")
                  if name in volume]
    if volume.get("stalled_episodes"):
        estimates.append(("episodes with a run stopped at max_levels (its volume is an upper bound)",
                          str(volume["stalled_episodes"])))
    matched = any("matched" in head for head in volume["heads"].values())
    heads = [(name, f"{100 * head['accuracy_mean']:.2f}", pm(head["percentile"], 1, 1))
             + (_matched_cells(head.get("matched")) if matched else ()) for name, head in volume["heads"].items()]
    return estimates, heads


def head_columns(volume: dict) -> tuple[str, ...]:
    """The columns of `volume_rows`' head table: with the matched comparison's when the section has it."""
    return HEAD_COLUMNS + (MATCHED_COLUMNS if any("matched" in head for head in volume["heads"].values()) else ())


def _matched_cells(matched: dict | None) -> tuple[str, ...]:
    """A head's matched cells; `n/a` for a head without it (a network head)."""
    if not matched or not matched.get("episodes"):
        return ("n/a",) * len(MATCHED_COLUMNS)
    log10 = pm(matched["log10_volume"])
    if matched["log10_volume"].get("n_infinite"):
        log10 += f" ({matched['log10_volume']['n_infinite']} empty)"
    loss = {key: value for key, value in matched["loss"].items() if key != "mc_se"}     # the head's own: exact
    return (f"{matched['loss_kind']} {pm(loss, 1, 3)}",
            pm(matched["expected_accuracy"], 100), pm(matched["percentile"], 1, 1), log10)


def volume_markdown(docs: Sequence[dict]) -> str:
    """One table per setting with a `volume` section: volumes, G&C's accuracy, heads' percentiles."""
    parts = []
    for doc in (d for d in docs if "volume" in d):
        estimates, heads = volume_rows(doc["volume"])
        lines = [f"### {markdown_cell(volume_title(doc))}", "",
                 "| Quantity | Mean ± CI95 over episodes (MC error of the mean) |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in estimates]
        columns = head_columns(doc["volume"])
        lines += ["", "| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]
        lines += ["| " + " | ".join([markdown_cell(row[0]), *row[1:]]) + " |" for row in heads]
        parts.append("\n".join(lines))
    if not parts:
        return ""
    return ("Volume analysis (fewshot.volume): fitting-region volumes under the prior, the volume-weighted "
            "(guess & check) query accuracy, and where each head's accuracy falls in that distribution; with "
            "`matched_loss`, the same among the fitting heads whose normalized loss is at most the head's own "
            "(guess & check at matched loss).\n\n"
            + "\n\n".join(parts) + "\n")


def plot_volume(docs: Sequence[dict], path: str | os.PathLike) -> Path:
    """Per setting: the volume-weighted accuracy distribution with each head's mean marked,
    log10 volume good vs poisoned per episode, and with `matched_loss` each head beside guess & check
    at its own loss (`draw_matched`). Written atomically as PNG or SVG."""
    path = Path(path)
    return atomic_write_bytes(path, render_volume(docs, "svg" if path.suffix.lower() == ".svg" else "png"))


def render_volume(docs: Sequence[dict], image_format: str = "png", dpi: int = 110) -> bytes:
    """The volume plot (see `plot_volume`) as image bytes."""
    # matplotlib only here: the tables (`fewshot leaderboard`) do not need it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    docs = [d for d in docs if "volume" in d]
    panels = 3 if any(matched_points(doc) for doc in docs) else 2
    figure = Figure(figsize=(5 * panels, 3.6 * max(1, len(docs))), layout="constrained")
    FigureCanvasAgg(figure)
    for row, doc in enumerate(docs):
        volume = doc["volume"]
        if panels == 3:
            draw_matched(figure.add_subplot(len(docs), panels, panels * row + 3), doc)
        left = figure.add_subplot(len(docs), panels, panels * row + 1)
        dist = volume["accuracy_distribution"]
        width = dist["accuracy"][1] - dist["accuracy"][0] if len(dist["accuracy"]) > 1 else 0.05
        left.bar([100 * a for a in dist["accuracy"]], dist["mass"], width=100 * width, color="tab:gray", alpha=0.6,
                 label="fitting heads (by volume)")
        colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                       "tab:olive", "tab:cyan"] * 4)
        for name, head in volume["heads"].items():
            left.axvline(100 * head["accuracy_mean"], color=next(colors), linestyle="--", label=name)
        left.set_xlabel("query accuracy (%)")
        left.set_ylabel("volume fraction")
        left.set_title(f"{_setting(doc)}: accuracy of fitting heads", fontsize=10)
        left.legend(fontsize=7)
        right = figure.add_subplot(len(docs), panels, panels * row + 2)
        if "log10_volume_good" in volume:
            good = volume["log10_volume_good"]["per_episode"]
            poisoned = volume["log10_volume_poisoned"]["per_episode"]
            pairs = [(g, p) for g, p in zip(good, poisoned) if g is not None and p is not None]
            right.scatter([p for _, p in pairs], [g for g, _ in pairs], s=10)
            if pairs:
                low, high = min(min(pair) for pair in pairs), max(max(pair) for pair in pairs)
                right.plot([low, high], [low, high], color="tab:gray", linewidth=1, label="good = poisoned")
                right.legend(fontsize=7)
            right.set_xlabel("log10 volume, poisoned queries")
            right.set_ylabel("log10 volume, correct queries")
            right.set_title("good vs poisoned, per episode", fontsize=10)
        else:
            right.text(0.5, 0.5, "poisoned volumes not computed", ha="center", va="center")
            right.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=dpi)
    return buffer.getvalue()


def matched_points(doc: dict) -> list[tuple[str, float, dict, int]]:
    """Per head with a matched comparison: (name, its query accuracy, G&C's at its loss, episodes).

    The head's accuracy is its mean over the episodes where the matched accuracy is defined (the
    first `matched_episodes`, empty regions left out), so both points average the same episodes;
    G&C's is the stored `matched.expected_accuracy` (mean, ci95 over episodes, mc_se).
    """
    accuracies = {head["name"]: head.get("per_episode") for head in doc.get("heads", [])}
    points = []
    for name, head in doc["volume"]["heads"].items():
        matched = head.get("matched") or {}
        estimate = matched.get("expected_accuracy") or {}
        if estimate.get("mean") is None:
            continue
        own = accuracies.get(name)
        measured = [i for i, value in enumerate(estimate["per_episode"]) if value is not None]
        values = [own[i] for i in measured if own is not None and i < len(own) and own[i] is not None]
        accuracy = sum(values) / len(values) if values and len(values) == len(measured) else head["accuracy_mean"]
        points.append((name, accuracy, estimate, len(measured)))
    return points


def draw_matched(axes: "Axes", doc: dict) -> None:
    """Each head's query accuracy beside guess & check's at the head's own normalized loss (± CI95 over
    episodes), and guess & check over all fitting heads (the unmatched number, line and band).

    Args:
        axes: a matplotlib Axes.
        doc: a results document whose `volume` heads have `matched` sections.
    """
    points = matched_points(doc)
    volume = doc["volume"]
    overall = volume["expected_accuracy"]
    if overall.get("mean") is not None:
        axes.axvline(100 * overall["mean"], color="tab:gray", linewidth=1, label="G&C, all fitting heads")
        if overall.get("ci95") is not None:
            axes.axvspan(100 * (overall["mean"] - overall["ci95"]), 100 * (overall["mean"] + overall["ci95"]),
                         color="tab:gray", alpha=0.2)
    y = list(range(len(points)))
    axes.scatter([100 * accuracy for _, accuracy, _, _ in points], [v - 0.12 for v in y], color="tab:blue", zorder=3,
                 label="the head")
    axes.errorbar([100 * estimate["mean"] for _, _, estimate, _ in points], [v + 0.12 for v in y],
                  xerr=[100 * (estimate.get("ci95") or 0.0) for _, _, estimate, _ in points], fmt="s",
                  color="tab:orange", capsize=3, zorder=3, label="G&C at the head's loss (± CI95)")
    axes.set_yticks(y, [f"{name} ({count})" for name, _, _, count in points], fontsize=7)
    axes.set_ylim(len(points) - 0.5, -0.5)              # first head on top
    kind = volume["heads"][points[0][0]]["matched"]["loss_kind"] if points else ""
    axes.set_xlabel("query accuracy (%)")
    axes.set_title(f"guess & check at each head's {kind} loss (episodes)", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=7)
