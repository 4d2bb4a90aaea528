"""Decoding image files (PNG, JPEG, ...) into uint8 tensors, shared by the folder-based sources."""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from episodes.base import Split
from episodes.errors import fail

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
DEFAULT_FOLDER_IMAGE_SIZE = 84  # side used when folders of mixed sizes are read with image_size 0


# Modes whose pixels PIL's convert("RGB") maps faithfully to 8-bit RGB (colour spaces, palettes, 1/8 bits).
EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})  # composited over white, as a viewer shows them
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _gray(values: np.ndarray, full_scale: float) -> Image.Image:
    """8-bit RGB from gray values on [0, full_scale], scaled (not clipped) to [0, 255]."""
    scaled = np.clip(np.rint(values.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """The picture as 8-bit RGB, each mode converted faithfully, or a `UserError` naming the mode.

    PIL's `convert("RGB")` clips high bit depths (a 16-bit PNG becomes almost all white), so 16-bit
    gray is scaled by 255/65535, float gray on [0, 1] by 255, and transparent pixels are shown over
    white; a mode with no known range (32-bit integers outside PNG, floats outside [0, 1]) is refused.

    Args:
        image: an opened image.
        path: its file, for the message.
    """
    mode = image.mode
    if mode in EIGHT_BIT_MODES and not (mode == "P" and "transparency" in image.info):
        return image.convert("RGB")
    if mode in ALPHA_MODES or mode == "P":
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and image.format == "PNG"):  # PNG's I is its 16-bit gray
        return _gray(np.asarray(image), 65535.0)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1:
            return _gray(values, 1.0)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        raise fail(f"The image file {path} has 32-bit float pixels (PIL mode F) from {low:g} to {high:g}, "
                   "outside [0, 1], so their brightness scale is unknown.",
                   "Save it as an 8- or 16-bit image, or with float values in [0, 1].")
    raise fail(f"The image file {path} has pixels of PIL mode {mode!r} ({image.format or 'unknown'} file), "
               "which has no known brightness scale, so it cannot be converted to 8-bit RGB faithfully.",
               "Save it as an 8- or 16-bit PNG or a JPEG.")


def decode_image(path: Path, image_size: int) -> torch.Tensor:
    """Read one image file as uint8 [3, H, W] RGB, resized to image_size x image_size if > 0.

    Args:
        path: the image file.
        image_size: square side in pixels; 0 keeps the file's size.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise fail(f"The image file {path} could not be read ({error.strerror}).",
                   "Restore the file (or its read permission), or remove it from the list that names it.") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image_size and image.format == "JPEG":
                image.draft("RGB", (image_size, image_size))  # decode big JPEGs at a reduced scale
            image = to_rgb(image, path)
            if image_size and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels = np.array(image, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as error:
        raise fail(f"The image file {path} is truncated or corrupt and could not be decoded ({error}).",
                   "Replace it with a good copy or delete it.") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def decode_images(paths: Sequence[Path], image_size: int) -> torch.Tensor:
    """Decode many files into one uint8 [N, 3, S, S] tensor (in parallel threads; PIL releases the GIL).

    Args:
        paths: image files, in the order wanted.
        image_size: square side in pixels; 0 keeps the files' size, which must then be the same for all.
    """
    if not paths:
        return torch.zeros((0, 3, max(image_size, 1), max(image_size, 1)), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda path: decode_image(path, image_size), paths))
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise fail(f"The images under {paths[0].parent.parent} have different sizes "
                   f"({sorted(sizes)[:3]}...), so they cannot be stacked at their native size.",
                   "Set dataset.image_size to the side in pixels they should be resized to.")
    return torch.stack(images)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, by name; hidden files and other extensions are skipped."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file())


def class_folders(split_dir: Path) -> list[Path]:
    """Sub-folders of a split folder (one per class), by name; hidden folders are skipped."""
    return sorted(path for path in split_dir.iterdir() if path.is_dir() and not path.name.startswith("."))


def read_class_folders(split_dir: Path, image_size: int,
                       class_names: Sequence[str] | None = None) -> Split:
    """Read `split_dir/<class>/<image files>` into a `Split`.

    Args:
        split_dir: folder with one sub-folder of images per class.
        image_size: square side in pixels; 0 keeps the files' size.
        class_names: the classes expected, in label order; None takes the folders, sorted by name.
    """
    found = {folder.name: folder for folder in class_folders(split_dir)}
    if class_names is None:
        class_names = sorted(found)
        if not class_names:
            raise fail(f"The folder {split_dir} has no class sub-folders.",
                       f"Put the images of each class in {split_dir}/<class name>/.")
    elif set(class_names) != set(found):
        missing, extra = sorted(set(class_names) - set(found)), sorted(set(found) - set(class_names))
        raise fail(f"The class folders in {split_dir} do not match the expected classes: missing "
                   f"{missing[:5] or 'none'}, unexpected {extra[:5] or 'none'}.",
                   "Make the folder names exactly the class names of this split.")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        files = image_files(found[name])
        if not files:
            raise fail(f"The class folder {found[name]} holds no image files "
                       f"({', '.join(sorted(IMAGE_EXTENSIONS))}).",
                       "Add its images or remove the empty folder.")
        paths += files
        labels += [label] * len(files)
    return Split(decode_images(paths, image_size), torch.tensor(labels, dtype=torch.int64), tuple(class_names))
