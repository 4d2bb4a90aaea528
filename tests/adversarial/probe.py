"""The adversarial probe as a table: each case is a command, optionally after an edit of files,
with the outcome it must have.

A case passes when the command exits with the expected code, prints no traceback, says what it
must say (whitespace folded, so a wrapped paragraph still matches), and, where a refusal is
expected, leaves the files it names byte for byte as they were. Commands run in this process
through `fewshot.cli.main`, so a refusal that must come before pretraining is caught by the
folder snapshot (no checkpoint, no results written) rather than by a clock.

Example:
    >>> Probe("negative count", ("benchmark", "--config", "{config}", "episodes.count=-5"),
    ...       says=("episodes.count is -5",), unchanged=("runs",))
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from fewshot.cli import main


@dataclass(frozen=True)
class Probe:
    """One case.

    Args:
        name: what the case tries, in words (the test id).
        argv: the `fewshot` command line; `{root}` and any key of the `places` given to `run_probe`
            are filled in (`{config}`, `{checkpoint}`, `{run}`, ...).
        setup: edits files before the command (gets the sandbox root and the places).
        exit_code: the exit code it must end with (2: refused with one paragraph).
        says: fragments the output (stdout and stderr) must contain (templates like `argv`).
        never_says: fragments it must not contain.
        unchanged: paths under the sandbox (templates like `argv`) whose files must not change.
    """

    name: str
    argv: tuple[str, ...]
    setup: Callable[[Path, dict[str, Path]], None] | None = None
    exit_code: int = 2
    says: tuple[str, ...] = ()
    never_says: tuple[str, ...] = ("Traceback",)
    unchanged: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of `path` itself), by relative name; {} if absent."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file() and not f.name.startswith(".fewshot-run.lock")}


def run_probe(probe: Probe, root: Path, places: dict[str, Path], capsys: pytest.CaptureFixture,
              after: Callable[[Path, dict[str, Path]], None] | None = None) -> str:
    """Run one case in the sandbox `root`; assert its outcome, then `after` (a check of the files the
    command left); return its folded output."""
    fill = {"root": str(root), **{key: str(value) for key, value in places.items()}}
    if probe.setup:
        probe.setup(root, places)
    watched = {template: snapshot(Path(template.format(**fill))) for template in probe.unchanged}
    capsys.readouterr()
    code = main([part.format(**fill) for part in probe.argv])
    out, err = capsys.readouterr()
    text = " ".join((out + "\n" + err).split())
    assert code == probe.exit_code, f"{probe.name}: exit {code}, expected {probe.exit_code}:\n{out}\n{err}"
    for fragment in (template.format(**fill) for template in probe.says):
        assert " ".join(fragment.split()) in text, f"{probe.name}: output lacks {fragment!r}:\n{text}"
    for fragment in probe.never_says:
        assert fragment not in text, f"{probe.name}: output has {fragment!r}:\n{text}"
    for template, before in watched.items():
        assert snapshot(Path(template.format(**fill))) == before, f"{probe.name}: {template} changed"
    if after is not None:
        after(root, places)
    return text
