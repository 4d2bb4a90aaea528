"""`fewshot benchmark` / `fewshot evaluate` end to end, in subprocesses, on a tiny generated dataset."""
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from scipy import stats

from tests.fewshot.conftest import run_fewshot


# The volume analysis on 110 episodes: two chunks of episodes, so two processes share the work.
VOLUME = ("volume.enabled=true", "volume.episodes=110", "volume.chains=8", "volume.repeats=2", "volume.sweeps=1",
          "volume.burn_in=1", "volume.poisoned_episodes=0")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("bench")
    result = run_fewshot("benchmark", "--config", str(tiny_config), "--output-dir", str(root / "run1"), *VOLUME,
                         data_root=root / "data")
    return root, result


def load(path):
    return json.loads(path.read_text())


def test_benchmark_writes_every_artifact(first_run):
    root, result = first_run
    run = root / "run1"
    for name in ("results-3way-1shot.json", "results-3way-2shot.json", "results.csv", "leaderboard.md",
                 "accuracy.png", "checkpoint-best.pt"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    assert "prototype" in (run / "leaderboard.md").read_text()
    assert "sgd" in result.stdout  # the summary table


def test_results_carry_schema_and_provenance(first_run):
    root, _ = first_run
    doc = load(root / "run1" / "results-3way-2shot.json")
    assert doc["schema"] == "fewshot.results/1"
    assert doc["dataset"]["name"] == "image_folder" and doc["dataset"]["split"] == "novel"
    assert len(doc["dataset"]["fingerprint"]) == 16
    checkpoint = root / "run1" / "checkpoint-best.pt"
    from episodes.io import file_sha256
    assert doc["backbone"]["checkpoint_sha256"] == file_sha256(checkpoint)
    assert doc["episodes"] | {"fingerprint": None} == {"n_way": 3, "k_shot": 2, "n_query": 4, "count": 120,
                                                       "seed": 5, "fingerprint": None}
    assert [h["name"] for h in doc["heads"]] == ["sgd", "pattern_search", "logistic_regression", "prototype"]
    assert doc["config"]["episodes"]["count"] == 120


def test_confidence_intervals_recompute_from_per_episode_accuracies(first_run):
    root, _ = first_run
    doc = load(root / "run1" / "results-3way-1shot.json")
    for head in doc["heads"]:
        values = torch.tensor(head["per_episode"], dtype=torch.float64)
        assert len(values) == 120 and 0 <= values.min() and values.max() <= 1
        n = len(values)
        ci = stats.t.ppf(0.975, n - 1) * values.std(unbiased=True).item() / math.sqrt(n)
        assert head["accuracy"]["mean"] == pytest.approx(values.mean().item(), abs=1e-9)
        assert head["accuracy"]["ci95"] == pytest.approx(ci, rel=1e-6)
        assert head["accuracy"]["n"] == n


def test_paired_comparisons_agree_with_the_heads(first_run):
    root, _ = first_run
    doc = load(root / "run1" / "results-3way-1shot.json")
    per_episode = {h["name"]: torch.tensor(h["per_episode"], dtype=torch.float64) for h in doc["heads"]}
    assert len(doc["comparisons"]) == 6
    for comparison in doc["comparisons"]:
        a, b = per_episode[comparison["a"]], per_episode[comparison["b"]]
        assert comparison["mean_diff"] == pytest.approx((a - b).mean().item(), abs=1e-9)
        assert comparison["wins"] == int((a > b).sum()) and comparison["losses"] == int((a < b).sum())
        assert comparison["wins"] + comparison["ties"] + comparison["losses"] == len(a)


def test_same_config_twice_gives_identical_results_and_reuses_the_cache(first_run, tiny_config):
    root, _ = first_run
    # --retrain: pretraining again (not reusing the stored checkpoint) must give the same backbone.
    again = run_fewshot("benchmark", "--config", str(tiny_config), "--output-dir", str(root / "run2"), "--retrain",
                        *VOLUME, data_root=root / "data")
    assert "reusing cached features" in again.stdout
    for name in ("results-3way-1shot.json", "results-3way-2shot.json"):
        first, second = load(root / "run1" / name), load(root / "run2" / name)
        assert first["episodes"] == second["episodes"] and first["backbone"]["checkpoint_sha256"] == \
            second["backbone"]["checkpoint_sha256"]
        for a, b in zip(first["heads"], second["heads"]):
            assert a["per_episode"] == b["per_episode"] and a["diagnostics"] == b["diagnostics"]
        assert first["volume"] == second["volume"]


def test_distributed_evaluation_matches_one_process(first_run, tiny_config):
    root, _ = first_run
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29561",
                "-m", "fewshot")
    run_fewshot("evaluate", "--checkpoint", str(root / "run1" / "checkpoint-best.pt"), "--config",
                str(tiny_config), "--output-dir", str(root / "dist"), "--device", "cpu", *VOLUME,
                data_root=root / "data", launcher=launcher)
    for name in ("results-3way-1shot.json", "results-3way-2shot.json"):
        single, sharded = load(root / "run1" / name), load(root / "dist" / name)
        for a, b in zip(single["heads"], sharded["heads"]):
            assert a["per_episode"] == b["per_episode"] and a["accuracy"] == b["accuracy"]
            assert a["diagnostics"] == b["diagnostics"]
        assert single["comparisons"] == sharded["comparisons"]
        # The volume analysis too: every episode has its own streams, so two processes give the same numbers.
        assert single["volume"]["episodes"] == 110 and len(single["volume"]["log10_volume"]["per_episode"]) == 110
        assert math.isfinite(single["volume"]["log10_volume_poisoned"]["mean"])
        assert single["volume"] == sharded["volume"]


def test_unwritable_output_dir_is_a_clear_error(first_run, tiny_config, tmp_path):
    root, _ = first_run
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_fewshot("evaluate", "--checkpoint", str(root / "run1" / "checkpoint-best.pt"), "--config",
                         str(tiny_config), "--output-dir", str(blocker / "out"), data_root=root / "data", check=False)
    assert result.returncode == 2 and "cannot be written" in result.stderr and "Traceback" not in result.stderr


def test_missing_checkpoint_is_a_clear_error(tmp_path, tiny_config):
    result = run_fewshot("evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--config", str(tiny_config),
                         "--output-dir", str(tmp_path / "out"), data_root=tmp_path, check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_leaves_no_partial_results_and_only_complete_cache_entries(first_run, tiny_config, tmp_path):
    root, _ = first_run
    data_root = tmp_path / "data"
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "fewshot", "evaluate", "--checkpoint", str(root / "run1" / "checkpoint-best.pt"),
               "--config", str(tiny_config), "--output-dir", str(out), "episodes.count=20000",
               "episodes.k_shot=[2]"]
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and then so
    # would the command (Python keeps an ignored SIGINT ignored): give it the default, as a terminal would.
    process = subprocess.Popen(command, env={**__import__("os").environ, "FEWSHOT_DATA": str(data_root)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list((data_root / "features").glob("features-*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the head fits
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert not list(out.glob("results-*.json")) and not list(out.glob("*.tmp")) and not list(out.glob(".*tmp"))
    for entry in (data_root / "features").iterdir():
        assert entry.name.startswith("features-") and torch.load(entry, weights_only=True)["features"].shape[0] > 0


def test_resume_keeps_finished_settings_only_for_the_same_config(first_run, tiny_config, tmp_path):
    import shutil
    root, _ = first_run
    out = tmp_path / "resumed"
    shutil.copytree(root / "run1", out)
    args = ("evaluate", "--checkpoint", str(root / "run1" / "checkpoint-best.pt"), "--config", str(tiny_config),
            "--output-dir", str(out), "--resume", *VOLUME)
    kept = run_fewshot(*args, data_root=root / "data")
    assert kept.stdout.count("already complete") == 2
    changed = run_fewshot(*args, "heads.sgd.steps=21", data_root=root / "data", check=False)
    assert changed.returncode == 2 and "holds results of another run" in changed.stderr  # never silently replaced
    assert load(out / "results-3way-1shot.json")["config"]["heads"]["sgd"] == {"steps": 20}
    run_fewshot(*args, "heads.sgd.steps=21", "--force", data_root=root / "data")
    assert load(out / "results-3way-1shot.json")["config"]["heads"]["sgd"] == {"steps": 21}
