"""miniImageNet (Vinyals et al., 2016; Ravi & Larochelle, 2017 splits): 64 / 16 / 20 classes, 84 x 84.

Two layouts are read: the widespread `mini-imagenet-cache-{train,validation,test}.pkl` files
(a dict of `image_data`, uint8 N x 84 x 84 x 3, and `class_dict`, class name -> row indices),
through the restricted unpickler; and Ravi & Larochelle's `{train,val,test}.csv` (header
`filename,label`) next to an `images/` folder of JPEGs.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from episodes.base import FewShotDataset, Split
from episodes.errors import fail
from episodes.imagefiles import DEFAULT_FOLDER_IMAGE_SIZE, decode_images
from episodes.registry import DatasetSource, register_dataset
from episodes.safe_pickle import load_data_pickle
from episodes.registry import dataset_not_found

FOLDER = "mini-imagenet"
CACHE_FILES = {"base": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
               "novel": "mini-imagenet-cache-test.pkl"}
CSV_FILES = {"base": "train.csv", "val": "val.csv", "novel": "test.csv"}
IMAGES_FOLDER = "images"


def read_cache_pickle(path: Path) -> Split:
    """One `mini-imagenet-cache-*.pkl` as a `Split`; classes sorted by name, images grouped by class.

    Args:
        path: the pickle file.
    """
    with open(path, "rb") as handle:
        # latin1: Python 2 pickles of numpy arrays need it; Python 3 pickles ignore it.
        cache = load_data_pickle(handle, str(path), encoding="latin1")
    images, class_dict = (cache.get(key) if isinstance(cache, dict) else None
                          for key in ("image_data", "class_dict"))
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[-1] == 3 and isinstance(class_dict, dict) and class_dict):
        raise fail(f"{path} is not a miniImageNet cache file (expected a dict with 'image_data', "
                   f"uint8 N x H x W x 3, and a non-empty 'class_dict' of class name -> row indices).",
                   "Replace it with the original mini-imagenet-cache pickle.")
    keys = sorted(class_dict, key=str)
    names = [str(key) for key in keys]
    try:
        rows = [np.asarray(class_dict[key], dtype=np.int64).reshape(-1) for key in keys]
    except (TypeError, ValueError):
        rows = [np.zeros(0, dtype=np.int64)]  # not lists of integers: reported below
    order = np.concatenate(rows)
    if any(len(r) == 0 for r in rows) or order.min() < 0 or order.max() >= len(images) \
            or len(np.unique(order)) != len(order):
        raise fail(f"The class_dict of {path} does not match its {len(images)} images (a class with "
                   f"no rows, a row index out of range, or a row in two classes).",
                   "Replace it with the original mini-imagenet-cache pickle.")
    # Gather and transpose in chunks: one full-size copy besides the loaded array, not two.
    pixels = torch.empty((len(order), 3, *images.shape[1:3]), dtype=torch.uint8)
    for start in range(0, len(order), 1024):
        chunk = np.ascontiguousarray(images[order[start:start + 1024]])
        pixels[start:start + 1024] = torch.from_numpy(chunk).permute(0, 3, 1, 2)
    labels = torch.arange(len(names)).repeat_interleave(torch.tensor([len(r) for r in rows]))
    return Split(pixels, labels, tuple(names))


def read_csv_split(folder: Path, csv_name: str, image_size: int) -> Split:
    """One Ravi & Larochelle CSV (`filename,label`) with its JPEGs in `folder/images/`.

    Args:
        folder: the folder holding the CSV files and `images/`.
        csv_name: `train.csv`, `val.csv` or `test.csv`.
        image_size: square side the images are decoded at.
    """
    path = folder / csv_name
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except (UnicodeDecodeError, csv.Error):
        rows = []  # not a text CSV: reported below
    if len(rows) < 2 or [cell.strip() for cell in rows[0]] != ["filename", "label"] \
            or any(len(row) != 2 for row in rows[1:]):
        raise fail(f"{path} is not a miniImageNet split file: expected a header 'filename,label' "
                   f"and one 'filename,label' row per image.", "Replace it with the original CSV file.")
    entries = sorted(((label, filename) for filename, label in rows[1:]), key=lambda entry: entry[0])
    names = sorted({label for label, _ in entries})
    files = [folder / IMAGES_FOLDER / filename for _, filename in entries]
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise fail(f"{path} names {len(missing)} image(s) missing from {folder / IMAGES_FOLDER}, "
                   f"e.g. {missing[0].name}.",
                   f"Put all the images in {folder / IMAGES_FOLDER}, or use the CSV that matches them.")
    label_of = {name: index for index, name in enumerate(names)}
    labels = torch.tensor([label_of[label] for label, _ in entries], dtype=torch.int64)
    return Split(decode_images(files, image_size), labels, tuple(names))


@register_dataset("mini_imagenet")
class MiniImageNetSource(DatasetSource):
    """miniImageNet from the cache pickles or from the Ravi & Larochelle CSV + images layout."""

    layout = (f"<data_root>/{FOLDER}/mini-imagenet-cache-{{train,validation,test}}.pkl (or directly "
              f"in <data_root>), or <data_root>/{FOLDER}/{{train,val,test}}.csv + {IMAGES_FOLDER}/*.jpg")

    def find(self, data_root: Path, path: Path | None) -> Path | None:
        root = path if path is not None else data_root
        return next((place for place in (root / FOLDER, root) if _kind(place)), None)

    def load(self, data_root: Path, path: Path | None, image_size: int) -> FewShotDataset:
        location = self.find(data_root, path)
        if location is None:
            raise dataset_not_found("miniImageNet", data_root, path, self.layout)
        if _kind(location) == "pickles":
            splits = {split: read_cache_pickle(location / file) for split, file in CACHE_FILES.items()}
        else:
            splits = {split: read_csv_split(location, file, image_size or DEFAULT_FOLDER_IMAGE_SIZE)
                      for split, file in CSV_FILES.items()}
        return FewShotDataset(self.name, **splits)


def _kind(place: Path) -> str | None:
    if all((place / file).is_file() for file in CACHE_FILES.values()):
        return "pickles"
    if all((place / file).is_file() for file in CSV_FILES.values()) and (place / IMAGES_FOLDER).is_dir():
        return "csv"
    return None

