"""Config sections owned by `episodes`: which dataset, and which episodes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DatasetConfig:
    """The `dataset` section: which dataset, where it is, and its image size.

    Args:
        name: registered dataset (`glyphs`, `cifar_fs`, `mini_imagenet`, `image_folder`).
        path: explicit location (needed by `image_folder`); others look under the data root.
        image_size: square side the images are resized to (0: keep the native size).
        allow_duplicates: run even when the same image (same pixels) is in two splits; refused
            by default because it leaks test images into pretraining.
    """

    name: str = "glyphs"
    path: str | None = None
    image_size: int = 32
    allow_duplicates: bool = False


@dataclass
class EpisodesConfig:
    """The `episodes` section: the N-way K-shot episodes every head is fitted on.

    Args:
        n_way: classes per episode.
        k_shot: support images per class; a list runs each setting on its own episodes.
        n_query: query images per class.
        count: episodes per setting.
        seed: seed of the episode sets.
        split: the split evaluated (`novel`, or `val`).
    """

    n_way: int = 5
    k_shot: list[int] = field(default_factory=lambda: [1, 5])
    n_query: int = 15
    count: int = 600
    seed: int = 0
    split: str = "novel"
