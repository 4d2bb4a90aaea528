"""The `fewshot` command line: `fewshot --help` lists the commands (registered in `fewshot.commands`)."""
from __future__ import annotations

import argparse
import sys

from rich.console import Console

import fewshot.commands  # noqa: F401  (registers the commands)
from episodes.errors import UserError
from fewshot import __version__
from fewshot.commands.errorpath import expected_failure, parse_arguments
from fewshot.commands.options import COMMANDS
from fewshot.run.runlock import held_locks, release_all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot", description="Few-shot benchmark suite: frozen "
                                     "backbone features, interchangeable head optimizers.")
    parser.add_argument("--version", action="version", version=f"fewshot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-root", default=None,
                         help="dataset folder (default: $FEWSHOT_DATA, else ~/.cache/fewshot)")
        sub.add_argument("--quiet", action="store_true", help="print only errors")
        arguments(sub)
        sub.set_defaults(run=run, main=main)  # main: for commands that run others (sweep cells)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fewshot` console script."""
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    held_before = held_locks()  # a sweep runs its cells through main: a cell's end keeps the sweep's lock
    try:
        return args.run(args)
    except UserError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted:[/] files written before the interruption are complete "
                                   "(every write is atomic) and nothing was half-written; run the same command "
                                   "with --resume to keep the finished results.", highlight=False, soft_wrap=True)
        return 130
    except OSError as error:  # a file the run writes or reads failed: expected, one paragraph
        Console(stderr=True).print(f"[bold red]error:[/] {expected_failure(error)}", highlight=False, soft_wrap=True)
        return 2
    finally:
        release_all(keep=held_before)


if __name__ == "__main__":
    sys.exit(main())
