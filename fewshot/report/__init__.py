"""The HTML report: one self-contained page per run (or per set of runs) that a person reads.

Built from `SECTIONS`, a list of builders (see `fewshot.report.sections`); add a section by
appending a builder, or a table by appending to `EXTRA_TABLES`.

Example:
    >>> write_report([read_results(p) for p in paths], "runs/demo/report.html", sources=map(str, paths))
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from episodes.errors import fail
from episodes.io import atomic_write_text
from fewshot.report.leaderboard import merge
from fewshot.report.html import ReportTable, page_html
from fewshot.report.sections import EXTRA_TABLES, SECTIONS, ReportData

__all__ = ["EXTRA_TABLES", "SECTIONS", "ReportData", "ReportTable", "build_report", "write_report"]


def build_report(docs: Sequence[dict], *, sources: Iterable[str] | None = None, title: str = "fewshot report",
                 written: str | None = None, figures: Mapping[str, bytes] | None = None) -> str:
    """The report of some results documents as one HTML string.

    Args:
        docs: results documents (`fewshot.results.document.read_results`); runs on other episodes than the
            rest of their group are shown, marked.
        sources: where each document came from (file names).
        title: the page title.
        written: when the report was written, as shown under the title (default: now, UTC).
        figures: plots already rendered from `docs` (`ReportData.figures`), embedded instead of drawn again.
    """
    if not docs:
        raise fail("There is nothing to report: no results files were given.",
                   "Pass run folders or results-*.json files written by `fewshot benchmark` or `fewshot evaluate`.")
    sources = list(sources) if sources is not None else [f"results #{i + 1}" for i in range(len(docs))]
    if len(set(sources)) < len(sources):  # rows find their document by source, so make them unique
        sources = [f"{source} #{i + 1}" for i, source in enumerate(sources)]
    data = ReportData(docs=list(docs), sources=sources, rows=merge(docs, sources=sources, allow_mismatch=True),
                      figures=dict(figures or {}))
    sections = []
    for builder in SECTIONS:
        built = builder(data)
        if built is not None:
            sections.append((builder.__name__.replace("_", "-"), *built))
    written = written or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    subtitle = f"{len(docs)} results file(s); written {written}"
    return page_html(title, subtitle, sections)


def write_report(docs: Sequence[dict], path: str | os.PathLike, *, sources: Iterable[str] | None = None,
                 title: str = "fewshot report", written: str | None = None,
                 figures: Mapping[str, bytes] | None = None) -> Path:
    """Write `build_report(...)` atomically to `path` (usually `<run dir>/report.html`)."""
    return atomic_write_text(path, build_report(docs, sources=sources, title=title, written=written, figures=figures))
