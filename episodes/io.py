"""Atomic writes and fingerprints shared by every package."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch


# Temp files of `atomic_write` end with this suffix, so a run can tell its own leftovers (a kill
# between create and rename) from anybody else's files and sweep them.
TEMP_SUFFIX = ".fewshot.tmp"


def sweep_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftover temp files of interrupted atomic writes directly in `folder`.

    Call it only while no other process writes into `folder` (a run holding the folder's lock).

    Returns:
        The files removed.
    """
    removed = []
    for candidate in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write a file so that readers see either the old file or the complete new one.

    Args:
        path: destination.
        write: called with a binary file object open on a temporary file in the same folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; results are meant to be shared
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        failed = _os_error(error)
        if failed is not None and failed.filename is None:  # a full disk: name the file, not "a file"
            raise OSError(failed.errno, failed.strerror, str(path)) from None
        raise
    return path


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write: itself, or the one torch.save wraps in a RuntimeError."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, RuntimeError) and isinstance(error.__context__, OSError):
        return error.__context__
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write `data` to `path`."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 `text` to `path`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | os.PathLike, obj: object) -> Path:
    """Atomically `torch.save` an object made of tensors and plain containers."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def tensor_digest(hasher: "hashlib._Hash", tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes into a hash."""
    tensor = tensor.detach().cpu().contiguous()
    hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    hasher.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def fingerprint(tensors: Iterable[torch.Tensor], strings: Iterable[str] = ()) -> str:
    """A short, stable hex digest of tensors and strings (16 hex digits of sha256)."""
    hasher = hashlib.sha256()
    for tensor in tensors:
        tensor_digest(hasher, tensor)
    for text in strings:
        hasher.update(text.encode("utf-8") + b"\0")
    return hasher.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """Full sha256 hex digest of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()
