"""Pretrained backbones kept under the data root and reused by every run with the same pretraining.

An entry is keyed by what decides the weights: the backbone and pretrain configs (whose seed
also draws the validation episodes that pick the best epoch) and the fingerprints of the base
and validation classes. It lives beside the feature cache, `<data_root>/checkpoints/<key>.pt`, with a
sidecar `<key>.json` holding the file's sha256; both are written atomically, the sidecar last,
so an entry is complete or absent. The device is not part of the key: a CPU and a GPU run of one
config share an entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from episodes import FewShotDataset
from backbones.checkpoint import read_checkpoint
from episodes.errors import UserError, fail
from episodes.io import atomic_write, atomic_write_text, file_sha256, sweep_temp_files
from fewshot.config import Config
from fewshot.run.runlock import folder_lock

if TYPE_CHECKING:
    from fewshot.run.pipeline import RunContext

STORE_VERSION = 2
# Pretrain settings that cannot change the weights (how often checkpoints are written).
NOT_IN_KEY = ("checkpoint_every",)
STORE_LOCK = ".fewshot-store.lock"


def pretrain_identity(config: Config, dataset: FewShotDataset) -> dict[str, Any]:
    """Everything that decides the pretrained weights, as plain data."""
    pretrain = {key: value for key, value in dataclasses.asdict(config.pretrain).items() if key not in NOT_IN_KEY}
    return {"version": STORE_VERSION, "backbone": dataclasses.asdict(config.backbone), "pretrain": pretrain,
            "data": [dataset.base.fingerprint, dataset.val.fingerprint], "image_size": dataset.base.image_size}


def pretrain_key(config: Config, dataset: FewShotDataset) -> str:
    """Name of the store entry for this config's pretraining on this data."""
    return identity_key(pretrain_identity(config, dataset))


def identity_key(identity: Any) -> str:
    """The store key of a pretraining identity (also recomputed from a sidecar, to check it)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


class PretrainedStore:
    """A folder of pretrained checkpoints, one per pretraining identity.

    Args:
        folder: `<data_root>/checkpoints`.
        log: called with one-line messages (reuse, damaged entry, unwritable store).
    """

    def __init__(self, folder: Path, log: Callable[[str], None] = lambda message: None):
        self.folder = Path(folder)
        self.log = log

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def lookup(self, key: str) -> Path | None:
        """The stored checkpoint, or None when absent, damaged (its sha256 no longer matches) or
        stored for another pretraining (the identity in its sidecar does not give `key`: an entry
        copied or renamed under another key)."""
        path, sidecar = self.path(key), self.folder / f"{key}.json"
        self.sweep()
        if not (path.is_file() and sidecar.is_file()):
            return None
        try:
            entry = json.loads(sidecar.read_text(encoding="utf-8"))
            if identity_key(entry["identity"]) != key:
                self.log(f"stored checkpoint {path} was stored for another pretraining (its {sidecar.name} "
                         "describes other settings or data); pretraining again")
                return None
            if file_sha256(path) == entry["sha256"]:
                return path
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self.log(f"stored checkpoint {path.name} is damaged; pretraining again")
        return None

    def sweep(self) -> None:
        """Remove the temp files of killed writes, unless another process is writing into the store now."""
        if not self.folder.is_dir():
            return
        try:
            with folder_lock(self.folder, STORE_LOCK, wait=False) as alone:
                if alone:
                    sweep_temp_files(self.folder)
        except OSError:  # a read-only store: nothing to sweep
            pass

    def store(self, key: str, checkpoint: Path, identity: dict[str, Any]) -> Path | None:
        """Copy `checkpoint` into the store; None (and a log line) when the store cannot be written.

        One writer at a time (a flock on the store): each clears the temp files that a killed
        write left behind before writing its own.
        """
        path = self.path(key)
        try:
            with folder_lock(self.folder, STORE_LOCK):
                sweep_temp_files(self.folder)
                with open(checkpoint, "rb") as source:
                    atomic_write(path, lambda target: shutil.copyfileobj(source, target))
                atomic_write_text(self.folder / f"{key}.json", json.dumps(
                    {"sha256": file_sha256(path), "identity": identity}, indent=2, sort_keys=True) + "\n")
        except OSError as error:  # a read-only data root costs the next run a pretraining, nothing else
            self.log(f"could not store the checkpoint in {self.folder} ({error.strerror}); continuing")
            return None
        return path


def link_or_copy(source: Path, target: Path) -> Path:
    """Put `source` at `target` (a hard link when possible), replacing what is there."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # other file system, or links not allowed
        with open(source, "rb") as stream:
            atomic_write(target, lambda out: shutil.copyfileobj(stream, out))
    return target


def reuse_or_pretrain(config: Config, dataset: FewShotDataset, run: "RunContext", pretrain: Callable[[], Path], *,
                      retrain: bool = False) -> Path:
    """The run's `checkpoint-best.pt`: linked from the store when this pretraining was done before.

    Args:
        config: the run config.
        dataset: the loaded dataset.
        run: output directory, data root, console, ranks.
        pretrain: trains the backbone into the run directory and returns its best checkpoint.
        retrain: pretrain even when the store holds this pretraining (the new one replaces it).
    """
    from backbones.distributed import barrier
    from backbones.pretrain import BEST
    from episodes import resolve_data_root

    store = PretrainedStore(resolve_data_root(run.data_root) / "checkpoints",
                            log=lambda message: run.console.print(f"[dim]{message}[/]"))
    key = pretrain_key(config, dataset)
    stored = None if retrain else store.lookup(key)
    if stored is not None:
        try:  # a stored file the safe loader refuses is named as the store's, with the way out
            read_checkpoint(stored)
        except UserError as error:
            raise fail(f"The stored pretrained checkpoint {str(stored)!r} cannot be used: {error}",
                       "Delete it, or pass --retrain to pretrain again and replace it.") from None
        run.console.print(f"reusing the pretrained backbone {stored} (same backbone, pretraining config and "
                          "data; --retrain pretrains again)", highlight=False)
        if run.ranks.is_main:
            link_or_copy(stored, run.output_dir / BEST)
        barrier(run.ranks)
        return run.output_dir / BEST
    best = pretrain()
    if run.ranks.is_main:
        store.store(key, best, pretrain_identity(config, dataset))
    return best
