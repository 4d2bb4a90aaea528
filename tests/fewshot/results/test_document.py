"""Results files: what `build_results` computes, how they are written, and how bad files are refused."""
import csv
import json
import math

import pytest
import scipy.stats
import torch

from episodes.errors import UserError
from fewshot.results.document import (SCHEMA, HeadResult, build_results, find_results_files, read_results,
                             results_filename, write_csv, write_results)

EPISODES = 40
QUERIES = 75  # 5 ways x 15 queries: accuracies are multiples of 1/75


def accuracies(seed: int, skill: int) -> torch.Tensor:
    """float32 query accuracies, as the evaluator produces them."""
    generator = torch.Generator().manual_seed(seed)
    correct = (torch.randint(skill, 76, (EPISODES,), generator=generator) + skill) // 2
    return (correct.float() / QUERIES).to(torch.float32)


def make_doc(k_shot: int = 5) -> dict:
    norm = torch.linspace(1.0, 2.0, EPISODES)
    heads = [HeadResult("sgd", {"lr": 0.1}, accuracies(0, 60), 0.25, {"weight_norm": norm}),
             HeadResult("pattern_search", {"radius": 1.0}, accuracies(1, 55), 1.5,
                        {"weight_norm": torch.where(torch.arange(EPISODES) == 3, torch.nan, norm)}),
             HeadResult("prototype", {}, accuracies(2, 50), 0.01)]
    return build_results(config={"name": "demo", "heads": {"sgd": {}}},
                         dataset={"name": "glyphs", "split": "test", "fingerprint": "d" * 16},
                         backbone={"name": "resnet12", "checkpoint_sha256": "c" * 64},
                         episodes={"n_way": 5, "k_shot": k_shot, "n_query": 15, "count": EPISODES, "seed": 0,
                                   "fingerprint": f"e{k_shot}" * 8},
                         heads=heads, hardware={"platform": "test"})


def test_document_follows_the_schema():
    doc = make_doc()
    assert doc["schema"] == SCHEMA == "fewshot.results/1"
    assert list(doc) == ["schema", "suite", "config", "hardware", "dataset", "backbone", "episodes",
                         "ci_method", "ci_formula", "heads", "comparisons"]
    assert doc["suite"]["version"] == "0.1.0"
    commit = doc["suite"]["git_commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert doc["ci_method"] == "student-t" and "0.975" in doc["ci_formula"]
    assert [head["name"] for head in doc["heads"]] == ["sgd", "pattern_search", "prototype"]
    head_keys = {"name", "config", "accuracy", "per_episode", "fit_seconds", "diagnostics"}
    assert set(doc["heads"][0]) == head_keys


def test_stored_ci_can_be_recomputed_from_per_episode_values():
    for head in make_doc()["heads"]:
        values = head["per_episode"]
        assert len(values) == EPISODES and all(0.0 <= v <= 1.0 for v in values)
        std = torch.tensor(values, dtype=torch.float64).std(unbiased=True).item()
        assert head["accuracy"]["mean"] == pytest.approx(sum(values) / EPISODES, rel=1e-12)
        assert head["accuracy"]["ci95"] == pytest.approx(
            scipy.stats.t.ppf(0.975, EPISODES - 1) * std / math.sqrt(EPISODES), rel=1e-9)
        assert head["accuracy"]["n"] == EPISODES


def test_per_episode_values_drop_float32_noise():
    values = make_doc()["heads"][0]["per_episode"]
    assert all(round(v * QUERIES) == pytest.approx(v * QUERIES, abs=1e-4) for v in values)
    assert all(len(repr(v)) <= 8 for v in values)  # 0.84, not 0.8399999737739563


def test_comparisons_cover_every_pair_in_config_order():
    doc = make_doc()
    assert [(c["a"], c["b"]) for c in doc["comparisons"]] == [
        ("sgd", "pattern_search"), ("sgd", "prototype"), ("pattern_search", "prototype")]
    first = doc["comparisons"][0]
    sgd, pattern_search = doc["heads"][0], doc["heads"][1]
    assert first["mean_diff"] == pytest.approx(sgd["accuracy"]["mean"] - pattern_search["accuracy"]["mean"], abs=1e-12)
    assert first["wins"] + first["ties"] + first["losses"] == EPISODES


def test_diagnostics_are_summarized_over_finite_episodes():
    doc = make_doc()
    assert doc["heads"][0]["diagnostics"]["weight_norm"]["mean"] == pytest.approx(1.5, rel=1e-6)
    assert doc["heads"][0]["diagnostics"]["weight_norm"]["n"] == EPISODES
    assert doc["heads"][1]["diagnostics"]["weight_norm"]["n"] == EPISODES - 1
    assert doc["heads"][2]["diagnostics"] == {}


def test_write_then_read_round_trips(tmp_path):
    doc = make_doc()
    path = write_results(tmp_path / results_filename(5, 5), doc)
    assert path.name == "results-5way-5shot.json"
    assert read_results(path) == json.loads(json.dumps(doc))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_single_episode_writes_null_not_nan(tmp_path):
    doc = build_results(config={}, dataset={"name": "glyphs", "fingerprint": "x"}, backbone={},
                        episodes={"n_way": 5, "k_shot": 1, "fingerprint": "y"},
                        heads=[HeadResult("sgd", {}, torch.tensor([0.6]), 0.1),
                               HeadResult("prototype", {}, torch.tensor([0.4]), 0.1)], hardware={})
    text = write_results(tmp_path / "r.json", doc).read_text()
    assert "NaN" not in text
    assert read_results(tmp_path / "r.json")["heads"][0]["accuracy"] == {"mean": 0.6, "std": None, "ci95": None, "n": 1}


def test_write_refuses_nan_and_leaves_nothing(tmp_path):
    doc = make_doc()
    doc["heads"][0]["fit_seconds"] = math.nan
    with pytest.raises(ValueError):
        write_results(tmp_path / "r.json", doc)
    assert list(tmp_path.iterdir()) == []


def test_heads_must_share_the_episodes():
    with pytest.raises(ValueError, match="at least one head"):
        build_results(config={}, dataset={}, backbone={}, episodes={}, hardware={}, heads=[])
    with pytest.raises(ValueError, match="different numbers of episodes"):
        build_results(config={}, dataset={}, backbone={}, episodes={}, hardware={},
                      heads=[HeadResult("a", {}, torch.ones(3), 0.0), HeadResult("b", {}, torch.ones(4), 0.0)])


def test_default_hardware_names_the_machine():
    doc = build_results(config={}, dataset={}, backbone={}, episodes={},
                        heads=[HeadResult("a", {}, torch.ones(3), 0.0)])
    assert doc["hardware"]["cpu_count"] >= 1 and doc["hardware"]["torch"] == torch.__version__
    assert "cuda_device" in doc["hardware"]


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: text.replace('"fewshot.results/1"', '"fewshot.results/2"'), "fewshot.results/2"),
    (lambda text: "[1, 2]", "no \"schema\" key"),
    (lambda text: text.replace('"fingerprint": "e5e5', '"fingerprint_": "e5e5'), "episodes.fingerprint"),
    (lambda text: text.replace('"per_episode"', '"per_episode_"', 1), "heads.0.per_episode"),
])
def test_read_refuses_bad_files_naming_the_fix(tmp_path, damage, message):
    path = tmp_path / "results-5way-5shot.json"
    path.write_text(damage(json.dumps(make_doc(), indent=2)), encoding="utf-8")
    with pytest.raises(UserError, match="results") as error:
        read_results(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_read_refuses_wrong_types(tmp_path):
    doc = make_doc()
    doc["config"], doc["heads"][1]["accuracy"]["mean"] = ["demo"], "81%"
    path = tmp_path / "results-5way-5shot.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="config is not an object, heads.1.accuracy.mean is not a number"):
        read_results(path)


def test_read_refuses_binary_files(tmp_path):
    path = tmp_path / "results-5way-5shot.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(UserError, match="cannot be read"):
        read_results(path)


def test_read_missing_file_says_where_results_come_from(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_results(tmp_path / "nope.json")


def test_write_csv_has_one_row_per_head_per_document(tmp_path):
    path = write_csv(tmp_path / "results.csv", [make_doc(1), make_doc(5)])
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 6
    assert list(rows[0]) == ["dataset", "n_way", "k_shot", "head", "accuracy_pct", "ci95_pct", "n",
                             "fit_seconds", "episodes_fingerprint"]
    doc = make_doc(5)
    last = rows[-1]
    assert (last["dataset"], last["k_shot"], last["head"], last["n"]) == ("glyphs", "5", "prototype", str(EPISODES))
    assert float(last["accuracy_pct"]) == pytest.approx(100 * doc["heads"][2]["accuracy"]["mean"], abs=1e-4)
    assert float(last["ci95_pct"]) == pytest.approx(100 * doc["heads"][2]["accuracy"]["ci95"], abs=1e-4)
    assert last["episodes_fingerprint"] == "e5" * 8


def test_find_results_files_searches_folders_and_drops_duplicates(tmp_path):
    for run in ("run-a", "run-b/nested"):
        (tmp_path / run).mkdir(parents=True)
        for k_shot in (1, 5):
            (tmp_path / run / results_filename(5, k_shot)).write_text("{}")
    (tmp_path / "run-a" / "config.json").write_text("{}")
    explicit = tmp_path / "run-a" / "results-5way-1shot.json"
    found = find_results_files([explicit, tmp_path])
    assert found[0] == explicit and len(found) == 4
    assert all(p.name.startswith("results-") for p in found)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no results"):
        find_results_files([tmp_path / "empty"])
