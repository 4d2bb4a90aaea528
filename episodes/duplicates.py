"""Images that appear in two splits, found by a hash of their pixels.

The same picture under a base class and a novel class lets the backbone see test images while
it pretrains (a known evaluation bug of few-shot benchmarks). Pixels are hashed after loading
and resizing, so a file copied under another name or class is found; a re-encoded or cropped
copy is not (that needs perceptual hashing).

Example:
    >>> for duplicate in cross_split_duplicates(dataset)[:3]:
    ...     print(duplicate)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from episodes.base import SPLIT_NAMES, FewShotDataset, Split


@dataclass(frozen=True)
class Duplicate:
    """One image found in two splits.

    Args:
        first, second: the split names (`base`, `val`, `novel`).
        first_class, second_class: the class of the image in each split.
        first_index, second_index: its index within each split.
    """

    first: str
    first_class: str
    first_index: int
    second: str
    second_class: str
    second_index: int

    def __str__(self) -> str:
        return (f"{self.first}/{self.first_class} image #{self.first_index} = "
                f"{self.second}/{self.second_class} image #{self.second_index}")


def image_hashes(split: Split) -> list[bytes]:
    """A 128-bit hash of every image's pixels (and shape), in split order."""
    images = split.images.contiguous().numpy()
    shape = repr(images.shape[1:]).encode()
    return [hashlib.blake2b(shape + image.tobytes(), digest_size=16).digest() for image in images]


def cross_split_duplicates(dataset: FewShotDataset) -> list[Duplicate]:
    """Every image of a later split (val, novel) whose pixels equal an image of an earlier split.

    Duplicates within one split are left alone: they do not leak between training and test.

    Args:
        dataset: the loaded dataset.
    """
    seen: dict[bytes, tuple[str, int]] = {}
    found: list[Duplicate] = []
    for name in SPLIT_NAMES:
        split: Split = getattr(dataset, name)
        own: dict[bytes, int] = {}
        for index, digest in enumerate(image_hashes(split)):
            if digest in seen:
                other, other_index = seen[digest]
                other_split: Split = getattr(dataset, other)
                found.append(Duplicate(other, other_split.class_names[int(other_split.labels[other_index])],
                                       other_index, name, split.class_names[int(split.labels[index])], index))
            own.setdefault(digest, index)
        for digest, index in own.items():
            seen.setdefault(digest, (name, index))
    return found
