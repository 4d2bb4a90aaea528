"""Any dataset laid out as image folders: `DIR/{train,val,test}/<class>/*.png|jpg|...`."""
from __future__ import annotations

from pathlib import Path

from episodes.base import FewShotDataset
from episodes.errors import fail
from episodes.imagefiles import DEFAULT_FOLDER_IMAGE_SIZE, read_class_folders
from episodes.registry import DatasetSource, register_dataset

SPLIT_FOLDERS = {"base": "train", "val": "val", "novel": "test"}


def has_split_folders(folder: Path) -> bool:
    """Whether `folder` holds the `train/`, `val/` and `test/` sub-folders."""
    return all((folder / name).is_dir() for name in SPLIT_FOLDERS.values())


def read_split_folders(name: str, folder: Path, image_size: int,
                       class_lists: dict[str, list[str]] | None = None) -> FewShotDataset:
    """Read `folder/{train,val,test}/<class>/<images>` into a dataset.

    Args:
        name: the dataset's registry name.
        folder: the folder holding train/, val/ and test/.
        image_size: square side in pixels; 0 keeps the files' size.
        class_lists: expected classes per split (`base`, `val`, `novel`), in label order; None
            takes each split's folders sorted by name.
    """
    splits = {split: read_class_folders(folder / sub, image_size, (class_lists or {}).get(split))
              for split, sub in SPLIT_FOLDERS.items()}
    return FewShotDataset(name, **splits)


@register_dataset("image_folder")
class ImageFolderSource(DatasetSource):
    """Images in class folders under `dataset.path`, decoded with PIL as RGB.

    Files of mixed sizes are resized at decode time to `image_size` (84 when it is 0).
    """

    layout = "dataset.path=DIR with DIR/{train,val,test}/<class>/*.{png,jpg,jpeg,bmp,...}"

    def find(self, data_root: Path, path: Path | None) -> Path | None:
        return path if path is not None and has_split_folders(path) else None

    def load(self, data_root: Path, path: Path | None, image_size: int) -> FewShotDataset:
        if path is None:
            raise fail("The image_folder dataset needs the folder that holds its images.",
                       "Set dataset.path=DIR, where DIR contains train/, val/ and test/ folders "
                       "with one sub-folder of images per class.")
        if not has_split_folders(path):
            missing = [sub for sub in SPLIT_FOLDERS.values() if not (path / sub).is_dir()]
            raise fail(f"The image folder dataset at {path} lacks the sub-folder(s) {', '.join(missing)}.",
                       f"Expected layout: {self.layout}. Point dataset.path at the folder that "
                       f"holds train/, val/ and test/.")
        return read_split_folders(self.name, path, image_size or DEFAULT_FOLDER_IMAGE_SIZE)
