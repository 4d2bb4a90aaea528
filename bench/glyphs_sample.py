"""The built-in `glyphs` dataset: build time, cached load time, batched vs per-image augmentation,
and a sample grid of its images.

    python bench/glyphs_sample.py [--sample docs/glyphs_sample.png]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch

from episodes.glyphs_augment import augment_glyphs
from episodes.glyphs_render import load_fonts
from episodes.sources.glyphs import choose_classes, GlyphsParams, load_glyphs, save_sample_grid


def augmentation_inputs(params: GlyphsParams, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean masks of the chosen classes and `count` mask indices cycling through them."""
    masks = np.concatenate([class_masks for _, class_masks in
                            choose_classes(load_fonts(canvas=2 * params.image_size), params)])
    return torch.from_numpy(masks), torch.arange(count) % masks.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", type=Path, default=Path("docs/glyphs_sample.png"))
    parser.add_argument("--compare", type=int, default=1000,
                        help="images augmented both batched and one per call")
    args = parser.parse_args()
    params = GlyphsParams()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        dataset = load_glyphs(Path(folder), params)
        build = time.perf_counter() - start
        start = time.perf_counter()
        load_glyphs(Path(folder), params)
        cached = time.perf_counter() - start
    images = sum(len(dataset.split(name)) for name in ("base", "val", "novel"))
    side = params.image_size
    print(f"glyphs, default parameters: {images} images of {side}x{side}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  build from fonts      {build:7.2f} s")
    print(f"  load from cache       {cached:7.2f} s")
    for split in (dataset.base, dataset.val, dataset.novel):
        chars = "".join(unicodedata.lookup(name) for name in split.class_names)
        print(f"  {split.num_classes:3d} classes: {chars}")

    count = args.compare
    masks, index = augmentation_inputs(params, count)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    augment_glyphs(masks, index, params.augment, params.image_size, generator)
    batched = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(count):  # the same work one image at a time
        augment_glyphs(masks[index[i:i + 1]], torch.zeros(1, dtype=torch.int64), params.augment,
                       params.image_size, generator)
    one_by_one = time.perf_counter() - start
    print(f"augmentation of {count} images")
    print(f"  batched               {batched:7.2f} s")
    print(f"  one image per call    {one_by_one:7.2f} s   ({one_by_one / batched:.1f}x slower)")
    print(f"sample grid: {save_sample_grid(dataset, args.sample)}")


if __name__ == "__main__":
    main()
