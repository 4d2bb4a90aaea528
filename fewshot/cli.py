"""The `fewshot` command line: `fewshot --help` lists the commands."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.console import Console
from rich.table import Table

from episodes.errors import UserError, fail

if TYPE_CHECKING:
    from backbones.distributed import Ranks

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand: `arguments` adds its options, the decorated function runs it."""
    def add(run: Command) -> Command:
        _COMMANDS[name] = (help, arguments, run)
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
    from fewshot.validate import check_device
    return check_device(args.device) if args.device else ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_output_dir(args: argparse.Namespace, config_name: str, ranks: "Ranks | None" = None) -> Path:
    """`--output-dir`, else a new `runs/<config>-<timestamp>[-N]`; claimed for this run.

    Fails early if the folder cannot be written, is in use by another run, or holds another
    run's results (unless `--resume` or `--force`), see `fewshot.runlock`. Under `torchrun`
    rank 0 names, creates and locks the folder and every rank gets its path (the default name
    holds a timestamp, which would differ between processes).
    """
    from backbones.distributed import Ranks, gather_objects
    from fewshot.runlock import check_folder_free, claim_run_dir, unique_run_dir
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
        check_folder_free(chosen, resume=getattr(args, "resume", False), force=getattr(args, "force", False))
    return Path(gather_objects(chosen, ranks)[0])


def load_run_config(args: argparse.Namespace):
    """The config of a pipeline command: --config, overrides, and --seed."""
    from fewshot.config import load_config
    overrides = list(args.overrides) + ([f"episodes.seed={args.seed}"] if args.seed is not None else [])
    return load_config(args.config, overrides)


def console_for(args: argparse.Namespace) -> Console:
    """The console commands print to; `--quiet` silences it."""
    return Console(quiet=getattr(args, "quiet", False), stderr=False)


@command("datasets", "known datasets and whether each is found under the data root")
def run_datasets(args: argparse.Namespace) -> int:
    from episodes import available_datasets, get_dataset_source, resolve_data_root
    root = resolve_data_root(args.data_root)
    table = Table(title=f"Datasets under {root}")
    table.add_column("name")
    table.add_column("found", overflow="fold")
    table.add_column("expected layout", overflow="fold")
    for name in available_datasets():
        source = get_dataset_source(name)
        location = source.find(root, None)
        missing = "[yellow]built on first use[/]" if source.generated else "[red]no[/]"
        table.add_row(name, f"[green]yes[/] {location}" if location else missing, source.layout)
    console_for(args).print(table)
    return 0


@command("heads", "registered head optimizers, plug-ins included")
def run_heads(args: argparse.Namespace) -> int:
    import dataclasses
    from fewshot.heads import available_heads, head_class
    table = Table(title="Head optimizers")
    for column in ("name", "class", "settings (defaults)"):
        table.add_column(column)
    for name in available_heads():
        cls = head_class(name)
        defaults = cls.Config()
        settings = ", ".join(f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(defaults))
        table.add_row(name, f"{cls.__module__}.{cls.__qualname__}", settings)
    console_for(args).print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    import fewshot.commands  # noqa: F401  (registers the pipeline commands)
    from fewshot import __version__
    parser = argparse.ArgumentParser(prog="fewshot", description="Few-shot benchmark suite: frozen "
                                     "backbone features, interchangeable head optimizers.")
    parser.add_argument("--version", action="version", version=f"fewshot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, run) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-root", default=None,
                         help="dataset folder (default: $FEWSHOT_DATA, else ~/.cache/fewshot)")
        sub.add_argument("--quiet", action="store_true", help="print only errors")
        arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fewshot` console script."""
    from fewshot.errorpath import expected_failure, parse_arguments
    from fewshot.runlock import release_all
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except UserError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted:[/] no partial results were written.")
        return 130
    except OSError as error:  # a file the run writes or reads failed: expected, one paragraph
        Console(stderr=True).print(f"[bold red]error:[/] {expected_failure(error)}", highlight=False, soft_wrap=True)
        return 2
    finally:
        release_all()


if __name__ == "__main__":
    sys.exit(main())
