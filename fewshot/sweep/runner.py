"""Run a sweep: skip finished cells, pretrain each distinct backbone once, run the rest, collect.

Cells whose pretraining (backbone, pretrain config, data) is equal share one checkpoint: the
first cell of each such group that the store does not hold yet runs alone first (it pretrains
and stores the checkpoint, `fewshot.run.pretrained`); the other cells run after it and reuse it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from episodes import load_dataset, resolve_data_root
from episodes.errors import fail
from fewshot.run.pretrained import PretrainedStore, pretrain_key
from fewshot.sweep.executors import RUNNERS, CellJob
from fewshot.sweep.folder import finished_results, is_done, prepare
from fewshot.sweep.grid import Cell, Grid


@dataclass
class SweepOutcome:
    """What a sweep did: cell keys skipped (done before), run now, failed, and not run."""

    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)


def _pretraining_groups(cells: list[Cell], data_root: str | None) -> dict[str, list[Cell]]:
    """Pending cells grouped by pretraining key, in grid order."""
    datasets: dict[tuple, object] = {}
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        settings = cell.config.dataset
        identity = (settings.name, settings.path, settings.image_size)
        if identity not in datasets:
            datasets[identity] = load_dataset(settings.name, data_root, settings.path, settings.image_size)
        groups.setdefault(pretrain_key(cell.config, datasets[identity]), []).append(cell)
    return groups


def run_sweep(grid: Grid, sweep_dir: Path, main: Callable[[list[str]], int], *, executor: str = "sequential",
              workers: int = 2,
              data_root: str | None = None, device: str | None = None,
              console: Console | None = None) -> SweepOutcome:
    """Run every unfinished cell of `grid` in `sweep_dir`.

    Args:
        grid: the loaded grid.
        sweep_dir: the sweep folder (created by the caller, writable).
        main: runs a command line and returns its exit code (`fewshot.cli.main`); each cell is a
            `fewshot benchmark` run through it.
        executor: one of `fewshot.sweep.executors.EXECUTORS`.
        workers: processes at a time for the `local` executor.
        data_root: data root passed to every cell.
        device: torch device passed to every cell.
        console: where progress lines go.
    """
    console = console or Console(quiet=True)
    prepare(sweep_dir, grid)
    outcome = SweepOutcome(skipped=[cell.key for cell in grid.cells if is_done(sweep_dir, cell.key)])
    pending = [cell for cell in grid.cells if cell.key not in outcome.skipped]
    console.print(f"{len(grid.cells)} cells: {len(outcome.skipped)} finished before (skipped), "
                  f"{len(pending)} to run with the {executor} executor", highlight=False)
    store = PretrainedStore(resolve_data_root(data_root) / "checkpoints")
    groups = _pretraining_groups(pending, data_root)
    leaders = [cells[0] for key, cells in groups.items() if store.lookup(key) is None]
    followers = [cell for cells in groups.values() for cell in cells if cell not in leaders]
    run = RUNNERS[executor]
    options = {"workers": workers, "folder": Path(sweep_dir) / "submitit", "parameters": grid.submitit}

    def jobs(cells: list[Cell]) -> list[CellJob]:
        return [CellJob(main, str(sweep_dir), cell.key, cell.overrides, cell.label, data_root, device) for cell in cells]

    if leaders:
        console.print(f"pretraining {len(leaders)} backbone(s) first (one per distinct pretraining)")
    for cell, error in zip(leaders, run(jobs(leaders), **options) if leaders else []):
        _record(outcome, cell, error)
    failed_groups = {key for key, cells in groups.items() if cells[0].key in outcome.failed}
    outcome.not_run = [cell.key for key in failed_groups for cell in groups[key][1:]]
    followers = [cell for cell in followers if cell.key not in outcome.not_run]
    for cell, error in zip(followers, run(jobs(followers), **options) if followers else []):
        _record(outcome, cell, error)
    return outcome


def _record(outcome: SweepOutcome, cell: Cell, error: BaseException | None) -> None:
    if error is None:
        outcome.ran.append(cell.key)
    else:
        outcome.failed[cell.key] = f"{cell.label}: {error}"


def collect(sweep_dir: Path, console: Console) -> None:
    """Write the sweep's leaderboard.md and report.html from its finished cells."""
    from episodes.io import atomic_write_text
    from fewshot.report.leaderboard import merge, to_markdown
    from fewshot.report import write_report
    from fewshot.results.document import find_results_files, read_results
    paths = find_results_files(finished_results([sweep_dir]))
    docs = [read_results(path) for path in paths]
    sources = [str(path) for path in paths]
    atomic_write_text(Path(sweep_dir) / "leaderboard.md", to_markdown(merge(docs, sources=sources,
                                                                            allow_mismatch=True)))
    write_report(docs, Path(sweep_dir) / "report.html", sources=sources, title=f"sweep {Path(sweep_dir).name}")
    console.print(f"leaderboard.md and report.html of {len(docs)} results files written to {sweep_dir}",
                  highlight=False)


def check_outcome(outcome: SweepOutcome) -> None:
    """Fail (exit code 2) naming the failed cells, after the others have run."""
    if outcome.failed or outcome.not_run:
        listing = "; ".join(f"{key} ({reason})" for key, reason in outcome.failed.items())
        raise fail(f"{len(outcome.failed)} sweep cell(s) failed: {listing}"
                   + (f"; {len(outcome.not_run)} cell(s) sharing their pretraining were not run" if outcome.not_run
                      else "") + ". The finished cells are kept.",
                   "Fix the cause (each cell's error is printed above), then run the same `fewshot sweep` "
                   "command again: it resumes, running only the unfinished cells.")
