"""`fewshot sweep`: a 2x2x2 grid on tiny generated data, killed halfway and resumed; bad input."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewshot.cli import main
from fewshot.sweep.folder import finished_results
from tests.fewshot.conftest import run_fewshot

CELLS = 8


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_dataset) -> Path:
    folder = tmp_path_factory.mktemp("grid")
    (folder / "base.yaml").write_text(f"""
name: tiny
dataset: {{name: image_folder, path: {tiny_dataset}, image_size: 16}}
backbone: {{name: resnet12, width: 0.125}}
pretrain: {{epochs: 1, warmup_epochs: 0, batch_size: 16, lr: 0.05, checkpoint_every: 0, val_episodes: 0}}
episodes: {{n_way: 3, k_shot: [1], n_query: 4, count: 40, seed: 0}}
heads: {{prototype: {{}}}}
""")
    (folder / "grid.yaml").write_text("""
config: base.yaml
grid:
  heads: [{prototype: {}}, {sgd: {steps: 30}}]   # two head settings
  episodes.k_shot: [1, 2]                         # two shot counts
  episodes.seed: [0, 1]                           # two seeds
""")
    return folder / "grid.yaml"


def done_markers(sweep: Path) -> dict[str, int]:
    return {path.parent.name: path.stat().st_mtime_ns for path in sweep.glob("cells/*/DONE")}


def in_process(*argv: str) -> str:
    """Run `fewshot` in this process (no interpreter start-up); its stdout; fails on a non-zero exit."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(list(argv))
    assert code == 0, output.getvalue()
    return output.getvalue()


def collected(sweep: Path) -> list[dict]:
    """The sweep's leaderboard rows without what legitimately differs (timings, file paths)."""
    rows = json.loads(in_process("leaderboard", str(sweep), "--format", "json", "--allow-mismatched-episodes"))["rows"]
    return [{key: value for key, value in row.items() if key not in ("fit_seconds", "source")} for row in rows]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, grid):
    """A sweep SIGKILLed after some cells finished, then resumed with the same command."""
    root = tmp_path_factory.mktemp("sweep")
    sweep, data_root = root / "interrupted", root / "data"
    command = [sys.executable, "-m", "fewshot", "sweep", str(grid), "--output-dir", str(sweep)]
    env = {**os.environ, "FEWSHOT_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(done_markers(sweep)) < CELLS // 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = done_markers(sweep)
    results_before = {path: path.stat().st_mtime_ns for key in before
                      for path in (sweep / "cells" / key / "run").glob("results-*.json")}
    resumed = in_process("sweep", str(grid), "--output-dir", str(sweep), "--data-root", str(data_root))
    return root, sweep, data_root, before, results_before, resumed


def test_killed_sweep_resumes_without_rerunning_finished_cells(interrupted):
    _, sweep, _, before, results_before, resumed = interrupted
    assert CELLS // 2 <= len(before) < CELLS, "the sweep was not killed halfway"
    after = done_markers(sweep)
    assert len(after) == CELLS
    assert {key: after[key] for key in before} == before  # markers of finished cells untouched
    assert results_before and all(path.stat().st_mtime_ns == mtime for path, mtime in results_before.items())
    assert f"{len(before)} finished before (skipped), {CELLS - len(before)} to run" in " ".join(resumed.split())


def test_cells_share_one_pretraining(interrupted):
    _, sweep, _, _, _, _ = interrupted
    # Pretraining writes checkpoint-last.pt; a cell reusing the stored backbone links only checkpoint-best.pt.
    assert len(list(sweep.glob("cells/*/run/checkpoint-last.pt"))) == 1
    assert len(list(sweep.glob("cells/*/run/checkpoint-best.pt"))) == CELLS


def test_resumed_sweep_collects_like_an_uninterrupted_one(interrupted, grid):
    root, sweep, data_root, _, _, _ = interrupted
    straight = root / "straight"
    in_process("sweep", str(grid), "--output-dir", str(straight), "--data-root", str(data_root), "--quiet")
    resumed_rows, straight_rows = collected(sweep), collected(straight)
    assert len(resumed_rows) == CELLS and resumed_rows == straight_rows
    assert (sweep / "report.html").is_file() and (sweep / "leaderboard.md").is_file()


def test_unfinished_cells_are_not_collected(interrupted, tmp_path):
    _, sweep, _, _, _, _ = interrupted
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    marker = next(copy.glob("cells/*/DONE"))
    marker.unlink()  # a cell killed after writing some of its results
    assert len(finished_results([copy])) == CELLS - 1
    assert str(marker.parent / "run") not in finished_results([copy])


def test_submitit_local_executor_runs_cells(tmp_path, grid, interrupted):
    _, _, data_root, _, _, _ = interrupted
    small = tmp_path / "grid.yaml"
    small.write_text(grid.read_text().replace("episodes.seed: [0, 1]", "episodes.seed: [0]")
                     .replace("episodes.k_shot: [1, 2]", "episodes.k_shot: [1]")
                     .replace("heads: [{prototype: {}}, {sgd: {steps: 30}}]", "heads: [{prototype: {}}]")
                     .replace("config: base.yaml", f"config: {grid.parent / 'base.yaml'}"))
    out = run_fewshot("sweep", str(small), "--output-dir", str(tmp_path / "sweep"), "--executor", "submitit-local",
                      data_root=data_root)
    assert "1 cells run" in out.stdout
    assert len(done_markers(tmp_path / "sweep")) == 1
    assert list((tmp_path / "sweep" / "submitit").iterdir())  # submitit's job logs


def test_local_pool_executor_runs_cells(tmp_path, grid, interrupted):
    _, _, data_root, _, _, _ = interrupted
    small = tmp_path / "grid.yaml"
    small.write_text(grid.read_text().replace("episodes.seed: [0, 1]", "episodes.seed: [3]")
                     .replace("episodes.k_shot: [1, 2]", "episodes.k_shot: [1]")
                     .replace("config: base.yaml", f"config: {grid.parent / 'base.yaml'}"))
    out = run_fewshot("sweep", str(small), "--output-dir", str(tmp_path / "sweep"), "--executor", "local",
                      "--jobs", "2", data_root=data_root)
    assert "2 cells run" in out.stdout and len(done_markers(tmp_path / "sweep")) == 2


@pytest.mark.parametrize("body, expected", [
    ("config: base.yaml\ngrid:\n  episodes.colour: [1, 2]\n", "grid key 'episodes.colour'"),
    ("config: base.yaml\ngrid: {}\n", "empty grid"),
    ("config: base.yaml\n", "empty grid"),
    ("config: base.yaml\ngrid:\n  episodes.seed: []\n", "no list of values"),
    ("config: base.yaml\ngird:\n  episodes.seed: [1]\n", "unknown top-level key 'gird'"),
])
def test_bad_grids_are_clear_errors(tmp_path, grid, body, expected, capsys):
    bad = grid.parent / f"bad-{abs(hash(body))}.yaml"
    bad.write_text(body)
    assert main(["sweep", str(bad), "--output-dir", str(tmp_path / "out"), "--data-root", str(tmp_path)]) == 2
    assert expected in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_sweep_folder_of_another_grid_is_refused(interrupted, grid, tmp_path, capsys):
    _, sweep, data_root, _, _, _ = interrupted
    other = grid.parent / "other.yaml"
    other.write_text(grid.read_text().replace("episodes.seed: [0, 1]", "episodes.seed: [7, 8]"))
    before = sorted(path.name for path in (sweep / "cells").iterdir())
    assert main(["sweep", str(other), "--output-dir", str(sweep), "--data-root", str(data_root)]) == 2
    assert "sweep of another grid" in " ".join(capsys.readouterr().err.split())
    assert sorted(path.name for path in (sweep / "cells").iterdir()) == before


def test_unwritable_output_folder_is_a_clear_error(tmp_path, grid, capsys):
    # A folder under a plain file cannot be created, even by root (who ignores read-only modes).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["sweep", str(grid), "--output-dir", str(blocker / "sweep"), "--data-root", str(tmp_path)]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_a_failing_cell_is_reported_and_the_others_kept(interrupted, grid, tmp_path, capsys):
    _, _, data_root, _, _, _ = interrupted
    failing = tmp_path / "grid.yaml"
    failing.write_text(f"config: {grid.parent / 'base.yaml'}\ngrid:\n  episodes.n_way: [3, 40]\n")
    argv = ["sweep", str(failing), "--output-dir", str(tmp_path / "sweep"), "--data-root", str(data_root), "--quiet"]
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "1 sweep cell(s) failed" in err and "episodes.n_way=40" in err and "Traceback" not in err
    assert len(done_markers(tmp_path / "sweep")) == 1
    assert main(argv) == 2  # resumed: the finished cell is skipped, the broken one fails again
    assert len(done_markers(tmp_path / "sweep")) == 1


def test_slurm_without_slurm_is_a_clear_error(tmp_path, grid, capsys, monkeypatch):
    import fewshot.sweep.executors as executors
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    argv = ["sweep", str(grid), "--output-dir", str(tmp_path / "out"), "--executor", "slurm"]
    assert main(argv) == 2
    assert "needs SLURM's sbatch and srun" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists()


def test_the_bundled_demo_grid_has_eight_cells_of_one_pretraining():
    from fewshot.run.pretrained import pretrain_identity
    from fewshot.sweep import load_grid
    grid = load_grid(Path(__file__).resolve().parents[3] / "configs" / "grids" / "demo_heads.yaml")
    assert len(grid.cells) == 8 and len({cell.key for cell in grid.cells}) == 8

    class FakeDataset:  # the key's data part is the same for every cell; only the configs matter here
        base = val = type("Split", (), {"fingerprint": "f", "image_size": 32})()

    assert len({json.dumps(pretrain_identity(cell.config, FakeDataset())) for cell in grid.cells}) == 1
    assert {tuple(cell.config.episodes.k_shot) for cell in grid.cells} == {(1,), (5,)}
