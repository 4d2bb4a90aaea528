"""Merging results of several runs into one ranked table, and its three renderings."""
import csv
import io
import json

import pytest

from episodes.errors import UserError
from fewshot.report.leaderboard import merge, paired_band_table, to_csv, to_json, to_markdown
from fewshot.results.bands import band_table


def hand_made(run: str, heads: dict[str, tuple[float, float]], *, k_shot: int = 5,
              episodes_fingerprint: str = "ep-5shot", dataset: str = "cifar_fs") -> dict:
    """A results document with just what the leaderboard reads; heads map name -> (mean, ci95)."""
    return {"schema": "fewshot.results/1", "config": {"name": run},
            "dataset": {"name": dataset, "split": "test", "fingerprint": "data-1"},
            "episodes": {"n_way": 5, "k_shot": k_shot, "count": 600, "fingerprint": episodes_fingerprint},
            "heads": [{"name": name, "accuracy": {"mean": mean, "std": 0.1, "ci95": ci95, "n": 600},
                       "fit_seconds": 0.5} for name, (mean, ci95) in heads.items()]}


BASELINE = hand_made("baseline", {"sgd": (0.8123, 0.0072), "prototype": (0.7901, 0.0070)})
GRADIENT_FREE = hand_made("gradient-free", {"pattern_search": (0.8050, 0.0075)})
SOURCES = ["runs/baseline/results-5way-5shot.json", "runs/gf/results-5way-5shot.json"]


def test_merge_ranks_heads_of_all_runs_by_accuracy():
    rows = merge([BASELINE, GRADIENT_FREE], sources=SOURCES)
    assert [(row.rank, row.head, row.run) for row in rows] == [
        (1, "sgd", "baseline"), (2, "pattern_search", "gradient-free"), (3, "prototype", "baseline")]
    assert rows[1].source == SOURCES[1]
    assert not any(row.mismatched for row in rows)


def test_markdown_table():
    assert to_markdown(merge([BASELINE, GRADIENT_FREE], sources=SOURCES)) == (
        "Accuracy (%): mean over episodes ± 95% confidence interval "
        "(student-t: t_{0.975, n-1} * std(ddof=1) / sqrt(n)). Rank: 1 + the number of heads significantly "
        "better (two-sided paired t-test (scipy.stats.ttest_rel) on per-episode accuracy, p < 0.05, uncorrected).\n"
        "\n"
        "### cifar_fs: 5-way 5-shot\n"
        "\n"
        "| Rank | Head | Run | Accuracy (%) | Episodes | Fit (s) |\n"
        "|---:|---|---|---:|---:|---:|\n"
        "| 1 | sgd | baseline | 81.23 ± 0.72 | 600 | 0.50 |\n"
        "| 2 | pattern_search | gradient-free | 80.50 ± 0.75 | 600 | 0.50 |\n"
        "| 3 | prototype | baseline | 79.01 ± 0.70 | 600 | 0.50 |\n")


def test_csv_rows_in_percent():
    rows = list(csv.DictReader(io.StringIO(to_csv(merge([BASELINE, GRADIENT_FREE], sources=SOURCES)))))
    assert [row["head"] for row in rows] == ["sgd", "pattern_search", "prototype"]
    assert rows[0]["rank"] == "1" and rows[0]["accuracy_pct"] == "81.23" and rows[0]["ci95_pct"] == "0.72"
    assert rows[1]["source"] == SOURCES[1] and rows[1]["mismatched"] == "False"
    assert rows[2]["episodes_fingerprint"] == "ep-5shot" and rows[2]["n"] == "600"


def test_json_keeps_fractions():
    doc = json.loads(to_json(merge([BASELINE, GRADIENT_FREE], sources=SOURCES)))
    assert doc["schema"] == "fewshot.leaderboard/1" and doc["ci_method"] == "student-t"
    assert doc["rows"][0] == {"dataset": "cifar_fs", "n_way": 5, "k_shot": 5, "rank": 1, "head": "sgd",
                              "run": "baseline", "accuracy": 0.8123, "ci95": 0.0072, "n": 600, "fit_seconds": 0.5,
                              "episodes_fingerprint": "ep-5shot", "dataset_fingerprint": "data-1",
                              "source": SOURCES[0], "mismatched": False, "oracle": False}


def test_one_table_per_dataset_and_shot_setting():
    one_shot = hand_made("baseline", {"sgd": (0.6, 0.01)}, k_shot=1, episodes_fingerprint="ep-1shot")
    other = hand_made("baseline", {"sgd": (0.5, 0.01)}, dataset="mini_imagenet", episodes_fingerprint="ep-mini")
    rows = merge([BASELINE, one_shot, other])
    assert [(row.dataset, row.k_shot, row.rank) for row in rows] == [
        ("cifar_fs", 1, 1), ("cifar_fs", 5, 1), ("cifar_fs", 5, 2), ("mini_imagenet", 5, 1)]
    markdown = to_markdown(rows)
    assert markdown.count("| Rank |") == 3
    assert markdown.index("5-way 1-shot") < markdown.index("cifar_fs: 5-way 5-shot") < markdown.index("mini_imagenet")


def test_equal_accuracies_share_a_rank():
    rows = merge([hand_made("r", {"a": (0.7, 0.01), "b": (0.8, 0.01), "c": (0.7, 0.02), "d": (0.6, 0.01)})])
    assert [(row.head, row.rank) for row in rows] == [("b", 1), ("a", 2), ("c", 2), ("d", 4)]


def test_other_episodes_are_refused_naming_the_files_and_the_flag():
    reseeded = hand_made("reseeded", {"sgd": (0.83, 0.007)}, episodes_fingerprint="ep-other")
    with pytest.raises(UserError) as error:
        merge([BASELINE, GRADIENT_FREE, reseeded], sources=SOURCES + ["runs/seed1/results-5way-5shot.json"])
    message = str(error.value)
    assert "--allow-mismatched-episodes" in message
    assert all(source in message for source in SOURCES) and "runs/seed1/results-5way-5shot.json" in message
    assert "ep-other" in message


def test_other_dataset_fingerprint_is_refused_too():
    changed = hand_made("changed", {"sgd": (0.83, 0.007)})
    changed["dataset"]["fingerprint"] = "data-2"
    with pytest.raises(UserError, match="same episodes"):
        merge([BASELINE, changed])


def test_allowed_mismatch_is_marked():
    reseeded = hand_made("reseeded", {"sgd": (0.83, 0.007)}, episodes_fingerprint="ep-other")
    rows = merge([BASELINE, GRADIENT_FREE, reseeded], allow_mismatch=True)
    assert [(row.run, row.rank, row.mismatched) for row in rows] == [
        ("reseeded", 1, True), ("baseline", 2, False), ("gradient-free", 3, False), ("baseline", 4, False)]
    markdown = to_markdown(rows)
    assert "| 1 | sgd † | reseeded | 83.00 ± 0.70 |" in markdown
    assert "† evaluated on other episodes" in markdown


def test_single_episode_interval_renders_as_not_available():
    rows = merge([hand_made("tiny", {"sgd": (0.6, None)})])
    assert "| 60.00 ± n/a |" in to_markdown(rows)
    assert list(csv.DictReader(io.StringIO(to_csv(rows))))[0]["ci95_pct"] == ""
    assert json.loads(to_json(rows))["rows"][0]["ci95"] is None


def _banded(name: str, band: list[float], per_episode: list[float], fitted: list[int]) -> dict:
    return {"name": f"{name}@{band[0]:.2f}-{band[1]:.2f}", "config": {"head": name, "band": band},
            "per_episode": per_episode, "per_episode_fitted": fitted,
            "accuracy": {"mean": 0.5, "std": 0.1, "ci95": 0.01, "n": len(per_episode)}, "fit_seconds": 0.1}


def test_band_rows_are_paired_on_the_episodes_every_head_of_the_row_fitted():
    """SGD fits episodes 0-3 of the band, exact guess & check 2-5: unpaired, each averages its own four
    (SGD 0.9, G&C 0.5); paired, both average episodes 2-3 only (SGD 0.8, G&C 0.6), and the row says 2.
    A band only one head has is paired on that head's own fitted episodes."""
    heads = [_banded("sgd", [0.3, 0.35], [1.0, 1.0, 0.8, 0.8, 0.2, 0.2], [1, 1, 1, 1, 0, 0]),
             _banded("guess_check", [0.3, 0.35], [0.0, 0.0, 0.6, 0.6, 0.4, 0.4], [0, 0, 1, 1, 1, 1]),
             _banded("sgd", [0.35, 0.4], [0.7, 0.7, 0.7, 0.9, 0.9, 0.9], [1, 1, 1, 1, 1, 0])]
    doc = {**hand_made("bands", {}), "heads": heads}
    doc["band_table"] = band_table(heads)
    table = paired_band_table(heads)
    low, high = table["rows"]
    assert (low["paired"], high["paired"]) == (2, 5)
    assert low["cells"]["sgd"]["own"]["mean"] == pytest.approx(0.9)               # unpaired: its own 4
    assert low["cells"]["guess_check"]["own"]["mean"] == pytest.approx(0.5)
    assert low["cells"]["sgd"]["accuracy"]["mean"] == pytest.approx(0.8)          # paired: episodes 2-3
    assert low["cells"]["guess_check"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert low["cells"]["sgd"]["accuracy"]["n"] == low["cells"]["guess_check"]["accuracy"]["n"] == 2
    assert high["cells"]["sgd"]["accuracy"]["mean"] == pytest.approx(0.78)
    markdown = to_markdown(merge([doc]), [doc])
    assert "| Band | Paired episodes | sgd | guess_check |" in markdown
    assert "| 0.30-0.35 | 2 | 80.00 ± 0.00 (4/6) | 60.00 ± 0.00 (4/6) |" in markdown
    assert "| 0.35-0.40 | 5 | 78.00 ± " in markdown and "(5/6) |  |" in markdown
