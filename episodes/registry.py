"""Datasets registered by name; `load_dataset` finds them under the data root."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, TypeVar

from episodes.base import FewShotDataset, resized
from episodes.errors import fail

DEFAULT_DATA_ROOT = Path("~/.cache/fewshot")
_DATASETS: dict[str, type["DatasetSource"]] = {}
SourceType = TypeVar("SourceType", bound=type["DatasetSource"])


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else env `FEWSHOT_DATA`, else `~/.cache/fewshot`."""
    chosen = data_root or os.environ.get("FEWSHOT_DATA") or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser()


class DatasetSource(ABC):
    """A dataset the suite can read. Subclass it and decorate with `@register_dataset`.

    `layout` describes, for `fewshot datasets`, what the files look like on disk.
    """

    name: str = ""
    layout: str = ""
    generated: bool = False  # built locally on first use rather than read from downloaded files

    @abstractmethod
    def find(self, data_root: Path, path: Path | None) -> Path | None:
        """Where this dataset's files are under `data_root` (or at `path`), or None."""

    @abstractmethod
    def load(self, data_root: Path, path: Path | None, image_size: int) -> FewShotDataset:
        """Read the dataset; raise `UserError` naming the fix if files are missing or bad."""


def dataset_not_found(title: str, data_root: Path, path: Path | None, layout: str) -> Exception:
    """The error for a dataset whose files are not where they should be.

    Args:
        title: the dataset as people write it (`CIFAR-FS`).
        data_root: the data root that was searched (when `path` is None).
        path: the explicit `dataset.path` that was searched, if any.
        layout: the expected on-disk layout.
    """
    if path is not None:
        return fail(f"{title} was not found at dataset.path={path}. Expected layout, with <data_root> "
                    f"standing for that path: {layout}.",
                    "Point dataset.path at the folder that holds the files, or leave it unset to "
                    "search under --data-root (or FEWSHOT_DATA).")
    where = f"under {data_root}" if data_root.is_dir() else f"because the data root {data_root} does not exist"
    return fail(f"{title} was not found {where}. Expected layout: {layout}. Nothing is downloaded "
                f"at run time.",
                "Put the files there, or point --data-root DIR (or the FEWSHOT_DATA environment "
                "variable) at the folder that holds them.")


def register_dataset(name: str) -> Callable[[SourceType], SourceType]:
    """Class decorator that registers a `DatasetSource` under `name`."""
    def add(cls: SourceType) -> SourceType:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        cls.name = name
        _DATASETS[name] = cls
        return cls
    return add


def available_datasets() -> list[str]:
    """Names of the registered datasets."""
    return sorted(_DATASETS)


def get_dataset_source(name: str) -> DatasetSource:
    """The registered source called `name`; an unknown name is an error listing the known ones."""
    if name not in _DATASETS:
        raise fail(f"Unknown dataset {name!r}.", f"Known datasets: {', '.join(sorted(_DATASETS))}.")
    return _DATASETS[name]()


def load_dataset(name: str, data_root: str | os.PathLike | None = None,
                 path: str | os.PathLike | None = None, image_size: int | None = None) -> FewShotDataset:
    """Load a registered dataset, resized to `image_size` if given.

    Args:
        name: registry name, see `available_datasets()`.
        data_root: folder holding the datasets (default: `resolve_data_root()`).
        path: explicit location, for datasets that take one (`image_folder`).
        image_size: square side in pixels; None keeps the native size.
    """
    source = get_dataset_source(name)
    root = resolve_data_root(data_root)
    dataset = source.load(root, Path(path).expanduser() if path else None, image_size or 0)
    return resized(dataset, image_size or 0)
