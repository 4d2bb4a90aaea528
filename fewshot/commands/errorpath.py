"""One error path: every expected failure of a command becomes one paragraph and exit code 2.

`fewshot.cli.main` turns `UserError` (raised with `fail(...)` where a problem is detected) and
`OSError` (a file that could not be read or written, found only when touched) into that
paragraph; this module holds the pieces: argument parsing that accepts `key=value` overrides
after options, the paragraph of an `OSError`, and a check of an output file path.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from episodes.errors import fail


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; positionals (overrides, files) may come before, between or after options.

    `fewshot evaluate a=1 --checkpoint X b=2` is read as overrides `a=1 b=2`: the subcommand's own
    parser re-reads its arguments with `parse_intermixed_args` (which cannot run on the top-level
    parser, since that has subcommands).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    command = getattr(args, "command", None)
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    sub = subparsers[0].choices.get(command) if subparsers and command else None
    if sub is None:
        parser.error(f"unrecognized arguments: {' '.join(extras)} (run `fewshot --help` for the commands)")
    parsed = sub.parse_intermixed_args(argv[argv.index(command) + 1:])
    parsed.command = command
    return parsed


def expected_failure(error: OSError) -> str:
    """The one-paragraph message of a file operation that failed (disk full, no permission, a folder)."""
    reasons = {errno.EISDIR: "it is a folder", errno.ENOTDIR: "a part of the path is not a folder",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
               errno.ENOENT: "it does not exist"}
    where = error.filename or "a file"
    reason = reasons.get(error.errno, error.strerror or str(error))
    return (f"Could not read or write {str(where)!r}: {reason}. Files written before this point are complete "
            "(writes are atomic); nothing was half-written. Free the path (or the disk), fix its permissions, "
            "or choose another --output-dir / --output, then run the command again (with --resume to keep "
            "finished results).")


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an output file path that is a folder, or whose folder cannot be created or written.

    Args:
        path: where a command will write one file (e.g. `leaderboard --output`).
    """
    path = Path(path)
    if path.is_dir():
        raise fail(f"The output {str(path)!r} is a folder, not a file.",
                   f"Name a file, such as {str(path / 'leaderboard.md')!r}.")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise fail(f"The output {str(path)!r} cannot be written: {str(existing)!r} is a file, not a folder.",
                   "Choose an output path inside a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail(f"The output {str(path)!r} cannot be written: no permission to write in {str(existing)!r}.",
                   "Choose an output path in a folder you can write to.")
    return path
