"""Merge results documents from several runs into one ranked table; render it as Markdown, CSV, JSON.

Rows are grouped by (dataset, n_way, k_shot) and ranked by mean accuracy within a group. Rows
of one group must come from the same episodes (same dataset and episode fingerprints): other
episodes make accuracies incomparable, so they are refused unless explicitly allowed, and then
marked. Oracle heads (they saw the queries at fit time, e.g. `poisoned`) are listed as reference
rows, marked, after the ranked rows of their group, and take no rank.

Example:
    >>> rows = merge([read_results(p) for p in paths], sources=[str(p) for p in paths])
    >>> print(to_markdown(rows))
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Sequence

from episodes.errors import fail
from fewshot.results.bands import band_cell, band_name, band_table, markdown_cell
from fewshot.results.document import csv_text, percent
from fewshot.results.stats import CI_FORMULA, CI_METHOD, RANK_TEST, fitted_accuracy, significance_ranks
from fewshot.report.volume_tables import volume_markdown

LEADERBOARD_SCHEMA = "fewshot.leaderboard/1"
MISMATCH_FLAG = "--allow-mismatched-episodes"
MISMATCH_MARK = "†"
ORACLE_MARK = "(oracle)"


@dataclass(frozen=True)
class LeaderboardRow:
    """One head of one run on one episode setting. Accuracies are fractions in [0, 1].

    Args:
        mismatched: evaluated on other episodes than most rows of its group (only with
            `allow_mismatch`).
        oracle: the head saw the queries at fit time; a reference row with no rank.
    """

    dataset: str
    n_way: int
    k_shot: int
    rank: int | None
    head: str
    run: str
    accuracy: float | None
    ci95: float | None
    n: int
    fit_seconds: float
    episodes_fingerprint: str
    dataset_fingerprint: str
    source: str
    mismatched: bool = False
    oracle: bool = False

    @property
    def group(self) -> tuple[str, int, int]:
        return self.dataset, self.n_way, self.k_shot


def _group_key(doc: dict) -> tuple[str, int, int]:
    return doc["dataset"]["name"], doc["episodes"]["n_way"], doc["episodes"]["k_shot"]


def _fingerprints(doc: dict) -> tuple[str, str]:
    return doc["dataset"]["fingerprint"], doc["episodes"]["fingerprint"]


def run_label(doc: dict) -> str:
    """The run column: the `--label` stored in the results, else config name and dataset."""
    label = (doc.get("run") or {}).get("label")
    if label:
        return str(label)
    config = doc["config"]
    dataset = config.get("dataset")
    if not isinstance(dataset, dict):
        return str(config.get("name", ""))
    where = f":{Path(dataset['path']).name}" if dataset.get("path") else ""
    return f"{config.get('name', '')} · {dataset.get('name', '')}{where}"


def _check_group(group: tuple[str, int, int], members: list[tuple[str, dict]],
                 allow_mismatch: bool) -> tuple[str, str]:
    """The group's reference fingerprints (the most common); refuses mixed ones unless allowed."""
    counts = Counter(_fingerprints(doc) for _, doc in members)
    if len(counts) > 1 and not allow_mismatch:
        dataset, n_way, k_shot = group
        listing = "; ".join(f"{source} (dataset {fp[0]}, episodes {fp[1]})"
                            for source, doc in members for fp in [_fingerprints(doc)])
        raise fail(f"The {dataset} {n_way}-way {k_shot}-shot results were not computed on the same episodes, "
                   f"so their accuracies are not comparable: {listing}.",
                   "Compare runs that share the dataset and episode settings (count, seed, n_query), "
                   f"or pass {MISMATCH_FLAG} to list them anyway, marked {MISMATCH_MARK}.")
    return counts.most_common(1)[0][0]  # ties go to the first seen


def merge(docs: Sequence[dict], *, sources: Sequence[str] | None = None,
          allow_mismatch: bool = False) -> list[LeaderboardRow]:
    """Rank every head of every results document within its (dataset, n_way, k_shot) group.

    Args:
        docs: results documents (as returned by `read_results`).
        sources: where each document came from (file names), for messages and the table.
        allow_mismatch: keep rows evaluated on other episodes than the rest of their group,
            marked `mismatched`, instead of raising `UserError`.

    Returns:
        Rows sorted by group (dataset, ways, shots), then mean accuracy; rank 1 + the number of
        heads significantly better (`fewshot.results.stats.significance_ranks`), so heads whose paired
        difference is not significant share a rank. Oracle rows come last, with rank None.
    """
    sources = list(sources) if sources is not None else [f"results #{i + 1}" for i in range(len(docs))]
    groups: dict[tuple[str, int, int], list[tuple[str, dict]]] = {}
    for source, doc in zip(sources, docs, strict=True):
        groups.setdefault(_group_key(doc), []).append((source, doc))
    rows: list[LeaderboardRow] = []
    for group in sorted(groups):
        reference = _check_group(group, groups[group], allow_mismatch)
        entries = sorted(((source, doc, head) for source, doc in groups[group] for head in doc["heads"]),
                         key=lambda entry: -_mean_or_low(entry[2]["accuracy"]["mean"]))
        ranks = significance_ranks([_mean_or_low(head["accuracy"]["mean"]) for _, _, head in entries],
                                   [_counted(head) for _, _, head in entries],
                                   [_episode_key(doc, head) for _, doc, head in entries],
                                   ranked=[not head.get("oracle") for _, _, head in entries])
        # Rarely a head outranks one with a higher mean (something beats only the latter).
        # Oracle heads outrank nobody and take no rank themselves: listed last, for reference.
        oracles = [bool(head.get("oracle")) for _, _, head in entries]
        order = sorted(zip(ranks, oracles, entries), key=lambda item: (item[1], item[0]))   # (oracle, rank)
        for rank, oracle, (source, doc, head) in order:
            accuracy = head["accuracy"]["mean"]
            rank = None if oracle else rank
            rows.append(LeaderboardRow(
                dataset=group[0], n_way=group[1], k_shot=group[2], rank=rank, head=head["name"],
                run=run_label(doc),
                accuracy=accuracy, ci95=head["accuracy"]["ci95"], n=head["accuracy"]["n"],
                fit_seconds=head["fit_seconds"], episodes_fingerprint=doc["episodes"]["fingerprint"],
                dataset_fingerprint=doc["dataset"]["fingerprint"], source=source,
                mismatched=_fingerprints(doc) != reference, oracle=oracle))
    return rows


def _mean_or_low(mean: float | None) -> float:
    """A head with no mean (it fitted no episode it counts) ranks last."""
    return -1.0 if mean is None else mean


def _counted(head: dict) -> list[float] | None:
    """The per-episode accuracies a head's mean counts: its fitted episodes when it drops failures."""
    values, fitted = head.get("per_episode"), head.get("per_episode_fitted")
    if values is None or fitted is None or head["accuracy"].get("over") != "fitted":
        return values
    return [value for value, flag in zip(values, fitted) if flag]


def _episode_key(doc: dict, head: dict) -> str:
    """Heads with equal keys ran on the same episodes (paired test); a head that drops failures
    counts its own subset of them, so it is compared unpaired."""
    key = doc["episodes"]["fingerprint"]
    return f"{key}/fitted/{head['name']}" if head["accuracy"].get("over") == "fitted" else key


_cell = markdown_cell  # every cell made of text from a results file goes through it


def format_accuracy(accuracy: float | None, ci95: float | None) -> str:
    """`81.23 ± 0.72` (percent); the interval is `n/a` for a single episode; `n/a` with no mean."""
    if accuracy is None:
        return "n/a"
    return f"{100 * accuracy:.2f} ± " + ("n/a" if ci95 is None else f"{100 * ci95:.2f}")


def to_markdown(rows: Sequence[LeaderboardRow], docs: Sequence[dict] = ()) -> str:
    """One Markdown table per (dataset, ways, shots), ranked, accuracy in percent ± CI95; then
    the band tables (paired on episodes, `paired_band_table`) and volume tables (`fewshot.volume`) of
    `docs` that have them.

    Args:
        rows: merged leaderboard rows.
        docs: results documents whose `band_table` and `volume` sections get tables after the ranking.
    """
    parts = [f"Accuracy (%): mean over episodes ± 95% confidence interval ({CI_METHOD}: {CI_FORMULA}). "
             f"Rank: 1 + the number of heads significantly better ({RANK_TEST})."]
    for (dataset, n_way, k_shot), members in groupby(rows, key=lambda row: row.group):
        members = list(members)
        lines = [f"### {_cell(dataset)}: {n_way}-way {k_shot}-shot", "",
                 "| Rank | Head | Run | Accuracy (%) | Episodes | Fit (s) |",
                 "|---:|---|---|---:|---:|---:|"]
        lines += [f"| {'—' if row.rank is None else row.rank} | {_cell(row.head)}"
                  f"{' ' + ORACLE_MARK if row.oracle else ''}{' ' + MISMATCH_MARK if row.mismatched else ''} | "
                  f"{_cell(row.run)} | {format_accuracy(row.accuracy, row.ci95)} | {row.n} | {row.fit_seconds:.2f} |"
                  for row in members]
        if any(row.mismatched for row in members):
            lines += ["", f"{MISMATCH_MARK} evaluated on other episodes than the rest of this table: "
                          "not directly comparable."]
        if any(row.oracle for row in members):
            lines += ["", f"{ORACLE_MARK} saw the query set at fit time: a reference point, not ranked."]
        parts.append("\n".join(lines))
    parts += [paired_band_markdown(doc) for doc in docs if doc.get("band_table")]
    if volume_text := volume_table(docs):
        parts.append(volume_text.rstrip("\n"))
    return "\n\n".join(parts) + "\n"


PAIRED_BAND_NOTE = ("Mean query accuracy ± 95% CI over the row's paired episodes: those where every head of the "
                    "row is fitted in the band (100% support accuracy, decision loss in (low, high]), so every "
                    "column of a row averages the same episodes; (fitted in the band / episodes) per head.")


def paired_band_table(head_docs: Sequence[dict]) -> dict | None:
    """The band table (`fewshot.results.bands.band_table`) paired on episodes, or None without bands.

    Each row gets `paired`, the number of episodes where every head of the row is fitted in its band,
    and each cell `accuracy` over exactly those (its own fitted episodes stay under `own`), so the
    columns of a row (SGD, pattern search, exact guess & check, ...) compare the same episodes.

    Args:
        head_docs: the `heads` of a results document.
    """
    table = band_table(head_docs)
    if table is None:
        return None
    by_name = {doc["name"]: doc for doc in head_docs}
    for row in table["rows"]:
        heads = [by_name[cell["head"]] for cell in row["cells"].values()]
        flags = [doc.get("per_episode_fitted") or [1] * len(doc["per_episode"]) for doc in heads]
        paired = [int(all(flag[i] for flag in flags)) for i in range(min(map(len, flags)))]
        row["paired"] = sum(paired)
        for cell, doc in zip(row["cells"].values(), heads):
            cell["own"] = cell["accuracy"]
            cell["accuracy"] = fitted_accuracy(doc["per_episode"][:len(paired)], paired, drop=True)
    return table


def paired_band_markdown(doc: dict) -> str:
    """The paired band table of one results document: rows = bands, a column per head, the paired count."""
    table = paired_band_table(doc["heads"])
    title = (f"{doc['dataset']['name']}: {doc['episodes']['n_way']}-way {doc['episodes']['k_shot']}-shot "
             f"({doc['config'].get('name', '')})")
    lines = [f"### {_cell(title)}: accuracy (%) per loss band, paired on episodes", "",
             "| Band | Paired episodes | " + " | ".join(map(_cell, table["columns"])) + " |",
             "|---|---:|" + "---:|" * len(table["columns"])]
    for row in table["rows"]:
        cells = [band_cell(row["cells"].get(column)) for column in table["columns"]]
        lines.append(f"| {band_name(*row['band'])} | {row['paired']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", PAIRED_BAND_NOTE])


def volume_table(docs: Sequence[dict]) -> str:
    """The volume analysis tables of results documents that have one ("" if none)."""
    return volume_markdown(docs)


def to_csv(rows: Sequence[LeaderboardRow]) -> str:
    """CSV, one line per row, accuracy and CI95 in percent."""
    header = ["dataset", "n_way", "k_shot", "rank", "head", "run", "accuracy_pct", "ci95_pct", "n",
              "fit_seconds", "episodes_fingerprint", "dataset_fingerprint", "mismatched", "source", "oracle"]
    return csv_text(header, [(row.dataset, row.n_way, row.k_shot, row.rank, row.head, row.run,
                              percent(row.accuracy), percent(row.ci95), row.n, row.fit_seconds,
                              row.episodes_fingerprint, row.dataset_fingerprint, row.mismatched, row.source, row.oracle)
                             for row in rows])


def to_json(rows: Sequence[LeaderboardRow]) -> str:
    """JSON `{"schema", "ci_method", "rows": [...]}`, accuracies as fractions like results files."""
    doc = {"schema": LEADERBOARD_SCHEMA, "ci_method": CI_METHOD, "ci_formula": CI_FORMULA,
           "rows": [dataclasses.asdict(row) for row in rows]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "json": to_json}
