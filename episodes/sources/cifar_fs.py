"""CIFAR-FS (Bertinetto et al., 2019): CIFAR-100 split by class into 64 train / 16 val / 20 test.

Read from the CIFAR-100 python files (`cifar-100-python/` or the `.tar.gz` as downloaded, read
in place), merging CIFAR-100's train and test parts (600 images per class), or from
learn2learn's `cifarfs/processed/{train,val,test}/<class>/*.png`. The class lists are the
standard ones, bundled in `episodes/splits/cifar_fs_{train,val,test}.txt`.
"""
from __future__ import annotations

import tarfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from episodes.base import FewShotDataset, Split
from episodes.errors import UserError, fail
from episodes.registry import DatasetSource, register_dataset
from episodes.safe_pickle import load_data_pickle
from episodes.registry import dataset_not_found
from episodes.sources.image_folder import has_split_folders, read_split_folders

CIFAR_FOLDER = "cifar-100-python"
CIFAR_TARBALL = "cifar-100-python.tar.gz"
CIFAR_FILES = ("train", "test", "meta")
LEARN2LEARN_FOLDER = Path("cifarfs") / "processed"
SPLIT_LISTS = {"base": "cifar_fs_train.txt", "val": "cifar_fs_val.txt", "novel": "cifar_fs_test.txt"}
NATIVE_SIZE = 32


def standard_classes() -> dict[str, list[str]]:
    """The bundled Bertinetto et al. class lists: {"base": 64 names, "val": 16, "novel": 20}."""
    folder = resources.files("episodes") / "splits"
    return {split: (folder / file).read_text(encoding="utf-8").split() for split, file in SPLIT_LISTS.items()}


def read_cifar100(location: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-100 train + test merged: images uint8 [N, 3, 32, 32], fine labels [N], fine label names.

    Args:
        location: the `cifar-100-python` folder or the `cifar-100-python.tar.gz` file.
    """
    parts = _read_tarball(location) if location.is_file() else {
        name: _read_pickle_file(location / name) for name in CIFAR_FILES}
    names = _field(parts["meta"], "fine_label_names", location / "meta")
    if not isinstance(names, list):
        raise fail(f"{location / 'meta'} has no list of fine_label_names; it is not the CIFAR-100 meta file.",
                   "Replace it with the original cifar-100-python files.")
    names = [_text(name) for name in names]
    images, labels = [], []
    for part in ("train", "test"):
        source = location / part
        data = _field(parts[part], "data", source)
        fine = np.asarray(_field(parts[part], "fine_labels", source))
        fine = fine.astype(np.int64) if fine.size == 0 else fine  # [] would read as float
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * NATIVE_SIZE ** 2 and fine.shape == (data.shape[0],)
                and np.issubdtype(fine.dtype, np.integer)
                and (fine.size == 0 or 0 <= fine.min() <= fine.max() < len(names))):
            raise fail(f"{source} does not look like a CIFAR-100 python file (expected b'data' as "
                       f"uint8 N x 3072 and N b'fine_labels' below {len(names)}).",
                       "Replace it with the original cifar-100-python files.")
        images.append(data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE))
        labels.append(fine.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels), names


def split_cifar100(images: np.ndarray, labels: np.ndarray, names: list[str],
                   class_lists: dict[str, list[str]], where: Path) -> dict[str, Split]:
    """Select and relabel the images of each split's classes (label = position in its list)."""
    missing = sorted({name for names_ in class_lists.values() for name in names_} - set(names))
    if missing:
        raise fail(f"The CIFAR-100 meta file in {where} lacks {len(missing)} class(es) named in the "
                   f"CIFAR-FS split lists: {missing[:5]}.",
                   "Use the original CIFAR-100 'meta' file, whose fine_label_names cover all 100 classes.")
    splits = {}
    for split, split_names in class_lists.items():
        lookup = np.full(len(names), -1, dtype=np.int64)
        lookup[[names.index(name) for name in split_names]] = np.arange(len(split_names))
        split_labels = lookup[labels]
        keep = split_labels >= 0
        counts = np.bincount(split_labels[keep], minlength=len(split_names))
        if (counts == 0).any():
            empty = [split_names[i] for i in np.flatnonzero(counts == 0)[:5]]
            raise fail(f"The CIFAR-100 files in {where} have no images of the class(es) {empty}.",
                       "Use the complete original cifar-100-python train and test files.")
        splits[split] = Split(torch.from_numpy(np.ascontiguousarray(images[keep])),
                              torch.from_numpy(split_labels[keep]), tuple(split_names))
    return splits


@register_dataset("cifar_fs")
class CifarFsSource(DatasetSource):
    """CIFAR-FS from the CIFAR-100 python files or learn2learn's PNG folders (32 x 32 native)."""

    layout = (f"<data_root>/{CIFAR_FOLDER}/{{train,test,meta}} or <data_root>/{CIFAR_TARBALL} "
              f"(CIFAR-100 python version), or <data_root>/{LEARN2LEARN_FOLDER.as_posix()}/"
              f"{{train,val,test}}/<class>/*.png")

    def find(self, data_root: Path, path: Path | None) -> Path | None:
        root = path if path is not None else data_root
        candidates = [root / CIFAR_FOLDER, root / CIFAR_TARBALL, root / LEARN2LEARN_FOLDER]
        if path is not None:  # an explicit path may also be the folder or file itself
            candidates.insert(0, path)
        return next((place for place in candidates if _kind(place)), None)

    def load(self, data_root: Path, path: Path | None, image_size: int) -> FewShotDataset:
        location = self.find(data_root, path)
        if location is None:
            raise dataset_not_found("CIFAR-FS", data_root, path, self.layout)
        class_lists = standard_classes()
        if _kind(location) == "folders":
            return read_split_folders(self.name, location, image_size or NATIVE_SIZE, class_lists)
        images, labels, names = read_cifar100(location)
        return FewShotDataset(self.name, **split_cifar100(images, labels, names, class_lists, location))


def _kind(place: Path) -> str | None:
    if place.is_file() and place.name.endswith((".tar.gz", ".tgz")):
        return "tarball"
    if place.is_dir() and all((place / name).is_file() for name in CIFAR_FILES):
        return "pickles"
    if place.is_dir() and has_split_folders(place):
        return "folders"
    return None


def _read_pickle_file(path: Path) -> Any:
    with open(path, "rb") as handle:
        return load_data_pickle(handle, str(path), encoding="bytes")


def _read_tarball(path: Path) -> dict[str, Any]:
    # One pass over the members: seeking back in a .gz would decompress it again.
    wanted = {f"{CIFAR_FOLDER}/{name}": name for name in CIFAR_FILES}
    parts: dict[str, Any] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name and member.isfile():
                    handle = tar.extractfile(member)
                    parts[name] = load_data_pickle(handle, f"{path}:{member.name}", encoding="bytes")
    except UserError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        reason = " ".join(str(error).split())  # tarfile's messages can span several lines
        raise fail(f"{path} could not be read as a .tar.gz archive ({reason}); it is truncated or corrupt.",
                   "Download or copy cifar-100-python.tar.gz again and check its size.") from None
    missing = [name for name in wanted if wanted[name] not in parts]
    if missing:
        raise fail(f"{path} lacks the member(s) {', '.join(missing)}; it is truncated or not the "
                   f"CIFAR-100 python archive.", "Download or copy cifar-100-python.tar.gz again.")
    return parts


def _field(part: Any, key: str, source: Path) -> Any:
    # The original Python 2 pickles, read with encoding="bytes", have bytes keys.
    if isinstance(part, dict):
        for candidate in (key.encode(), key):
            if candidate in part:
                return part[candidate]
    raise fail(f"{source} has no {key!r} entry; it is not a CIFAR-100 python file.",
               "Replace it with the original cifar-100-python files.")


def _text(name: Any) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
