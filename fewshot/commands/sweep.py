"""`fewshot sweep GRID.yaml`: run a grid of configs, one resumable cell each."""
from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.commands.options import command, console_for, resolve_output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fewshot sweep`."""
    from fewshot.sweep.executors import EXECUTORS
    parser.add_argument("grid", metavar="GRID.yaml", help="grid file: a base config, fixed overrides and a `grid:` "
                        "of config keys to lists of values")
    parser.add_argument("--output-dir", help="sweep folder (default: sweeps/<grid file name>); run the same "
                        "command again to resume it")
    parser.add_argument("--executor", choices=EXECUTORS, default="sequential",
                        help="sequential: here, one cell after another (default); local: --jobs cells at a time "
                             "here; slurm: one SLURM job per cell through submitit (the grid's `submitit:` holds "
                             "its parameters); submitit-local: submitit's local executor")
    parser.add_argument("--jobs", type=int, default=2, help="cells at a time for --executor local (default 2)")
    parser.add_argument("--device", default=None, help="torch device of every cell (default: cuda if available)")


@command("sweep", "run every cell of a grid of config overrides (resumable; local or SLURM)", add_arguments)
def run_sweep_command(args: argparse.Namespace) -> int:
    """Check the grid and the folder before any cell runs."""
    from episodes.errors import fail
    from fewshot.sweep import collect, load_grid, run_sweep
    from fewshot.sweep.runner import check_outcome
    if args.jobs < 1:
        raise fail(f"--jobs must be at least 1, got {args.jobs}.", "Pass --jobs 1 or more.")
    from fewshot.sweep.executors import check_executor
    grid = load_grid(args.grid)
    check_executor(args.executor)
    args.output_dir = args.output_dir or str(Path("sweeps") / Path(args.grid).stem)
    sweep_dir = resolve_output_dir(args, Path(args.grid).stem, kind="sweep")
    console = console_for(args)
    outcome = run_sweep(grid, sweep_dir, args.main, executor=args.executor, workers=args.jobs, data_root=args.data_root,
                        device=args.device, console=console)
    if outcome.ran or outcome.skipped:
        collect(sweep_dir, console)
    check_outcome(outcome)
    console.print(f"{len(outcome.ran)} cells run, {len(outcome.skipped)} skipped (finished before); "
                  f"`fewshot leaderboard {sweep_dir}` collects them", highlight=False)
    return 0
