"""Where a sweep's cells run: here one after another, here N at a time, or through submitit.

Every executor runs the same picklable `CellJob`, which runs `fewshot benchmark` for the cell
and marks it done only when that succeeded, so a job's success is recorded wherever it ran.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from episodes.errors import UserError, fail
from fewshot.sweep.folder import cell_dir, clear_unfinished, mark_done

EXECUTORS = ("sequential", "local", "slurm", "submitit-local")


@dataclass(frozen=True)
class CellJob:
    """One cell to run (plain data, so it pickles to other processes and cluster nodes).

    Args:
        main: the command line's entry point (`fewshot.cli.main`), given by the caller: a cell is a
            `fewshot benchmark` run, and the sweep sits below the command line.
        sweep_dir: the sweep folder.
        key: the cell's key (its folder `cells/<key>`).
        overrides: the overrides that make the cell (recorded in its marker).
        label: the cell's name in leaderboards.
        data_root: `--data-root` of the sweep (None: $FEWSHOT_DATA or ~/.cache/fewshot).
        device: `--device` of the sweep (None: cuda when available).
    """

    main: Callable[[list[str]], int]
    sweep_dir: str
    key: str
    overrides: tuple[str, ...]
    label: str
    data_root: str | None = None
    device: str | None = None

    def __call__(self) -> str:
        """Run the cell; raise when it fails. Returns the cell key."""
        folder = cell_dir(Path(self.sweep_dir), self.key)
        run = clear_unfinished(Path(self.sweep_dir), self.key)
        argv = ["benchmark", "--config", str(folder / "config.yaml"), "--output-dir", str(run), "--quiet",
                "--label", self.label]
        argv += ["--data-root", self.data_root] if self.data_root else []
        argv += ["--device", self.device] if self.device else []
        code = self.main(argv)
        if code != 0:
            raise RuntimeError(f"cell {self.key} ({self.label}) failed with exit code {code}")
        mark_done(Path(self.sweep_dir), self.key, self.overrides)
        return self.key


def _run(job: CellJob) -> str:
    return job()


def _limit_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


Outcome = BaseException | None


def run_sequential(jobs: Sequence[CellJob], **_: Any) -> list[Outcome]:
    """In this process, one after another."""
    outcomes: list[Outcome] = []
    for job in jobs:
        try:
            job()
            outcomes.append(None)
        except Exception as error:  # one failed cell does not stop the others
            outcomes.append(error)
    return outcomes


def run_local(jobs: Sequence[CellJob], *, workers: int = 2, **_: Any) -> list[Outcome]:
    """N worker processes on this machine, the CPU threads split between them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_limit_threads, initargs=(threads,)) as pool:
        futures = [pool.submit(_run, job) for job in jobs]
        return [future.exception() for future in futures]


def _run_submitit(jobs: Sequence[CellJob], executor: Any) -> list[Outcome]:
    try:
        with executor.batch():
            submitted = [executor.submit(_run, job) for job in jobs]
    except Exception as error:  # no sbatch, a refused job, bad parameters: nothing was run
        raise fail(f"submitit could not submit the sweep's cells ({type(error).__name__}: {error}).",
                   "Check that SLURM's sbatch works here and the grid's `submitit:` parameters, or use "
                   "--executor sequential or local.") from None
    outcomes: list[Outcome] = []
    for job in submitted:
        try:
            job.result()
            outcomes.append(None)
        except Exception as error:
            outcomes.append(error)
    return outcomes


def _submitit():
    try:
        import submitit
    except ImportError:
        raise fail("The slurm and submitit-local executors need the `submitit` package, which is not installed.",
                   'Install the extra: pip install -e ".[sweep]" (or use --executor sequential or local).') from None
    return submitit


def run_slurm(jobs: Sequence[CellJob], *, folder: Path, parameters: dict[str, Any], **_: Any) -> list[Outcome]:
    """One SLURM job per cell through submitit; `parameters` come from the grid's `submitit:`."""
    try:
        executor = _submitit().AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**parameters)
    except UserError:
        raise
    except Exception as error:
        raise fail(f"The grid's `submitit:` parameters are not valid for submitit ({error}).",
                   "Use submitit's AutoExecutor parameter names, e.g. slurm_partition, timeout_min, "
                   "gpus_per_node.") from None
    return _run_submitit(jobs, executor)


def run_submitit_local(jobs: Sequence[CellJob], *, folder: Path, **_: Any) -> list[Outcome]:
    """submitit's local executor: one process per cell on this machine, as a cluster would run them."""
    executor = _submitit().LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=60 * 24)
    return _run_submitit(jobs, executor)


def check_executor(name: str) -> None:
    """Fail before anything is written when the chosen executor cannot run here."""
    if name in ("slurm", "submitit-local"):
        _submitit()
    if name == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise fail("--executor slurm needs SLURM's sbatch and srun, which are not on this machine's PATH.",
                   "Run the sweep on a SLURM login node, or use --executor sequential, local or submitit-local.")


RUNNERS: dict[str, Callable[..., list[Outcome]]] = {
    "sequential": run_sequential, "local": run_local, "slurm": run_slurm, "submitit-local": run_submitit_local}
