"""The HTML report: self-contained, every section present, ranks and timings right; `fewshot report`."""
import base64
import json
import re
from html.parser import HTMLParser

import pytest
import torch

from fewshot.cli import main
from fewshot.report import EXTRA_TABLES, ReportTable, build_report
from fewshot.results.document import HeadResult, build_results, write_results

HARDWARE = {"machine": "x86_64", "cuda_device": None}


def make_doc(k_shot: int = 1, shifts: dict | None = None, n: int = 50, run: str = "demo") -> dict:
    generator = torch.Generator().manual_seed(k_shot)
    base = torch.rand(n, generator=generator, dtype=torch.float64)
    shifts = shifts or {"sgd": 0.0, "prototype": 0.002, "pattern_search": -0.2}
    heads = [HeadResult(name, {}, (base + shift + 0.05 * torch.randn(n, generator=generator,
                                                                       dtype=torch.float64)).clamp(0, 1),
                        fit_seconds=0.5 * (i + 1), diagnostics={"weight_norm": torch.rand(n, generator=generator)})
             for i, (name, shift) in enumerate(shifts.items())]
    return build_results(config={"name": run, "dataset": {"name": "glyphs", "path": None}},
                         dataset={"name": "glyphs", "split": "novel", "fingerprint": "data"},
                         backbone={"name": "resnet12", "checkpoint_sha256": "ab" * 32},
                         episodes={"n_way": 5, "k_shot": k_shot, "n_query": 15, "count": n, "seed": 0,
                                   "fingerprint": f"ep{k_shot}"},
                         heads=heads, hardware=HARDWARE)


class Page(HTMLParser):
    """Collects tags, attributes and text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_report_is_self_contained():
    page = build_report([make_doc(1), make_doc(5)])
    parsed = parse(page)
    names = {tag for tag, _ in parsed.tags}
    assert "script" not in names and "link" not in names and "iframe" not in names
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)  # nothing fetched at view time
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 3  # the accuracy plot and one forest plot per setting
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert "@media print" in page


def test_report_has_every_section_and_the_time_per_thousand_episodes():
    doc = make_doc(1, n=50)
    text = " ".join(parse(build_report([doc])).text)
    for section in ("Leaderboard", "Accuracy", "Paired comparisons", "Diagnostics", "weight_norm"):
        assert section in text
    assert "s / 1,000 episodes" in text and "paired t-test" in text
    # fit 1.5 s over 50 episodes is 30 s per 1,000.
    assert "30.00" in text


def test_report_ranks_insignificant_differences_together():
    page = build_report([make_doc(1)])
    rows = re.findall(r"<tr(?: class=\w+)?><td class=num>(\S+?)</td><td>(\w+)</td>", page)
    ranks = dict((head, rank) for rank, head in rows[:3])
    assert ranks == {"sgd": "1", "prototype": "1", "pattern_search": "3"}


def test_oracle_heads_are_marked_and_unranked_and_unknown_keys_ignored():
    doc = make_doc(1, shifts={"sgd": 0.0, "label_oracle": 0.3})
    doc["heads"][1]["oracle"] = True
    doc["something_new"] = {"from": "another issue"}
    page = build_report([doc])
    assert "label_oracle (oracle)" in page and "<tr class=oracle><td class=num>—</td>" in page
    # The oracle outranks nobody: sgd stays first although the oracle is far better.
    assert re.search(r"<tr><td class=num>1</td><td>sgd</td>", page)


def test_extra_tables_hook_adds_a_section():
    def bands(data):
        return [ReportTable(title="Loss bands", columns=("band", "accuracy"), rows=[("0.30-0.35", "81.0")])]

    EXTRA_TABLES.append(bands)
    try:
        text = " ".join(parse(build_report([make_doc(1)])).text)
    finally:
        EXTRA_TABLES.remove(bands)
    assert "More tables" in text and "Loss bands" in text and "0.30-0.35" in text
    assert "More tables" not in " ".join(parse(build_report([make_doc(1)])).text)


def test_same_source_names_still_find_their_documents():
    one, five = make_doc(1), make_doc(5)
    five["heads"][0]["oracle"] = True
    page = build_report([one, five], sources=["results.json", "results.json"])
    assert page.count("sgd (oracle)") == 1


def test_text_is_escaped():
    doc = make_doc(1, run="<b>bold</b>")
    page = build_report([doc])
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    for k_shot in (1, 5):
        write_results(run / f"results-5way-{k_shot}shot.json", make_doc(k_shot))
    return run


def test_report_command_writes_into_the_run_folder(run_dir):
    assert main(["report", str(run_dir), "--quiet"]) == 0
    page = (run_dir / "report.html").read_text()
    assert "glyphs: 5-way 5-shot" in page and "<img" in page


def test_report_over_results_of_another_schema_is_refused(run_dir, tmp_path, capsys):
    path = run_dir / "results-5way-1shot.json"
    doc = json.loads(path.read_text())
    doc["schema"] = "fewshot.results/2"
    path.write_text(json.dumps(doc))
    assert main(["report", str(run_dir), "--output", str(tmp_path / "r.html")]) == 2
    assert "schema 'fewshot.results/2'" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "r.html").exists()


def test_report_of_several_runs_needs_an_output_file(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), str(run_dir), "--quiet"]) == 2
    assert "--output" in capsys.readouterr().err


def test_unwritable_report_is_a_clear_error(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["report", str(run_dir), "--output", str(blocker / "report.html")]) == 2
    assert "cannot be written" in capsys.readouterr().err
