"""`glyphs`: the built-in offline dataset of characters rendered from matplotlib's fonts.

A class is one character; its images are renders in the fonts that draw it, with seeded
augmentation (affine warp, stroke width, colours, noise), 32 x 32 RGB. Classes that render
alike are dropped, and the rest are shuffled into base / val / novel with a fixed seed. The
build is deterministic and takes a few seconds; the result is cached under
`<data_root>/glyphs/glyphs-v1-<params hash>.pt` with a checksum inside, and a cache file that
does not verify is rebuilt with a warning. `bench/glyphs_sample.py` times a build and draws
`docs/glyphs_sample.png`.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import ft2font

from episodes.base import FewShotDataset, resized, Split, SPLIT_NAMES
from episodes.errors import fail
from episodes.glyphs_augment import augment_glyphs, AugmentConfig
from episodes.glyphs_render import (candidate_code_points, class_name, drop_lookalikes,
                                    glyph_similarity, GlyphFont, is_drawn, load_fonts,
                                    render_glyph)
from episodes.io import atomic_torch_save, atomic_write, fingerprint
from episodes.registry import DatasetSource, register_dataset

FORMAT = "glyphs-v1"
NATIVE_SIZE = 32


@dataclass(frozen=True)
class GlyphsParams:
    """Everything that decides the dataset's bytes (its hash names the cache file).

    Args:
        seed: seed of the class split, the font order and the augmentation.
        base_classes: classes to pretrain on.
        val_classes: validation classes.
        novel_classes: test classes.
        images_per_class: images of each class.
        image_size: side of the images in pixels.
        min_fonts: a character drawn by fewer fonts is not used.
        glyph_fill: fraction of the image a glyph's longer side fills before augmentation.
        duplicate_similarity: two characters this similar (pooled-mask cosine) count as one.
        case_pair_similarity: the same for the two cases of one letter (o / O, s / S, ...).
        augment: the augmentation ranges.
    """

    seed: int = 0
    base_classes: int = 64
    val_classes: int = 16
    novel_classes: int = 20
    images_per_class: int = 60
    image_size: int = NATIVE_SIZE
    min_fonts: int = 12
    glyph_fill: float = 0.75
    duplicate_similarity: float = 0.95
    case_pair_similarity: float = 0.865
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def num_classes(self) -> int:
        return self.base_classes + self.val_classes + self.novel_classes

    def describe(self) -> str:
        """The parameters and the renderer versions, as canonical JSON."""
        return json.dumps({"format": FORMAT, "params": asdict(self),
                           "matplotlib": matplotlib.__version__,
                           "freetype": ft2font.__freetype_version__}, sort_keys=True)

    def cache_name(self) -> str:
        return f"{FORMAT}-{fingerprint([], [self.describe()])}.pt"


def choose_classes(fonts: list[GlyphFont], params: GlyphsParams) -> list[tuple[int, np.ndarray]]:
    """The characters to use, each with its clean masks [fonts that draw it, C, C], uint8.

    Look-alikes are dropped first; of the rest, characters drawn by more fonts come first,
    then the candidate order (digits, Latin, Greek, Cyrillic, Armenian, Georgian).
    """
    canvas = 2 * params.image_size
    candidates = candidate_code_points()
    similarity = glyph_similarity(fonts, candidates, canvas, params.glyph_fill)
    kept = drop_lookalikes(candidates, similarity, params.duplicate_similarity,
                           params.case_pair_similarity)
    coverage = {code: sum(code in font.codes for font in fonts) for code in kept}
    chosen = []
    for code in sorted(kept, key=lambda code: -coverage[code]):  # stable: keeps candidate order
        renders = [(font, render_glyph(font.face, code, canvas, params.glyph_fill))
                   for font in fonts if code in font.codes]
        drawn = [mask for font, mask in renders if is_drawn(font, mask)]
        if len(drawn) >= params.min_fonts:
            chosen.append((code, np.stack(drawn)))
        if len(chosen) == params.num_classes:
            return chosen
    raise fail(f"The glyphs dataset has only {len(chosen)} characters that are drawn by "
               f"{params.min_fonts} or more fonts and unlike each other, not {params.num_classes}.",
               "Ask for fewer base/val/novel classes or a smaller min_fonts.")


def build_glyphs(params: GlyphsParams = GlyphsParams()) -> FewShotDataset:
    """Render and augment the whole dataset (deterministic; a few seconds on 2 cores)."""
    generator = torch.Generator().manual_seed(params.seed)
    fonts = load_fonts(canvas=2 * params.image_size, fill=params.glyph_fill)
    chosen = choose_classes(fonts, params)
    order = torch.randperm(len(chosen), generator=generator).tolist()
    bounds = np.cumsum([0, params.base_classes, params.val_classes, params.novel_classes])
    split_classes = [sorted(order[bounds[i]:bounds[i + 1]]) for i in range(3)]

    # Image i of a class uses the class's fonts in a seeded order, cycling: fonts appear evenly.
    fonts_drawn = [len(masks) for _, masks in chosen]
    first_mask = np.cumsum([0] + fonts_drawn).tolist()
    cycle = torch.arange(params.images_per_class)
    mask_index, labels = [], []
    for classes in split_classes:
        for label, index in enumerate(classes):
            font_order = torch.randperm(fonts_drawn[index], generator=generator)
            mask_index.append(first_mask[index] + font_order[cycle % fonts_drawn[index]])
            labels += [label] * params.images_per_class
    all_masks = torch.from_numpy(np.concatenate([masks for _, masks in chosen]))
    images = augment_glyphs(all_masks, torch.cat(mask_index), params.augment, params.image_size,
                            generator)

    splits, start = {}, 0
    for name, classes in zip(SPLIT_NAMES, split_classes):
        stop = start + len(classes) * params.images_per_class
        names = tuple(class_name(chosen[index][0]) for index in classes)
        splits[name] = Split(images[start:stop], torch.tensor(labels[start:stop]), names)
        start = stop
    return FewShotDataset("glyphs", **splits)


def _checksum(params: GlyphsParams, splits: dict[str, Split]) -> str:
    tensors = [t for name in SPLIT_NAMES for t in (splits[name].images, splits[name].labels)]
    names = [n for name in SPLIT_NAMES for n in (name, *splits[name].class_names)]
    return fingerprint(tensors, [params.describe(), *names])


def save_cache(path: Path, params: GlyphsParams, dataset: FewShotDataset) -> None:
    """Write the dataset, its parameters and a checksum of both, atomically."""
    splits = {name: dataset.split(name) for name in SPLIT_NAMES}
    payload = {name: {"images": split.images, "labels": split.labels,
                      "class_names": list(split.class_names)} for name, split in splits.items()}
    atomic_torch_save(path, {"format": FORMAT, "params": params.describe(),
                             "checksum": _checksum(params, splits), "splits": payload})


def read_cache(path: Path, params: GlyphsParams) -> FewShotDataset:
    """Read a cache file; raise ValueError if it does not verify."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError("not a glyphs cache file")
    if payload.get("params") != params.describe():
        raise ValueError("built with other parameters")
    splits = {name: Split(part["images"], part["labels"], tuple(part["class_names"]))
              for name, part in payload["splits"].items()}
    if set(splits) != set(SPLIT_NAMES) or payload.get("checksum") != _checksum(params, splits):
        raise ValueError("checksum mismatch")
    return FewShotDataset("glyphs", **splits)


def load_glyphs(folder: Path, params: GlyphsParams = GlyphsParams()) -> FewShotDataset:
    """The dataset from its cache under `folder`, built (and cached) if missing or corrupt."""
    path = Path(folder) / params.cache_name()
    if path.is_file():
        try:
            return read_cache(path, params)
        # The file is ours and only a cache: anything wrong with it (truncated zip, bad pickle,
        # wrong checksum) is fixed by building again, never by stopping the run.
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"The glyphs cache {path} is corrupt ({type(error).__name__}: {error}); "
                          "rebuilding it.", RuntimeWarning, stacklevel=2)
    dataset = build_glyphs(params)
    save_cache(path, params, dataset)
    return dataset


@register_dataset("glyphs")
class GlyphsSource(DatasetSource):
    """Characters rendered from matplotlib's fonts; nothing to download."""

    generated = True
    layout = ("generated on first use, no download: <data_root>/glyphs/" + FORMAT
              + "-<hash>.pt (or in `path`), rendered from the fonts inside matplotlib")

    def __init__(self, params: GlyphsParams = GlyphsParams()) -> None:
        self.params = params

    def folder(self, data_root: Path, path: Path | None) -> Path:
        """Where the cache lives: `path` if given, else `<data_root>/glyphs`."""
        return Path(path) if path else Path(data_root) / "glyphs"

    def find(self, data_root: Path, path: Path | None) -> Path | None:
        cache = self.folder(data_root, path) / self.params.cache_name()
        return cache if cache.is_file() else None

    def load(self, data_root: Path, path: Path | None, image_size: int) -> FewShotDataset:
        return resized(load_glyphs(self.folder(data_root, path), self.params), image_size)


def save_sample_grid(dataset: FewShotDataset, path: str | Path, classes: int = 10,
                     per_class: int = 10, zoom: int = 3) -> Path:
    """Save a PNG grid: `classes` base classes spread over the split, one per row,
    `per_class` images each, enlarged `zoom` times."""
    from PIL import Image  # only the sample needs Pillow

    split = dataset.base
    rows_shown = min(classes, split.num_classes)
    labels = torch.linspace(0, split.num_classes - 1, rows_shown).round().long()
    rows = [torch.cat(list(split.images[split.labels == label][:per_class]), dim=2)  # [3, H, n * W]
            for label in labels.tolist()]
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    picture = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom),
                                           Image.Resampling.NEAREST)
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG"))
