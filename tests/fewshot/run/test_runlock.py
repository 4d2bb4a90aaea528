"""A run folder has one owner: locks, stale locks, other runs' results, default names, temp sweeps."""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from episodes.io import TEMP_SUFFIX
from fewshot.cli import main
from fewshot.commands.options import resolve_output_dir
from fewshot.run.runlock import LOCK_NAME, claim_run_dir, release_run_dir


def heads_of(path):
    return [head["name"] for head in json.loads(path.read_text())["heads"]]


def start(*args, data_root):
    env = {**os.environ, "FEWSHOT_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fewshot", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(processes):
    return [(process.wait(timeout=300), *process.communicate()) for process in processes]


def test_two_concurrent_evaluations_into_one_folder_one_refused(tiny_checkpoint, fast_config, tmp_path):
    out = tmp_path / "shared"
    common = ("evaluate", "--checkpoint", str(tiny_checkpoint), "--config", str(fast_config), "--output-dir",
              str(out), "--quiet")
    first = start(*common, "heads={prototype: {}}", "episodes.k_shot=[1,2]", data_root=tmp_path / "data")
    second = start(*common, "heads={sgd: {steps: 3}}", "episodes.k_shot=[2,1]", data_root=tmp_path / "data")
    results = finish([first, second])
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = 0 if results[0][0] == 0 else 1
    loser_err = results[1 - winner][2]
    assert ("is in use by process" in loser_err or "already holds the results" in loser_err) and \
        "Traceback" not in loser_err
    expected = [["prototype"], ["sgd"]][winner]
    for name in ("results-3way-1shot.json", "results-3way-2shot.json"):
        assert heads_of(out / name) == expected  # one run's results, not a mix
    assert not (out / LOCK_NAME).exists()


def test_two_concurrent_pretrainings_into_one_folder_one_refused(fast_config, tmp_path):
    out = tmp_path / "pretrain"
    common = ("pretrain", "--config", str(fast_config), "--output-dir", str(out), "--quiet")
    processes = [start(*common, f"pretrain.seed={seed}", data_root=tmp_path / "data") for seed in (1, 2)]
    results = finish(processes)
    assert sorted(code for code, _, _ in results) == [0, 2], results
    winner_seed = 1 if results[0][0] == 0 else 2
    loser_err = results[0 if winner_seed == 2 else 1][2]
    assert "in use by process" in loser_err or "already holds a pretraining run" in loser_err
    checkpoint = torch.load(out / "checkpoint-best.pt", weights_only=True)
    assert checkpoint["seed"] == winner_seed  # the file holds the weights of the run that reported it


def test_live_lock_refuses_and_stale_lock_is_taken_over(evaluate, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                 "command": "evaluate", "started": "now"}))
        code, _, err = evaluate("--output-dir", str(out))
        assert code == 2 and f"in use by process {sleeper.pid}" in err and LOCK_NAME in err
        assert not list(out.glob("results-*"))
    finally:
        sleeper.kill()
        sleeper.wait()
    code, _, err = evaluate("--output-dir", str(out))  # the owner is dead: the lock is stale
    assert code == 0, err
    assert (out / "results-3way-1shot.json").is_file() and not (out / LOCK_NAME).exists()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "command": "pretrain"}))
    with pytest.raises(Exception, match="in use by process 1 on elsewhere.example"):
        claim_run_dir(tmp_path, command="evaluate")


def test_evaluate_refuses_a_folder_holding_another_runs_results_unless_forced(evaluate, tmp_path):
    out = tmp_path / "run"
    assert evaluate("--output-dir", str(out))[0] == 0
    before = (out / "results-3way-1shot.json").read_text()
    code, _, err = evaluate("--output-dir", str(out), "episodes.seed=6")
    assert code == 2 and "already holds the results of another run" in err and "--force" in err
    code, _, err = evaluate("--output-dir", str(out), "--resume", "episodes.seed=6")  # resume, other seed
    assert code == 2 and "results-3way-1shot.json" in err and "episodes.fingerprint" in err
    assert (out / "results-3way-1shot.json").read_text() == before
    other_checkpoint = tmp_path / "other.pt"
    from backbones.checkpoint import save_checkpoint
    from backbones.registry import get_backbone
    torch.manual_seed(1)
    save_checkpoint(other_checkpoint, get_backbone("resnet12", width=0.125), backbone="resnet12",
                    backbone_config={"width": 0.125, "dropblock": 0.0})
    code, _, err = evaluate("--output-dir", str(out), "--resume", checkpoint=other_checkpoint)
    assert code == 2 and "backbone.checkpoint_sha256" in err
    assert (out / "results-3way-1shot.json").read_text() == before
    assert evaluate("--output-dir", str(out), "--force", "episodes.seed=6")[0] == 0
    assert json.loads((out / "results-3way-1shot.json").read_text())["episodes"]["seed"] == 6


def test_default_run_folders_never_collide_within_one_second(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *args: "20260101-000000")
    args = argparse.Namespace(output_dir=None, command="evaluate", resume=False, force=False)
    first = resolve_output_dir(args, "demo")
    second = resolve_output_dir(args, "demo")
    assert first != second and first.is_dir() and second.is_dir()
    assert (first / LOCK_NAME).exists() and (second / LOCK_NAME).exists()
    release_run_dir(first)
    release_run_dir(second)


def test_two_default_folder_runs_started_together_get_their_own_folders(tiny_checkpoint, fast_config, tmp_path):
    # Both subprocesses see the same fixed timestamp, as two runs started in one second would.
    shim = tmp_path / "sitecustomize.py"
    shim.write_text("import time\ntime.strftime = lambda *args: '20260101-000000'\n")
    env = {**os.environ, "FEWSHOT_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "fewshot", "evaluate", "--checkpoint", str(tiny_checkpoint), "--config",
               str(fast_config), "--quiet", "episodes.k_shot=[1]"]
    processes = [subprocess.Popen(command + [f"heads={{{head}: {{}}}}"], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for head in ("prototype", "logistic_regression")]
    results = finish(processes)
    assert [code for code, _, _ in results] == [0, 0], results
    folders = sorted((tmp_path / "runs").iterdir())
    assert [f.name for f in folders] == ["fast-20260101-000000", "fast-20260101-000000-2"]
    assert sorted(heads_of(f / "results-3way-1shot.json")[0] for f in folders) == ["logistic_regression",
                                                                                    "prototype"]


def test_benchmark_resume_without_output_dir_is_an_error(fast_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "--config", str(fast_config), "--resume"]) == 2
    assert "Pass --output-dir" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_stale_temp_files_of_atomic_writes_are_swept_when_a_run_starts(evaluate, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    leftover = out / f".checkpoint-last.pt.k1ll3d{TEMP_SUFFIX}"  # what a kill during a write leaves
    leftover.write_bytes(b"partial")
    someone_elses = out / ".notes.tmp"
    someone_elses.write_text("not ours")
    assert evaluate("--output-dir", str(out))[0] == 0
    assert not leftover.exists() and someone_elses.exists()


def test_atomic_writes_name_their_temp_files_recognisably(tmp_path, monkeypatch):
    from episodes import io
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(io.os, "replace", lambda src, dst: (seen.append(src), real_replace(src, dst)))
    io.atomic_write_text(tmp_path / "x.json", "{}")
    assert seen and str(seen[0]).endswith(TEMP_SUFFIX)


def test_a_folder_gone_read_only_is_released_without_a_traceback(tmp_path, monkeypatch):
    """E3 of the probe: the file system turns read-only mid-run; releasing the lock must not raise
    (the lock file stays behind, stale, and the next run takes it over)."""
    import errno
    import pathlib
    folder = tmp_path / "run"
    folder.mkdir()
    claim_run_dir(folder, command="evaluate")

    def read_only(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    release_run_dir(folder)  # no exception
    monkeypatch.undo()
    assert (folder / LOCK_NAME).exists()
    claim_run_dir(folder, command="evaluate")  # the stale lock is taken over
    release_run_dir(folder)
    assert not (folder / LOCK_NAME).exists()
