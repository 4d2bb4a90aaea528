"""HTML pieces of the report: escaped tables, inlined images, the page with its CSS.

Everything is inlined (CSS in a style element, plots as base64 PNG), so one file shows the
same offline, in any browser, with no script, and prints cleanly (print CSS).
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Sequence

CSS = """
:root { --ink: #1d232b; --muted: #5d6875; --rule: #d5dbe1; --band: #f4f6f8; --accent: #2b62a8; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 1180px; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; border-bottom: 2px solid var(--rule); padding-bottom: .2rem; }
h3 { font-size: 1.02rem; margin: 1.4rem 0 .4rem; }
p.note, figcaption, caption { color: var(--muted); font-size: .86rem; }
nav { font-size: .9rem; margin: .6rem 0 1rem; }
nav a { color: var(--accent); margin-right: 1rem; text-decoration: none; }
table { border-collapse: collapse; margin: .3rem 0 1rem; font-size: .88rem; }
caption { caption-side: bottom; text-align: left; padding-top: .3rem; }
th, td { padding: .28rem .6rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.oracle td { color: var(--muted); font-style: italic; }
tr.significant td.p { font-weight: 600; }
figure { margin: .6rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; font-size: .88rem; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  section { break-inside: avoid-page; }
  h2 { break-after: avoid; }
  table, figure { break-inside: avoid; }
  .scroll { overflow: visible; }
  th { background: none; }
}
"""


def escape(value: object) -> str:
    """Text as HTML (quotes too)."""
    return html.escape(str(value), quote=True)


@dataclass
class ReportTable:
    """A table of a report section; sections from other modules return these too.

    Args:
        title: heading above the table ("" for none).
        columns: column names.
        rows: one sequence of cells per row; cells are printed with `str` (None as an empty cell).
        numeric: columns aligned right (names from `columns`).
        note: a caption under the table.
        row_classes: optional CSS class per row (`oracle`, `significant`).
    """

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    numeric: Sequence[str] = ()
    note: str = ""
    row_classes: Sequence[str] = field(default_factory=list)


def table_html(table: ReportTable) -> str:
    """A `ReportTable` as an HTML table (wrapped to scroll sideways when wide)."""
    numeric = set(table.numeric)
    head = "".join(f'<th{" class=num" if name in numeric else ""} scope=col>{escape(name)}</th>'
                   for name in table.columns)
    body = []
    for index, row in enumerate(table.rows):
        css = table.row_classes[index] if index < len(table.row_classes) else ""
        cells = "".join(f'<td{" class=num" if name in numeric else ""}>{"" if cell is None else escape(cell)}</td>'
                        for name, cell in zip(table.columns, row))
        body.append(f'<tr{f" class={css}" if css else ""}>{cells}</tr>')
    title = f"<h3>{escape(table.title)}</h3>" if table.title else ""
    caption = f"<caption>{escape(table.note)}</caption>" if table.note else ""
    return (f'{title}<div class=scroll><table>{caption}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def image_html(png: bytes, alt: str, caption: str = "") -> str:
    """A PNG inlined as a data URI, in a figure with an optional caption."""
    data = base64.b64encode(png).decode("ascii")
    figcaption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">{figcaption}</figure>'


def section_html(anchor: str, title: str, body: str) -> str:
    """A titled section that the table of contents links to."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{body}</section>'


def page_html(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document.

    Args:
        title: page title and heading.
        subtitle: a line under the heading.
        sections: (anchor, title, body HTML) per section, in order.
    """
    nav = "".join(f'<a href="#{escape(anchor)}">{escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(section_html(anchor, name, content) for anchor, name, content in sections)
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f"<body><header><h1>{escape(title)}</h1><p class=note>{escape(subtitle)}</p>"
            f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n")
