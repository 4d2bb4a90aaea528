"""`fewshot leaderboard` end to end through `fewshot.cli.main`, bad input included."""
import csv
import io
import json

import pytest
import torch

from fewshot.cli import main
from fewshot.results.document import HeadResult, build_results, results_filename, write_results


def write_run(folder, run: str, heads: dict[str, float], *, k_shot: int = 5, fingerprint: str = "episodes-a"):
    """A run folder holding one results file whose heads score `base` plus a little noise."""
    generator = torch.Generator().manual_seed(len(run))
    results = [HeadResult(name, {}, (base + 0.1 * torch.rand(20, generator=generator)).clamp(0, 1), 0.2)
               for name, base in heads.items()]
    doc = build_results(config={"name": run}, dataset={"name": "glyphs", "fingerprint": "data"}, backbone={},
                        episodes={"n_way": 5, "k_shot": k_shot, "fingerprint": fingerprint}, heads=results,
                        hardware={})
    return write_results(folder / run / results_filename(5, k_shot), doc)


@pytest.fixture
def runs(tmp_path):
    return [write_run(tmp_path, "baseline", {"sgd": 0.8, "prototype": 0.6}),
            write_run(tmp_path, "gradient-free", {"pattern_search": 0.7})]


def test_markdown_to_stdout(runs, capsys):
    assert main(["leaderboard", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "### glyphs: 5-way 5-shot" in out
    lines = [line for line in out.splitlines() if line.startswith("| ") and "Rank" not in line]
    assert [line.split(" | ")[1] for line in lines] == ["sgd", "pattern_search", "prototype"]


def test_folders_and_json_output_file(runs, tmp_path, capsys):
    output = tmp_path / "board" / "leaderboard.json"
    assert main(["leaderboard", str(tmp_path), "--format", "json", "--output", str(output)]) == 0
    assert capsys.readouterr().out.startswith("Wrote 3 rows from 2 results files")
    rows = json.loads(output.read_text())["rows"]
    assert [(row["rank"], row["head"], row["run"]) for row in rows] == [
        (1, "sgd", "baseline"), (2, "pattern_search", "gradient-free"), (3, "prototype", "baseline")]


def test_csv_format(runs, capsys):
    assert main(["leaderboard", "--format", "csv", *map(str, runs)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["head"] for row in rows] == ["sgd", "pattern_search", "prototype"]


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[:100], "not valid JSON"),
    (lambda text: text.replace("fewshot.results/1", "fewshot.results/2"), "fewshot.results/2"),
])
def test_bad_results_file_exits_2_and_writes_nothing(runs, tmp_path, capsys, damage, message):
    runs[1].write_text(damage(runs[1].read_text()))
    output = tmp_path / "leaderboard.md"
    assert main(["leaderboard", *map(str, runs), "--output", str(output)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert not output.exists()


def test_mismatched_episodes_refused_unless_allowed(runs, tmp_path, capsys):
    other = write_run(tmp_path, "reseeded", {"sgd": 0.75}, fingerprint="episodes-b")
    output = tmp_path / "leaderboard.md"
    assert main(["leaderboard", *map(str, runs), str(other), "--output", str(output)]) == 2
    assert "--allow-mismatched-episodes" in capsys.readouterr().err
    assert not output.exists()
    assert main(["leaderboard", *map(str, runs), str(other), "--output", str(output),
                 "--allow-mismatched-episodes", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert "| sgd † | reseeded |" in output.read_text()


def test_missing_file_and_empty_folder(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["leaderboard", str(tmp_path)]) == 2
    assert "no results-*.json" in capsys.readouterr().err
