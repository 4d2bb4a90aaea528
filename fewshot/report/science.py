"""Report sections of the science modules: loss-band tables (`fewshot.bands`) and the volume
analysis (`fewshot.volume`), each shown only when a results document has that section."""
from __future__ import annotations

from fewshot.bands import BAND_NOTE, band_cell, band_name
from fewshot.report.figures import DPI
from fewshot.report.html import ReportTable, image_html, table_html
from fewshot.report.sections import ReportData, _setting
from fewshot.volume.report import render_volume, volume_rows, volume_title


def bands(data: ReportData) -> tuple[str, str] | None:
    """Accuracy per (loss band, head): the seed's Tables 2-3 layout."""
    tables = []
    for doc in (doc for doc in data.docs if doc.get("band_table")):
        table = doc["band_table"]
        rows = [(band_name(*row["band"]), *(band_cell(row["cells"].get(column)) for column in table["columns"]))
                for row in table["rows"]]
        tables.append(ReportTable(title=f"{_setting(doc)}: accuracy (%) per loss band", columns=("Band", *table["columns"]),
                                  rows=rows, numeric=tuple(table["columns"]), note=BAND_NOTE))
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
            title="", columns=("Head", "Query accuracy (%)", "Percentile in the fitting region"), rows=heads,
            numeric=("Query accuracy (%)", "Percentile in the fitting region"),
            note="Percentile of the head's query accuracy within the accuracies of all heads that fit the support "
                 "set, weighted by prior volume (what guess & check draws).")))
    parts.append(image_html(render_volume(docs, "png", dpi=DPI), "volume-weighted accuracy of the fitting heads",
                            "Left: accuracy distribution of the heads that fit the support set, by prior volume, "
                            "with each head's mean. Right: log10 volume with correct vs poisoned queries."))
    return "Volume lab", "".join(parts)
