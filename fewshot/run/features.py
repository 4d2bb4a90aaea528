"""Features of a split, computed once per (checkpoint, data, split, image size) and cached on disk."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from episodes import Split
from episodes.io import atomic_torch_save, fingerprint

CACHE_VERSION = 1
Extractor = Callable[[torch.Tensor], torch.Tensor]


def cache_key(*, checkpoint_sha256: str, split: Split, split_name: str, preprocessing: str) -> str:
    """Name of the cache entry of a split's features under one checkpoint."""
    identity = {"version": CACHE_VERSION, "checkpoint": checkpoint_sha256, "data": split.fingerprint,
                "split": split_name, "image_size": split.image_size, "preprocessing": preprocessing}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """A folder of feature tensors, each file complete or absent (atomic writes, checksums).

    Each entry stores its own key, so an entry copied or renamed under another key is refused.

    Args:
        folder: where entries live; None disables caching.
        log: called with one-line messages (cache hit, miss, corrupt entry).
    """

    def __init__(self, folder: Path | None, log: Callable[[str], None] = lambda message: None):
        self.folder = folder
        self.log = log

    def path(self, key: str) -> Path | None:
        return self.folder / f"features-{key}.pt" if self.folder else None

    def load(self, key: str) -> torch.Tensor | None:
        """The cached features, or None when absent or damaged (a damaged entry is removed)."""
        path = self.path(key)
        if path is None or not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features = entry["features"]
            if entry["checksum"] != fingerprint([features]):
                raise ValueError("checksum mismatch")
            if entry.get("key") != key:  # a valid entry copied or renamed: other features, other numbers
                raise ValueError(f"it holds the features of key {entry.get('key')!r}")
        except Exception as error:  # truncated, corrupt or foreign file: recompute it
            self.log(f"feature cache entry {path.name} is damaged ({error}); recomputing it")
            path.unlink(missing_ok=True)
            return None
        self.log(f"reusing cached features {path.name}")
        return features

    def store(self, key: str, features: torch.Tensor) -> None:
        path = self.path(key)
        if path is None:
            return
        if not torch.isfinite(features).all():  # a broken backbone's output is an error, never a cache entry
            return
        try:
            atomic_torch_save(path, {"features": features, "checksum": fingerprint([features]), "key": key})
        except OSError as error:  # a read-only cache slows the next run down but loses nothing
            self.log(f"could not write the feature cache {path} ({error.strerror}); continuing")

    def get_or_compute(self, key: str, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """(features, whether they came from the cache)."""
        cached = self.load(key)
        if cached is not None:
            return cached, True
        features = compute().float().cpu().contiguous()
        self.store(key, features)
        return features, False
