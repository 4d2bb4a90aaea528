"""What every dataset gives: three class-disjoint splits of uint8 images."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from episodes.errors import fail
from episodes.io import fingerprint

SPLIT_NAMES = ("base", "val", "novel")
SPLIT_ALIASES = {"train": "base", "base": "base", "val": "val", "validation": "val",
                 "test": "novel", "novel": "novel"}


@dataclass(frozen=True, eq=False)
class Split:
    """One split: images, labels and the names of its classes.

    Args:
        images: uint8 tensor [N, 3, H, W].
        labels: int64 tensor [N] with values in [0, len(class_names)).
        class_names: the classes, in label order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be [N] like images")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.class_names):
            raise ValueError("labels must lie in [0, len(class_names))")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def class_counts(self) -> torch.Tensor:
        """Images per class, [num_classes]."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the images, labels and class order: the same data gives the same value."""
        return fingerprint([self.images, self.labels], self.class_names)


@dataclass(frozen=True, eq=False)
class FewShotDataset:
    """A dataset as the suite sees it: base classes to pretrain on, val and novel to evaluate.

    Args:
        name: registry name (`glyphs`, `cifar_fs`, ...).
        base: the training classes.
        val: the validation classes.
        novel: the test classes.
    """

    name: str
    base: Split
    val: Split
    novel: Split

    def __post_init__(self) -> None:
        for a, b in (("base", "val"), ("base", "novel"), ("val", "novel")):
            shared = set(getattr(self, a).class_names) & set(getattr(self, b).class_names)
            if shared:
                raise fail(f"Dataset {self.name!r} has classes in both its {a} and {b} splits: "
                           f"{sorted(shared)[:5]}.",
                           "Fix the class lists or folders so that the splits are disjoint.")

    def split(self, name: str) -> Split:
        """The split called `name` (`base`/`train`, `val`/`validation`, `novel`/`test`)."""
        if name not in SPLIT_ALIASES:
            raise fail(f"Unknown split {name!r}.", f"Use one of {sorted(SPLIT_ALIASES)}.")
        return getattr(self, SPLIT_ALIASES[name])


def resize_images(images: torch.Tensor, size: int, batch: int = 1024) -> torch.Tensor:
    """Resize uint8 [N, 3, H, W] images to size x size (bilinear, antialiased), in batches."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], batch):
        chunk = images[start:start + batch].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out[start:start + batch] = chunk.round().clamp_(0, 255).to(torch.uint8)
    return out


def resized(dataset: FewShotDataset, image_size: int) -> FewShotDataset:
    """`dataset` with every split at image_size x image_size (itself when already so, or size 0)."""
    splits = [dataset.base, dataset.val, dataset.novel]
    if not image_size or all(split.image_size == image_size for split in splits):
        return dataset  # keeps the splits' cached fingerprints
    base, val, novel = (Split(resize_images(split.images, image_size), split.labels, split.class_names)
                        for split in splits)
    return FewShotDataset(dataset.name, base, val, novel)


def split_from_lists(images: list[torch.Tensor] | torch.Tensor, labels: list[int],
                     class_names: list[str] | tuple[str, ...]) -> Split:
    """Build a `Split` from stacked or listed CHW uint8 images and integer labels."""
    stacked = torch.stack(list(images)) if not isinstance(images, torch.Tensor) else images
    if stacked.numel() == 0:
        stacked = stacked.reshape(0, 3, 1, 1).to(torch.uint8)
    return Split(stacked, torch.as_tensor(labels, dtype=torch.int64).reshape(-1), tuple(class_names))
