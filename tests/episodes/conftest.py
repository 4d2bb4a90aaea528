"""Writers of tiny dataset files in the exact on-disk formats the loaders read.

Pixel values encode where an image came from, so tests can check that class names map to the
right images: CIFAR images carry (fine label, index within class, part) in their R, G, B
planes; folder and miniImageNet images are flat colours derived from the class.
"""
from __future__ import annotations

import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CIFAR100_FINE_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()


def numpy1_pickle(obj: object) -> bytes:
    """A protocol-2 pickle naming numpy's functions as numpy 1 did (`numpy.core.multiarray`),
    like the CIFAR-100 and miniImageNet files in the wild."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def cifar_part(fine_labels: list[int], part: int) -> dict[bytes, object]:
    """A CIFAR-100 `train`/`test` dict; R = fine label, G = index within the class, B = part."""
    data = np.zeros((len(fine_labels), 3, 1024), dtype=np.uint8)
    seen: dict[int, int] = {}
    for row, label in enumerate(fine_labels):
        data[row, 0], data[row, 1], data[row, 2] = label, seen.setdefault(label, 0), part
        seen[label] += 1
    return {b"data": data.reshape(len(fine_labels), 3072), b"fine_labels": fine_labels,
            b"coarse_labels": [0] * len(fine_labels), b"filenames": [b"x.png"] * len(fine_labels)}


@pytest.fixture
def write_cifar100():
    """Returns write(root, names=None, train_per_class=2, test_per_class=1) -> the fine label names.

    Writes `root/cifar-100-python/{train,test,meta}`; the names default to the 100 CIFAR-100
    classes in a shuffled order, so fine label index and alphabetical order differ.
    """
    def write(root: Path, names: list[str] | None = None, train_per_class: int = 2,
              test_per_class: int = 1) -> list[str]:
        if names is None:
            names = list(CIFAR100_FINE_NAMES)
            random.Random(0).shuffle(names)
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for part_index, (part, per_class) in enumerate((("train", train_per_class), ("test", test_per_class))):
            labels = [label for _ in range(per_class) for label in range(len(names))]  # interleaved
            (folder / part).write_bytes(numpy1_pickle(cifar_part(labels, part_index)))
        meta = {b"fine_label_names": [name.encode() for name in names], b"coarse_label_names": [b"x"]}
        (folder / "meta").write_bytes(numpy1_pickle(meta))
        return names
    return write


@pytest.fixture
def make_tarball():
    """Returns make(folder, tar_path): packs `folder` as `<folder name>/...` into a .tar.gz."""
    def make(folder: Path, tar_path: Path) -> Path:
        with tarfile.open(tar_path, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        return tar_path
    return make


def class_colour(label: int) -> tuple[int, int, int]:
    """The flat colour of the images of class `label` in folder fixtures."""
    return (10 * label % 256, 255 - 10 * label % 256, 7 * label % 256)


@pytest.fixture(name="class_colour")
def class_colour_fixture():
    """Returns class_colour(label) -> (R, G, B) of that class's images in `write_class_folders`."""
    return class_colour


@pytest.fixture
def cifar100_names() -> list[str]:
    """The 100 CIFAR-100 fine label names, alphabetical as in the real meta file."""
    return list(CIFAR100_FINE_NAMES)


@pytest.fixture
def write_class_folders():
    """Returns write(split_dir, class_names, per_class=2, size=(32, 32), suffix=".png").

    Class i's images are flat `class_colour(i)`; a list of sizes cycles over the images.
    """
    def write(split_dir: Path, class_names: list[str], per_class: int = 2,
              size: tuple[int, int] | list[tuple[int, int]] = (32, 32), suffix: str = ".png") -> None:
        sizes = size if isinstance(size, list) else [size]
        for label, name in enumerate(class_names):
            (split_dir / name).mkdir(parents=True)
            for index in range(per_class):
                image = Image.new("RGB", sizes[index % len(sizes)], class_colour(label))
                image.save(split_dir / name / f"{index:03d}{suffix}")
    return write


@pytest.fixture
def write_mini_cache():
    """Returns write(path, class_names, per_class=2, size=84, protocol=4) -> the pickled dict.

    Rows interleave the classes; image i of class c has R = c and G = i. Protocol "numpy1"
    writes the numpy 1 module names, as the files in the wild have.
    """
    def write(path: Path, class_names: list[str], per_class: int = 2, size: int = 84,
              protocol: int | str = 4) -> dict[str, object]:
        cache = mini_cache(class_names, per_class, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(numpy1_pickle(cache) if protocol == "numpy1" else pickle.dumps(cache, protocol=protocol))
        return cache
    return write


def mini_cache(class_names: list[str], per_class: int, size: int) -> dict[str, object]:
    rows = [(label, index) for index in range(per_class) for label in range(len(class_names))]
    images = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
    class_dict: dict[str, list[int]] = {name: [] for name in class_names}
    for row, (label, index) in enumerate(rows):
        images[row, :, :, 0], images[row, :, :, 1] = label, index
        class_dict[class_names[label]].append(row)
    return {"image_data": images, "class_dict": class_dict}


class _RunsCommand:
    """Unpickling this calls os.system: what a hostile dataset file would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os
        return (os.system, (self.command,))


@pytest.fixture
def malicious_pickle():
    """Returns make(marker) -> bytes of a pickle that, if loaded unsafely, creates the file `marker`."""
    def make(marker: Path) -> bytes:
        return pickle.dumps({"image_data": _RunsCommand(f"touch '{marker}'")})
    return make
