"""Merge results documents from several runs into one ranked table; render it as Markdown, CSV, JSON.

Rows are grouped by (dataset, n_way, k_shot) and ranked by mean accuracy within a group. Rows
of one group must come from the same episodes (same dataset and episode fingerprints): other
episodes make accuracies incomparable, so they are refused unless explicitly allowed, and then
marked.

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
from typing import Sequence

from episodes.errors import fail
from fewshot.results import csv_text, percent
from fewshot.stats import CI_FORMULA, CI_METHOD
from fewshot.volume.report import volume_markdown

LEADERBOARD_SCHEMA = "fewshot.leaderboard/1"
MISMATCH_FLAG = "--allow-mismatched-episodes"
MISMATCH_MARK = "†"


@dataclass(frozen=True)
class LeaderboardRow:
    """One head of one run on one episode setting. Accuracies are fractions in [0, 1].

    Args:
        mismatched: evaluated on other episodes than most rows of its group (only with
            `allow_mismatch`).
    """

    dataset: str
    n_way: int
    k_shot: int
    rank: int
    head: str
    run: str
    accuracy: float
    ci95: float | None
    n: int
    fit_seconds: float
    episodes_fingerprint: str
    dataset_fingerprint: str
    source: str
    mismatched: bool = False

    @property
    def group(self) -> tuple[str, int, int]:
        return self.dataset, self.n_way, self.k_shot


def _group_key(doc: dict) -> tuple[str, int, int]:
    return doc["dataset"]["name"], doc["episodes"]["n_way"], doc["episodes"]["k_shot"]


def _fingerprints(doc: dict) -> tuple[str, str]:
    return doc["dataset"]["fingerprint"], doc["episodes"]["fingerprint"]


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
        Rows sorted by group (dataset, ways, shots), then rank (1 = best; equal means share a rank).
    """
    sources = list(sources) if sources is not None else [f"results #{i + 1}" for i in range(len(docs))]
    groups: dict[tuple[str, int, int], list[tuple[str, dict]]] = {}
    for source, doc in zip(sources, docs, strict=True):
        groups.setdefault(_group_key(doc), []).append((source, doc))
    rows: list[LeaderboardRow] = []
    for group in sorted(groups):
        reference = _check_group(group, groups[group], allow_mismatch)
        entries = sorted(((source, doc, head) for source, doc in groups[group] for head in doc["heads"]),
                         key=lambda entry: -entry[2]["accuracy"]["mean"])
        previous: tuple[float, int] | None = None
        for position, (source, doc, head) in enumerate(entries, start=1):
            accuracy = head["accuracy"]["mean"]
            rank = previous[1] if previous and previous[0] == accuracy else position
            previous = (accuracy, rank)
            rows.append(LeaderboardRow(
                dataset=group[0], n_way=group[1], k_shot=group[2], rank=rank, head=head["name"],
                run=str(doc["config"].get("name", "")),
                accuracy=accuracy, ci95=head["accuracy"]["ci95"], n=head["accuracy"]["n"],
                fit_seconds=head["fit_seconds"], episodes_fingerprint=doc["episodes"]["fingerprint"],
                dataset_fingerprint=doc["dataset"]["fingerprint"], source=source,
                mismatched=_fingerprints(doc) != reference))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_accuracy(accuracy: float, ci95: float | None) -> str:
    """`81.23 ± 0.72` (percent); the interval is `n/a` for a single episode."""
    return f"{100 * accuracy:.2f} ± " + ("n/a" if ci95 is None else f"{100 * ci95:.2f}")


def to_markdown(rows: Sequence[LeaderboardRow], volumes: Sequence[dict] = ()) -> str:
    """One Markdown table per (dataset, ways, shots), ranked, accuracy in percent ± CI95.

    Args:
        rows: merged leaderboard rows.
        volumes: results documents whose `volume` sections get a table after the ranking.
    """
    parts = [f"Accuracy (%): mean over episodes ± 95% confidence interval ({CI_METHOD}: {CI_FORMULA})."]
    for (dataset, n_way, k_shot), members in groupby(rows, key=lambda row: row.group):
        members = list(members)
        lines = [f"### {dataset}: {n_way}-way {k_shot}-shot", "",
                 "| Rank | Head | Run | Accuracy (%) | Episodes | Fit (s) |",
                 "|---:|---|---|---:|---:|---:|"]
        lines += [f"| {row.rank} | {_cell(row.head)}{' ' + MISMATCH_MARK if row.mismatched else ''} | "
                  f"{_cell(row.run)} | {format_accuracy(row.accuracy, row.ci95)} | {row.n} | {row.fit_seconds:.2f} |"
                  for row in members]
        if any(row.mismatched for row in members):
            lines += ["", f"{MISMATCH_MARK} evaluated on other episodes than the rest of this table: "
                          "not directly comparable."]
        parts.append("\n".join(lines))
    if volume_text := volume_table(volumes):
        parts.append(volume_text.rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def volume_table(docs: Sequence[dict]) -> str:
    """The volume analysis tables of results documents that have one ("" if none)."""
    return volume_markdown(docs)


def to_csv(rows: Sequence[LeaderboardRow]) -> str:
    """CSV, one line per row, accuracy and CI95 in percent."""
    header = ["dataset", "n_way", "k_shot", "rank", "head", "run", "accuracy_pct", "ci95_pct", "n",
              "fit_seconds", "episodes_fingerprint", "dataset_fingerprint", "mismatched", "source"]
    return csv_text(header, [(row.dataset, row.n_way, row.k_shot, row.rank, row.head, row.run,
                              percent(row.accuracy), percent(row.ci95), row.n, row.fit_seconds,
                              row.episodes_fingerprint, row.dataset_fingerprint, row.mismatched, row.source)
                             for row in rows])


def to_json(rows: Sequence[LeaderboardRow]) -> str:
    """JSON `{"schema", "ci_method", "rows": [...]}`, accuracies as fractions like results files."""
    doc = {"schema": LEADERBOARD_SCHEMA, "ci_method": CI_METHOD, "ci_formula": CI_FORMULA,
           "rows": [dataclasses.asdict(row) for row in rows]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "json": to_json}
