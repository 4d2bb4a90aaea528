"""A run folder has one owner at a time: a lock file with the owner's pid and host.

`claim_run_dir` opens the lock file and takes an exclusive `flock` on it, which the kernel
drops when the owner dies however it dies, so only one process at a time can look at the lock,
judge it stale and take it over: the takeover is atomic (4 processes racing for a stale lock
could all win when it was "read, judge, unlink, create"). The file also records the owner (pid,
host, command) for the message of whoever is refused; a record of a live process on this host
(or of any process on another host: a pid means nothing elsewhere) still holds the folder.
Claiming sweeps the temp files that a killed atomic write of the suite left behind. The lock
goes away when the command that took it ends (normally, by an error, or by Ctrl-C); a `kill -9`
leaves the file, and the next run finds it stale.

Example:
    >>> claim_run_dir(Path("runs/demo"), command="evaluate")   # UserError if another run holds it
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from episodes.errors import UserError, fail
from episodes.io import sweep_temp_files
from fewshot.results.document import read_results

LOCK_NAME = ".fewshot-run.lock"
RUN_OUTPUTS = ("results.csv", "leaderboard.md", "accuracy.png", "report.html")  # files every evaluation run writes
# What a run writes besides its results files; `--force` removes them with the results they describe.
DERIVED_OUTPUTS = (*RUN_OUTPUTS, "volume.png")
SWEEP_MANIFEST = "sweep.json"  # the mark of a sweep folder (`fewshot.sweep.folder.MANIFEST`)
_held: dict[Path, tuple[int, int]] = {}  # lock files this process holds -> (pid that took them, open fd)


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


def _parse_owner(text: str) -> dict:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}  # being written this instant, or damaged: an unknown owner
    return owner if isinstance(owner, dict) else {}


def read_lock(folder: Path) -> dict | None:
    """The owner recorded in `folder`'s lock file, or None when the folder is not locked."""
    try:
        return _parse_owner((folder / LOCK_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return {}


def _holds(owner: dict) -> bool:
    """Whether a recorded owner still holds the folder though nobody holds the file's flock: a live
    process on this host that took the lock without one, or any process of another host."""
    if not owner:
        return False  # empty or damaged record under no flock: its writer died while writing it
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname():
        return True
    return isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)


def _in_use(folder: Path, owner: dict | None) -> UserError:
    lock = folder / LOCK_NAME
    who = (f"process {owner.get('pid')} on {owner.get('host')} ({owner.get('command')}, started "
           f"{owner.get('started')})" if owner else "another process")
    return fail(f"The output directory {str(folder)!r} is in use by {who}: two runs writing one folder "
                "would mix or lose their results.",
                f"Wait for that run to finish, or pass another --output-dir; if no such run exists "
                f"(the machine rebooted, or it ran elsewhere), delete {str(lock)!r}.")


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not unlinked or replaced meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def claim_run_dir(folder: Path, command: str) -> Path:
    """Make this process the owner of `folder` until it exits; sweep stale temp files.

    Args:
        folder: an existing run folder.
        command: what runs (written into the lock for whoever finds it).

    Raises:
        UserError: another live run holds the folder.
    """
    lock = folder / LOCK_NAME
    if _held.get(lock.resolve(), (None,))[0] == os.getpid():
        return lock  # this process claimed it already (benchmark = pretrain + evaluate)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
    for _ in range(100):  # retried only when the owner released the file between our open and our flock
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise fail(f"The output directory {str(folder)!r} cannot be written ({error.strerror}).",
                           "Pass --output-dir with a folder you can write to.") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = read_lock(folder)
            if owner is None:
                continue  # released between our open and our flock
            raise _in_use(folder, owner) from None
        if not _same_file(fd, lock):  # we locked a file its owner unlinked on release
            os.close(fd)
            continue
        owner = _parse_owner(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
        if _holds(owner):
            os.close(fd)
            raise _in_use(folder, owner)
        os.ftruncate(fd, 0)  # a stale record (its process died): ours replaces it
        os.pwrite(fd, record, 0)
        _held[lock.resolve()] = (os.getpid(), fd)
        atexit.register(release_run_dir, folder)
        sweep_temp_files(folder)
        return lock
    raise fail(f"Could not take the lock of the output directory {str(folder)!r}: other runs keep claiming it.",
               "Give each run its own --output-dir.")


def release_run_dir(folder: Path) -> None:
    """Remove the lock if this process holds it (idempotent; forked children never release)."""
    lock = (folder / LOCK_NAME).resolve()
    pid, fd = _held.get(lock, (None, -1))
    if pid == os.getpid():
        del _held[lock]
        with contextlib.suppress(OSError):  # a folder gone read-only keeps its lock file: stale, taken over later
            lock.unlink(missing_ok=True)
        os.close(fd)  # after the unlink: whoever opened the old file meanwhile sees it is gone


def held_locks() -> frozenset[Path]:
    """The lock files this process holds now (see `release_all`)."""
    return frozenset(lock for lock, (pid, _) in _held.items() if pid == os.getpid())


def release_all(keep: frozenset[Path] = frozenset()) -> None:
    """Release every run folder this process holds but those in `keep`.

    `fewshot.cli.main` calls it when a command ends with the locks held when the command began as
    `keep`: a sweep runs its cells through `main` in this process, and a cell's end must not
    release the sweep's folder.
    """
    for lock in list(_held):
        if lock not in keep:
            release_run_dir(lock.parent)


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `folder/name`: one writer at a time in a shared folder such as the
    store of pretrained checkpoints. The kernel drops it if the holder dies.

    Args:
        folder: the shared folder (created if missing).
        name: the lock file's name in it.
        wait: wait for the lock; else yield False at once when another process holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def unique_run_dir(parent: Path, name: str) -> Path:
    """Create and return `parent/name`, or `name-2`, `name-3`, ... when taken (two runs in one second).

    `mkdir` without `exist_ok` is atomic, so two processes never get the same folder. `name` (the
    config's name) must be one plain folder name: `../x` or `/tmp/x` would put the run outside `parent`.
    """
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or "\0" in name:
        raise fail(f"The config name {name!r} cannot name a run folder: the default --output-dir is "
                   f"{str(parent)}/<name>-<time>, and a name with a path separator, '..' or nothing in it would "
                   f"put the run elsewhere.",
                   "Set `name` to a plain name such as `name=my_run` (letters, digits, '-', '_', '.'), "
                   "or pass --output-dir.")
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise fail(f"Too many run folders named {name}-* under {str(parent)!r}.", "Pass --output-dir.")


def _listing(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def check_folder_free(folder: Path, *, resume: bool, force: bool, kind: str = "run") -> None:
    """Refuse a folder this command must not write into; with `force`, clear the results it replaces.

    A run folder is refused when it is a sweep folder, when it holds results of an earlier run
    (unless resuming it, or `force`), and when it holds files a run writes (leaderboard.md,
    results.csv, ...) that no run wrote there (no results beside them: the user's own files),
    unless `force`. With `force` every results file and what was made from them is removed now,
    after every check passed, so the folder never mixes two runs. With `resume`, each results file
    is kept only if it matches this run (see `claimed_results`). A sweep folder (`kind="sweep"`)
    is refused when it holds a run's files instead.

    Args:
        folder: the claimed output folder.
        resume: the command continues the run in the folder.
        force: replace what another run left there.
        kind: "run" or "sweep": what the command writes into the folder.
    """
    found = sorted(path.name for path in folder.glob("results-*.json"))
    outputs = sorted(name for name in DERIVED_OUTPUTS if (folder / name).exists())
    if kind == "sweep":
        run_files = found + sorted(path.name for path in folder.glob("checkpoint-*.pt"))
        if run_files or (outputs and not (folder / SWEEP_MANIFEST).is_file()):
            raise fail(f"The folder {str(folder)!r} is not a sweep folder: it holds {_listing(run_files or outputs)}, "
                       "which the sweep's own leaderboard and report would overwrite or mix with its cells.",
                       "Pass --output-dir with a new folder (or the folder of the same sweep, to resume it).")
        return
    if (folder / SWEEP_MANIFEST).is_file():
        raise fail(f"The output directory {str(folder)!r} is a sweep folder ({SWEEP_MANIFEST}): a run written "
                   "into it would overwrite the sweep's leaderboard.md and report.html.",
                   "Pass another --output-dir; a sweep's cells have their own run folders.")
    blocked = [name for name in RUN_OUTPUTS if (folder / name).is_dir()]
    if blocked:  # found now, not after the results files were written
        raise fail(f"The run would write {str(folder / blocked[0])!r}, but that is a folder.",
                   "Move it away, or pass another --output-dir.")
    if found and not (resume or force):
        raise fail(f"The output directory {str(folder)!r} already holds the results of another run "
                   f"({_listing(found)}).",
                   "Pass another --output-dir; or --resume to continue that run (files are kept only where "
                   "config, data, checkpoint and episodes match); or --force to replace them.")
    if outputs and not found and not force:
        raise fail(f"The output directory {str(folder)!r} holds {_listing(outputs)} but no results files, so no "
                   "run of fewshot wrote them there; this run would overwrite them.",
                   "Pass another --output-dir, or --force to replace those files.")
    if force:
        for name in found + outputs:
            (folder / name).unlink(missing_ok=True)


def claim_output_folder(path: Path, command: str) -> None:
    """Claim the folder a command writes `path` into when it is a run or sweep folder (it holds
    results, a sweep manifest or a lock): `fewshot report` and `leaderboard --output` must not
    write into a folder that a live run holds.

    Args:
        path: the file the command will write.
        command: named in the lock.
    """
    folder = Path(path).parent
    if folder.is_dir() and ((folder / LOCK_NAME).exists() or (folder / SWEEP_MANIFEST).is_file()
                            or any(folder.glob("results-*.json"))):
        claim_run_dir(folder, command=command)


def foreign_results(folder: Path, planned: list[str]) -> list[str]:
    """Results files in `folder` that this run will not write (other shot settings, other ways).

    Args:
        folder: the run folder.
        planned: the names of the results files this run writes.
    """
    return sorted(path.name for path in folder.glob("results-*.json") if path.name not in planned)


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
