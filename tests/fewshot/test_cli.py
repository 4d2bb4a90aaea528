"""The `fewshot` command line: help, listings, and one-paragraph errors with exit code 2."""
import pytest

from fewshot.cli import main
from tests.fewshot.conftest import run_fewshot


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    listed = capsys.readouterr().out
    for name in ("benchmark", "pretrain", "evaluate", "leaderboard", "heads", "datasets"):
        assert name in listed


def test_heads_lists_the_built_in_heads(capsys):
    assert main(["heads"]) == 0
    listed = capsys.readouterr().out
    for name in ("sgd", "pattern_search", "greedy_random", "guess_check", "logistic_regression", "prototype"):
        assert name in listed


def test_datasets_reports_what_is_missing(capsys, tmp_path):
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    for name in ("glyphs", "cifar_fs", "mini_imagenet", "image_folder"):
        assert name in listed
    assert "no" in listed


@pytest.mark.parametrize("args,needle", [
    (["benchmark", "episodes.cont=3"], "Valid keys under episodes"),
    (["benchmark", "episodes.n_way=five"], "must be of type int"),
    (["benchmark", "--config", "/nonexistent.yaml"], "does not exist"),
    (["benchmark", "heads.nope.x=1"], "Registered heads"),
])
def test_bad_config_exits_2_with_one_paragraph_and_no_traceback(args, needle, tmp_path):
    result = run_fewshot(*args, "--output-dir", str(tmp_path / "out"), data_root=tmp_path, check=False)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_impossible_episode_is_a_clear_error_before_any_output(tmp_path, tiny_config):
    result = run_fewshot("benchmark", "--config", str(tiny_config), "episodes.n_way=9",
                         "--output-dir", str(tmp_path / "out"), data_root=tmp_path, check=False)
    assert result.returncode == 2 and "n_way to at most 4" in result.stderr
