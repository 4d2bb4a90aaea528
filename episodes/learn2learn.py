"""Optional interop: hand a split to learn2learn's task samplers.

learn2learn is not a dependency of the suite (its 0.2.0 release does not build on Python 3.11
without regenerating its Cython files), so it is imported only when asked for.

Example:
    >>> from episodes import load_dataset
    >>> from episodes.learn2learn import as_meta_dataset
    >>> meta = as_meta_dataset(load_dataset("cifar_fs").novel)
    >>> tasks = l2l.data.TaskDataset(meta, task_transforms=[...])
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import TensorDataset

from episodes.base import Split
from episodes.errors import fail


def as_meta_dataset(split: Split) -> Any:
    """A `learn2learn.data.MetaDataset` over the split's (uint8 image [3, H, W], int label) pairs.

    Args:
        split: the images and labels to wrap; the label -> indices table is passed in, so
            learn2learn does not have to read every item to build it.
    """
    try:
        from learn2learn.data import MetaDataset
    except ImportError:
        raise fail("learn2learn is not installed, so a split cannot be turned into its MetaDataset.",
                   "Install it with `pip install learn2learn` (on Python 3.11 its 0.2.0 release must "
                   "be built after re-running Cython 3 on its .pyx files), or use the suite's own "
                   "episodes.EpisodeSampler instead.") from None
    labels_to_indices = {label: [] for label in range(split.num_classes)}
    for index, label in enumerate(split.labels.tolist()):
        labels_to_indices[label].append(index)
    return MetaDataset(TensorDataset(split.images, split.labels), labels_to_indices=labels_to_indices)
