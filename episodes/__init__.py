"""Datasets, class splits and the episode sampler.

Example:
    >>> from episodes import load_dataset, EpisodeSampler
    >>> data = load_dataset("glyphs")
    >>> episodes = EpisodeSampler(data.novel.labels, n_way=5, k_shot=5, n_query=15).sample(600)
"""
from episodes.base import FewShotDataset, Split, resize_images
from episodes.errors import UserError
from episodes.registry import (DatasetSource, available_datasets, get_dataset_source, load_dataset,
                               register_dataset, resolve_data_root)
from episodes.sampler import Episodes, EpisodeSampler
import episodes.sources  # noqa: F401,E402  (registers the built-in sources once the registry exists)

__all__ = ["DatasetSource", "EpisodeSampler", "Episodes", "FewShotDataset", "Split", "UserError",
           "available_datasets", "get_dataset_source", "load_dataset", "register_dataset",
           "resize_images", "resolve_data_root"]
