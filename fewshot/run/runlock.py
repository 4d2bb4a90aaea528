"""A run folder has one owner at a time: a lock file with the owner's pid and host.

`claim_run_dir` takes the lock (created with O_EXCL, so two processes cannot both win), takes
over a lock whose process is dead (same host only: a pid means nothing on another machine),
and sweeps the temp files that a killed atomic write of the suite left behind. The lock goes
away when the run ends (normally, by an error, or by Ctrl-C); a `kill -9` leaves it, and the
next run finds it stale.

Example:
    >>> claim_run_dir(Path("runs/demo"), command="evaluate")   # UserError if another run holds it
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import time
from pathlib import Path

from episodes.errors import UserError, fail
from episodes.io import sweep_temp_files
from fewshot.results.document import read_results

LOCK_NAME = ".fewshot-run.lock"
RUN_OUTPUTS = ("results.csv", "leaderboard.md", "accuracy.png", "report.html")  # files every evaluation run writes
_held: dict[Path, int] = {}  # lock files this process holds -> the pid that took them


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def read_lock(folder: Path) -> dict | None:
    """The owner recorded in `folder`'s lock file, or None when the folder is not locked."""
    try:
        owner = json.loads((folder / LOCK_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written this instant, or damaged: treated as held by an unknown owner
    return owner if isinstance(owner, dict) else {}


def _stale(owner: dict) -> bool:
    pid = owner.get("pid")
    return (owner.get("host") == socket.gethostname() and isinstance(pid, int)
            and not _pid_alive(pid))


def claim_run_dir(folder: Path, command: str) -> Path:
    """Make this process the owner of `folder` until it exits; sweep stale temp files.

    Args:
        folder: an existing run folder.
        command: what runs (written into the lock for whoever finds it).

    Raises:
        UserError: another live run holds the folder.
    """
    lock = folder / LOCK_NAME
    if _held.get(lock.resolve()) == os.getpid():
        return lock  # this process claimed it already (benchmark = pretrain + evaluate)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
    for _ in range(3):  # a stale lock is removed, then taken; another process may win that race
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = read_lock(folder)
            if owner is None:
                continue  # released between our open and our read
            if _stale(owner):
                lock.unlink(missing_ok=True)
                continue
            who = (f"process {owner.get('pid')} on {owner.get('host')} ({owner.get('command')}, started "
                   f"{owner.get('started')})" if owner else "another process")
            raise fail(f"The output directory {str(folder)!r} is in use by {who}: two runs writing one folder "
                       "would mix or lose their results.",
                       f"Wait for that run to finish, or pass another --output-dir; if no such run exists "
                       f"(the machine rebooted, or it ran elsewhere), delete {str(lock)!r}.") from None
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise fail(f"The output directory {str(folder)!r} cannot be written ({error.strerror}).",
                           "Pass --output-dir with a folder you can write to.") from None
            raise
        with os.fdopen(fd, "wb") as handle:
            handle.write(record)
        _held[lock.resolve()] = os.getpid()
        atexit.register(release_run_dir, folder)
        sweep_temp_files(folder)
        return lock
    raise fail(f"Could not take the lock of the output directory {str(folder)!r}: other runs keep claiming it.",
               "Give each run its own --output-dir.")


def release_run_dir(folder: Path) -> None:
    """Remove the lock if this process holds it (idempotent; forked children never release)."""
    lock = (folder / LOCK_NAME).resolve()
    if _held.get(lock) == os.getpid():
        del _held[lock]
        lock.unlink(missing_ok=True)


def release_all() -> None:
    """Release every run folder this process holds (the CLI calls it when a command ends)."""
    for lock in list(_held):
        release_run_dir(lock.parent)


def unique_run_dir(parent: Path, name: str) -> Path:
    """Create and return `parent/name`, or `name-2`, `name-3`, ... when taken (two runs in one second).

    `mkdir` without `exist_ok` is atomic, so two processes never get the same folder.
    """
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise fail(f"Too many run folders named {name}-* under {str(parent)!r}.", "Pass --output-dir.")


def check_folder_free(folder: Path, *, resume: bool, force: bool) -> None:
    """Refuse a folder holding results of an earlier run unless resuming it or told to replace them.

    With `resume`, each results file is kept only if it matches this run (see `claimed_results`).
    """
    blocked = [name for name in RUN_OUTPUTS if (folder / name).is_dir()]
    if blocked:  # found now, not after the results files were written
        raise fail(f"The run would write {str(folder / blocked[0])!r}, but that is a folder.",
                   "Move it away, or pass another --output-dir.")
    found = sorted(path.name for path in folder.glob("results-*.json"))
    if found and not (resume or force):
        raise fail(f"The output directory {str(folder)!r} already holds the results of another run "
                   f"({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}).",
                   "Pass another --output-dir; or --resume to continue that run (files are kept only where "
                   "config, checkpoint and episodes match); or --force to replace them.")


def claimed_results(path: Path, identity: dict[str, dict], *, resume: bool, force: bool) -> dict | None:
    """The results document at `path` if this run may keep it; None if absent or to be replaced.

    Args:
        path: a results file this run is about to write.
        identity: sections and fields that must match (`{"backbone": {"checkpoint_sha256": ...}, ...}`).
        resume: keep a matching file instead of recomputing it.
        force: replace a file from another run instead of refusing.

    Raises:
        UserError: the file comes from another run (other checkpoint, seed, config or episodes) and
            `force` is off; or it fails verification (edited or damaged).
    """
    if not path.exists():
        return None
    try:
        doc = read_results(path)
    except UserError:
        if force:
            return None
        raise
    differ = [f"{section}.{key}" for section, fields in identity.items() for key, value in fields.items()
              if not isinstance(doc.get(section), dict) or doc[section].get(key) != value]
    if not differ:
        return doc if resume else None
    if force:
        return None
    raise fail(f"{str(path)!r} holds results of another run (its {', '.join(differ[:3])} differ from this run's), "
               "and this run would replace them.",
               "Pass another --output-dir, or --force to replace them.")
