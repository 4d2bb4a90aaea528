"""Results verified on read: types, then every statistic recomputed; a fuzz of the readers."""
import copy
import json
import random

import pytest
import yaml

from episodes.errors import UserError
from fewshot.cli import main
from fewshot.config import Config, config_to_dict, load_config
from fewshot.report.leaderboard import RENDERERS, merge
from fewshot.results.document import read_results, write_csv, write_results
from fewshot.run.validate import check_config
from fewshot.results.verify import verify_results
from tests.fewshot.results.test_document import make_doc


@pytest.fixture
def results_file(tmp_path):
    return write_results(tmp_path / "run" / "results-5way-5shot.json", make_doc())


def rewrite(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))  # json writes NaN when told to, like a hand edit could
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["heads"][0]["accuracy"].update(mean=0.99), "heads.0.accuracy.mean is 0.99 but its per-episode"),
    (lambda d: d["heads"][1]["accuracy"].update(ci95=0.001), "heads.1.accuracy.ci95"),
    (lambda d: d["heads"][0]["accuracy"].update(n=41), "heads.0.accuracy.n is 41"),
    (lambda d: d["heads"][2]["per_episode"].__setitem__(0, 1.0), "heads.2.accuracy.mean"),
    (lambda d: d["comparisons"][0].update(wins=0), "comparisons.0.wins"),
    (lambda d: d["comparisons"].pop(), "comparisons has 2 entries"),
])
def test_statistics_that_disagree_with_per_episode_values_are_refused(results_file, edit, message):
    rewrite(results_file, edit)
    with pytest.raises(UserError, match="disagrees with its own per-episode values") as error:
        read_results(results_file)
    assert message in str(error.value) and str(results_file) in str(error.value)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["heads"][0]["accuracy"].update(mean=1.5), "heads.0.accuracy.mean is 1.5, not a number in [0, 1]"),
    (lambda d: d["heads"][0]["accuracy"].update(mean=float("nan")), "heads.0.accuracy.mean is nan"),
    (lambda d: d["heads"][0]["accuracy"].update(ci95="0.01"), "heads.0.accuracy.ci95 is '0.01'"),
    (lambda d: d["heads"][1].update(fit_seconds=None), "heads.1.fit_seconds is None"),
    (lambda d: d["heads"][0]["accuracy"].update(n="x"), "heads.0.accuracy.n is 'x'"),
    (lambda d: d["heads"][0]["per_episode"].append(2.0), "heads.0.per_episode"),
    (lambda d: d["episodes"].update(k_shot="5"), "episodes.k_shot is '5'"),
])
def test_wrong_types_and_impossible_values_are_refused(results_file, edit, message):
    rewrite(results_file, edit)
    with pytest.raises(UserError, match="not a well-formed") as error:
        read_results(results_file)
    assert message in str(error.value)


def test_verification_follows_build_results(results_file):
    """Whatever build_results stores is what the reader recomputes: an untouched file passes."""
    doc = read_results(results_file)
    verify_results(doc, results_file)


def test_leaderboard_refuses_a_tampered_file_naming_it(results_file, capsys):
    rewrite(results_file, lambda d: d["heads"][2]["accuracy"].update(mean=1.5))
    for fmt in ("md", "json"):
        assert main(["leaderboard", str(results_file), "--format", fmt]) == 2
        captured = capsys.readouterr()
        assert str(results_file) in " ".join(captured.err.split()) and "150.00" not in captured.out


def test_resume_never_keeps_a_tampered_file(evaluate, tmp_path):
    out = tmp_path / "run"
    assert evaluate("--output-dir", str(out))[0] == 0
    csv_before = (out / "results.csv").read_text()
    rewrite(out / "results-3way-1shot.json",
            lambda d: d["heads"][0]["accuracy"].update(mean=round(1 - d["heads"][0]["accuracy"]["mean"] / 2, 3)))
    code, _, err = evaluate("--output-dir", str(out), "--resume")
    assert code == 2 and "results-3way-1shot.json" in err and "disagrees" in err
    assert (out / "results.csv").read_text() == csv_before  # the tampered number was not copied


# --- fuzz: random wrong types and truncation must give UserError, never a traceback --------------

WRONG_VALUES = [None, True, "x", "", -1, 0, 1.5, float("nan"), float("inf"), [], [1, "a"], {}, {"a": None},
                10 ** 30, "NaN"]


def _paths(tree, prefix=()):
    """Every (path) to a value in a nested dict/list."""
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree[:3]):
            yield from _paths(value, prefix + (i,))


def _mutated(tree, rng):
    tree = copy.deepcopy(tree)
    paths = [p for p in _paths(tree) if p]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent = tree
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = copy.deepcopy(rng.choice(WRONG_VALUES))
        except (KeyError, IndexError, TypeError):
            continue
    return tree


def test_fuzz_results_reader_raises_only_user_errors(tmp_path):
    rng = random.Random(12)
    doc = make_doc()
    text = json.dumps(doc)
    path = tmp_path / "results-5way-5shot.json"
    refused = 0
    for trial in range(300):
        if trial % 3 == 0:
            path.write_text(text[: rng.randrange(len(text))])
        else:
            path.write_text(json.dumps(_mutated(doc, rng)))
        try:
            accepted = read_results(path)
        except UserError as error:
            assert str(path) in str(error)
            refused += 1
            continue
        for render in RENDERERS.values():  # what the reader accepts, every consumer can use
            render(merge([accepted]))
            write_csv(tmp_path / "results.csv", [accepted])
    assert 150 < refused < 300  # the fuzz reaches both outcomes


def test_fuzz_config_loader_raises_only_user_errors(tmp_path):
    rng = random.Random(12)
    tree = config_to_dict(Config())
    text = yaml.safe_dump(tree)
    path = tmp_path / "c.yaml"
    leaves = [p for p in _paths(tree) if p]
    refused = 0
    for trial in range(300):
        if trial % 3 == 0:
            path.write_text(text[: rng.randrange(len(text))])
        else:
            mutated = _mutated(tree, rng)
            if trial % 5 == 0:
                section = mutated.get(rng.choice(["dataset", "episodes", "heads", "pretrain"]))
                if isinstance(section, dict):
                    section[7] = 1  # a key YAML reads as an int
            path.write_text(yaml.safe_dump(mutated))
        keys = [".".join(map(str, rng.choice(leaves)))
                + rng.choice(["", "", ".x", ".0"]) for _ in range(rng.randint(0, 2))]  # sometimes too deep
        overrides = [f"{key}={rng.choice(WRONG_VALUES)}" for key in keys]
        try:
            check_config(load_config(path, overrides), pretraining=True)
        except UserError:
            refused += 1
    assert 150 < refused < 300
