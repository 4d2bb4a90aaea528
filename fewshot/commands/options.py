"""What the commands share: the command registry (`@command`), the options of the commands that
run the pipeline, and how those options resolve (device, output folder, config, console).

Example:
    >>> @command("hello", "print a greeting")
    ... def run_hello(args: argparse.Namespace) -> int:
    ...     console_for(args).print("hello")
    ...     return 0
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.console import Console

from episodes.errors import fail

if TYPE_CHECKING:
    from backbones.distributed import Ranks

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand: `arguments` adds its options, the decorated function runs it."""
    def add(run: Command) -> Command:
        COMMANDS[name] = (help, arguments, run)
        return run
    return add


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run the pipeline."""
    parser.add_argument("--config", help="YAML config (default: the built-in demo)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, values parsed as YAML scalars")
    parser.add_argument("--output-dir", help="run directory (default: runs/<config>-<timestamp>)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--seed", type=int, default=None, help="overrides episodes.seed")
    parser.add_argument("--force", action="store_true",
                        help="replace results files of another run in --output-dir instead of refusing")


def resolve_device(args: argparse.Namespace) -> str:
    """`--device`, else cuda when available, else cpu."""
    import torch
    from fewshot.run.validate import check_device
    return check_device(args.device) if args.device else ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_output_dir(args: argparse.Namespace, config_name: str, ranks: "Ranks | None" = None,
                       kind: str = "run") -> Path:
    """`--output-dir`, else a new `runs/<config>-<timestamp>[-N]`; claimed for this run.

    Fails early if the folder cannot be written, is in use by another run, holds another
    run's results (unless `--resume` or `--force`), or is not a folder of this `kind` ("run" or
    "sweep"), see `fewshot.run.runlock.check_folder_free`. Under `torchrun`
    rank 0 names, creates and locks the folder and every rank gets its path (the default name
    holds a timestamp, which would differ between processes).
    """
    from backbones.distributed import Ranks, gather_objects
    from fewshot.run.runlock import check_folder_free, claim_run_dir, unique_run_dir
    ranks = ranks or Ranks()
    chosen = None
    if ranks.is_main:
        try:
            if args.output_dir:
                chosen = Path(args.output_dir)
                chosen.mkdir(parents=True, exist_ok=True)
            else:
                chosen = unique_run_dir(Path("runs"), f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}")
            probe = chosen / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise fail(f"The output directory {str(chosen or args.output_dir or 'runs')!r} cannot be written "
                       f"({error.strerror}).", "Pass --output-dir with a folder you can write to.") from None
        claim_run_dir(chosen, command=str(getattr(args, "command", None)))
        check_folder_free(chosen, resume=getattr(args, "resume", False), force=getattr(args, "force", False),
                          kind=kind)
    return Path(gather_objects(chosen, ranks)[0])


def load_run_config(args: argparse.Namespace):
    """The config of a pipeline command: --config, overrides, and --seed."""
    from fewshot.config import load_config
    overrides = list(args.overrides) + ([f"episodes.seed={args.seed}"] if args.seed is not None else [])
    return load_config(args.config, overrides)


def console_for(args: argparse.Namespace) -> Console:
    """The console commands print to; `--quiet` silences it."""
    return Console(quiet=getattr(args, "quiet", False), stderr=False)
