"""The report's built-in sections: one builder each, from the results documents to HTML.

A section builder takes the `ReportData` and returns `(title, body HTML)`, or None when it
has nothing to show (the band and volume sections appear only for results that have them).
Tables that other modules compute come in through `EXTRA_TABLES` without touching these builders.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from fewshot.results.bands import band_cell, band_name
from fewshot.report.leaderboard import MISMATCH_MARK, PAIRED_BAND_NOTE, LeaderboardRow, paired_band_table
from fewshot.report.plot import render_accuracy
from fewshot.report.plot_runtime import has_runtimes, render_runtime
from fewshot.report.figures import DPI, Difference, forest_plot
from fewshot.report.html import ReportTable, escape, image_html, table_html
from fewshot.results.stats import CI_FORMULA, CI_METHOD, RANK_ALPHA, RANK_TEST, paired_tests
from fewshot.report.volume_tables import head_columns, render_volume, volume_rows, volume_title

ORACLE_NOTE = "oracle: sees information a real head does not (e.g. query labels); shown for reference, not ranked"


@dataclass
class ReportData:
    """What every section reads.

    Args:
        docs: results documents.
        sources: where each came from (file names), same order.
        rows: `fewshot.report.leaderboard.merge` rows of all documents (mismatched episodes allowed, marked).
        figures: PNG bytes already rendered from these documents (`accuracy`, `runtime`, `volume`: a run
            folder's plots), embedded as they are instead of drawn a second time.
    """

    docs: Sequence[dict]
    sources: Sequence[str]
    rows: Sequence[LeaderboardRow]
    figures: Mapping[str, bytes] = field(default_factory=dict)

    def head(self, row: LeaderboardRow) -> dict:
        """The results-file entry a leaderboard row came from."""
        doc = self.docs[list(self.sources).index(row.source)]
        return next(head for head in doc["heads"] if head["name"] == row.head)


Section = Callable[[ReportData], "tuple[str, str] | None"]
TablesBuilder = Callable[[ReportData], Sequence[ReportTable]]
# Builders of further tables (bands, volumes, ...): each returns tables for the "More tables" section.
EXTRA_TABLES: list[TablesBuilder] = []


def _setting(doc: dict) -> str:
    episodes = doc["episodes"]
    return f"{doc['dataset']['name']}: {episodes['n_way']}-way {episodes['k_shot']}-shot"


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.3g}" if value >= 1e-4 else "<1e-4")


def hardware_line(hardware: dict) -> str:
    """The machine in one line: the CPU model and instruction-set level torch used (numbers are
    bit-identical only on one machine type), and the GPU if any."""
    cpu = f"{hardware.get('cpu_model') or hardware.get('machine', '?')}"
    levels = [f"{label}{hardware[key]}" for key, label in (("cpu_isa", ""), ("torch_cpu_capability", "torch "),
                                                           ("onednn_max_cpu_isa", "oneDNN pinned to "))
              if hardware.get(key)]
    line = cpu + (f" ({'; '.join(levels)})" if levels else "")
    return line + (f", {hardware['cuda_device']}" if hardware.get("cuda_device") else "")


def overview(data: ReportData) -> tuple[str, str]:
    """Runs, data, backbone and the statistics conventions."""
    items = [("results files", len(data.docs)),
             ("runs", ", ".join(sorted({row.run for row in data.rows}))),
             ("settings", ", ".join(sorted({_setting(doc) for doc in data.docs}))),
             ("backbones", ", ".join(sorted({f"{doc['backbone'].get('name', '?')} "
                                             f"{str(doc['backbone'].get('checkpoint_sha256', ''))[:12]}"
                                             for doc in data.docs}))),
             ("suite", ", ".join(sorted({f"fewshot {doc['suite'].get('version', '?')} "
                                         f"{str(doc['suite'].get('git_commit') or '')[:10]}" for doc in data.docs}))),
             ("hardware", ", ".join(sorted({hardware_line(doc["hardware"]) for doc in data.docs}))),
             ("accuracy", f"mean over episodes ± 95% confidence interval ({CI_METHOD}: {CI_FORMULA})"),
             ("rank", f"1 + the number of heads significantly better: {RANK_TEST}")]
    body = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in items)
    return "Overview", f"<dl class=meta>{body}</dl>"


def leaderboard(data: ReportData) -> tuple[str, str]:
    """One ranked table per (dataset, ways, shots), with the time per 1,000 episodes."""
    parts = []
    for group, members in itertools.groupby(data.rows, key=lambda row: row.group):
        members = list(members)
        cells, classes = [], []
        for row in members:
            oracle = bool(data.head(row).get("oracle"))
            name = row.head + (f" {MISMATCH_MARK}" if row.mismatched else "") + (" (oracle)" if oracle else "")
            per_thousand = 1000 * row.fit_seconds / row.n if row.n else None
            cells.append(("—" if oracle else row.rank, name, row.run, _pct(row.accuracy), _pct(row.ci95), row.n,
                          f"{row.fit_seconds:.2f}", "n/a" if per_thousand is None else f"{per_thousand:.2f}"))
            classes.append("oracle" if oracle else "")
        notes = ["Rank: 1 + the number of heads significantly better (" + RANK_TEST + "); heads whose difference "
                 "is not significant share a rank."]
        if any(row.mismatched for row in members):
            notes.append(f"{MISMATCH_MARK} evaluated on other episodes than the rest of this table (Welch's test).")
        if "oracle" in classes:
            notes.append(ORACLE_NOTE + ".")
        parts.append(table_html(ReportTable(
            title=f"{group[0]}: {group[1]}-way {group[2]}-shot",
            columns=("Rank", "Head", "Run", "Accuracy (%)", "± CI95", "Episodes", "Fit (s)", "s / 1,000 episodes"),
            numeric=("Rank", "Accuracy (%)", "± CI95", "Episodes", "Fit (s)", "s / 1,000 episodes"),
            rows=cells, row_classes=classes, note=" ".join(notes))))
    return "Leaderboard", "".join(parts)


def accuracy_plot(data: ReportData) -> tuple[str, str]:
    """The accuracy ± CI95 plot of every head (the run's accuracy.png)."""
    png = data.figures.get("accuracy") or render_accuracy(data.docs, "png", sources=data.sources, dpi=DPI)
    return "Accuracy", image_html(png, "query accuracy of every head with 95% confidence intervals",
                                  "Mean query accuracy over episodes ± 95% confidence interval (Student t).")


def runtime_profiles(data: ReportData) -> tuple[str, str] | None:
    """The runtime ECDF and data profiles of the searching heads (the run's runtime.png)."""
    if not has_runtimes(data.docs):
        return None
    png = data.figures.get("runtime") or render_runtime(data.docs, dpi=DPI)
    return "Runtime profiles", image_html(
        png, "runtime ECDF and data profile of every searching head",
        "Left: fraction of (episode, loss target) pairs reached within t loss evaluations (COCO runtime ECDF; "
        "pairs never reached stay in the denominator). Right: the same over simplex gradients, t / (P + 1) "
        "(Moré-Wild data profile, with the fixed loss targets as the convergence test).")


def _comparisons(doc: dict) -> tuple[list[Difference], list[tuple], list[str]]:
    """The doc's paired comparisons: forest-plot rows, table cells, row classes."""
    per_episode = {head["name"]: head.get("per_episode") for head in doc["heads"]}
    differences, cells, classes = [], [], []
    for comparison in doc["comparisons"]:
        a, b = per_episode.get(comparison["a"]), per_episode.get(comparison["b"])
        tests = paired_tests(a, b) if a and b and len(a) == len(b) else {"t_test": None, "wilcoxon": None}
        significant = tests["t_test"] is not None and tests["t_test"] < RANK_ALPHA
        label = f"{comparison['a']} − {comparison['b']}"
        if comparison["mean_diff"] is not None:  # None: no episode both heads count (dropped failures)
            differences.append(Difference(label, comparison["mean_diff"], comparison.get("ci95"), significant))
        cells.append((comparison["a"], comparison["b"], _pct(comparison["mean_diff"]), _pct(comparison.get("ci95")),
                      _p(tests["t_test"]), _p(tests["wilcoxon"]),
                      f"{comparison['wins']} / {comparison['ties']} / {comparison['losses']}"))
        classes.append("significant" if significant else "")
    return differences, cells, classes


def comparisons(data: ReportData) -> tuple[str, str] | None:
    """Paired differences per results document: a forest plot and the tests behind it."""
    parts = []
    several = len({row.run for row in data.rows}) > 1
    for doc, source in zip(data.docs, data.sources):
        if not doc.get("comparisons"):
            continue
        differences, cells, classes = _comparisons(doc)
        title = _setting(doc) + (f" — {next(r.run for r in data.rows if r.source == source)}" if several else "")
        parts.append(f"<h3>{escape(title)}</h3>")
        parts.append(image_html(forest_plot(title, differences), f"paired differences, {title}",
                                "Blue: significant at p < 0.05 (paired t-test); grey: not significant."))
        parts.append(table_html(ReportTable(
            title="", columns=("a", "b", "a − b (pp)", "± CI95", "p (paired t)", "p (Wilcoxon)", "wins / ties / losses"),
            numeric=("a − b (pp)", "± CI95", "p (paired t)", "p (Wilcoxon)"), rows=cells, row_classes=classes,
            note="Same episodes for both heads. p: two-sided, scipy.stats.ttest_rel and scipy.stats.wilcoxon "
                 "(zero differences dropped); n/a where every difference is zero.")))
    return ("Paired comparisons", "".join(parts)) if parts else None


def _diagnostic_cell(value: object) -> str:
    if not isinstance(value, dict) or value.get("mean") is None:
        return "n/a"
    mean, ci95 = value["mean"], value.get("ci95")
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4g}" + ("" if ci95 is None else f" ± {ci95:.2g}")


def diagnostics(data: ReportData) -> tuple[str, str] | None:
    """Mean ± CI95 of each diagnostic of the fitted heads (norm, margin, sharpness, ...); one a head's
    model cannot have (its `absent_diagnostics`) shows as "—" with a footnote giving the reason."""
    parts = []
    several = len({row.run for row in data.rows}) > 1
    for doc, source in zip(data.docs, data.sources):
        absent = [head.get("absent_diagnostics") if isinstance(head.get("absent_diagnostics"), dict) else {}
                  for head in doc["heads"]]
        keys = sorted({key for head, gone in zip(doc["heads"], absent) for key in [*(head.get("diagnostics") or {}), *gone]})
        if not keys:
            continue
        title = _setting(doc) + (f" — {next(r.run for r in data.rows if r.source == source)}" if several else "")
        reasons = list(dict.fromkeys(reason for gone in absent for reason in gone.values()))   # footnotes, in order
        marks = {reason: f"({chr(ord('a') + i)})" if i < 26 else f"({i + 1})" for i, reason in enumerate(reasons)}
        rows = [(head["name"], *(f"— {marks[gone[key]]}" if key in gone
                                 else _diagnostic_cell((head.get("diagnostics") or {}).get(key)) for key in keys))
                for head, gone in zip(doc["heads"], absent)]
        notes = "".join(f" {mark} Not defined for this head: {reason}." for reason, mark in marks.items())
        parts.append(table_html(ReportTable(title=title, columns=("Head", *keys), rows=rows, numeric=keys,
                                            note="Mean over episodes ± 95% CI (episodes where the value is finite)."
                                                 + notes)))
    return ("Diagnostics", "".join(parts)) if parts else None


def extra_tables(data: ReportData) -> tuple[str, str] | None:
    """Tables contributed by `EXTRA_TABLES` builders; absent when none has anything."""
    tables = [table for builder in EXTRA_TABLES for table in builder(data)]
    return ("More tables", "".join(table_html(table) for table in tables)) if tables else None


def bands(data: ReportData) -> tuple[str, str] | None:
    """Accuracy per (loss band, head): the seed's Tables 2-3 layout, paired on episodes."""
    tables = []
    for doc in (doc for doc in data.docs if doc.get("band_table")):
        table = paired_band_table(doc["heads"])
        rows = [(band_name(*row["band"]), str(row["paired"]),
                 *(band_cell(row["cells"].get(column)) for column in table["columns"])) for row in table["rows"]]
        tables.append(ReportTable(title=f"{_setting(doc)}: accuracy (%) per loss band, paired on episodes",
                                  columns=("Band", "Paired episodes", *table["columns"]), rows=rows,
                                  numeric=("Paired episodes", *table["columns"]), note=PAIRED_BAND_NOTE))
    return ("Loss bands", "".join(map(table_html, tables))) if tables else None


def volumes(data: ReportData) -> tuple[str, str] | None:
    """Fitting-region volumes, guess & check's expected accuracy, each head's percentile; the plot."""
    docs = [doc for doc in data.docs if "volume" in doc]
    if not docs:
        return None
    parts = []
    for doc in docs:
        estimates, heads = volume_rows(doc["volume"])
        parts.append(table_html(ReportTable(title=volume_title(doc), columns=("Quantity", "Mean ± CI95 (MC error)"),
                                            rows=estimates, numeric=("Mean ± CI95 (MC error)",))))
        parts.append(table_html(ReportTable(
            title="", columns=head_columns(doc["volume"]), rows=heads, numeric=head_columns(doc["volume"])[1:],
            note="Percentile of the head's query accuracy within the accuracies of all heads that fit the support "
                 "set, weighted by prior volume (what guess & check draws); 'at its loss': among those whose "
                 "normalized support loss is at most the head's own, per episode (guess & check at matched loss).")))
    matched = any("matched" in head for doc in docs for head in doc["volume"]["heads"].values())
    caption = ("Left: accuracy distribution of the heads that fit the support set, by prior volume, with each "
               "head's mean. Middle: log10 volume with correct vs poisoned queries. Right: each head's accuracy "
               "beside guess & check at its own normalized loss (± CI95) on the same episodes, and guess & check "
               "over all fitting heads (grey)." if matched else
               "Left: accuracy distribution of the heads that fit the support set, by prior volume, with each "
               "head's mean. Right: log10 volume with correct vs poisoned queries.")
    png = data.figures.get("volume") or render_volume(docs, "png", dpi=DPI)
    parts.append(image_html(png, "volume-weighted accuracy of the fitting heads", caption))
    return "Volume lab", "".join(parts)


SECTIONS: list[Section] = [overview, leaderboard, accuracy_plot, comparisons, diagnostics, runtime_profiles, bands,
                           volumes, extra_tables]
