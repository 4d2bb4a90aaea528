"""The built-in `glyphs` dataset: deterministic, well-formed, learnable, cached safely."""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from episodes.base import FewShotDataset
from episodes.glyphs_augment import sampling_grid, tent_blur
from episodes.glyphs_render import (candidate_code_points, drop_lookalikes, is_drawn, load_fonts,
                                    render_glyph, similarity_features)
from episodes.registry import get_dataset_source, load_dataset
from episodes.sources import glyphs
from episodes.sources.glyphs import GlyphsParams, GlyphsSource, load_glyphs

BRIGHTNESS = torch.tensor([0.299, 0.587, 0.114])  # weights of R, G, B
SMALL = GlyphsParams(base_classes=4, val_classes=2, novel_classes=2, images_per_class=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FewShotDataset]:
    """One full default build, through the registry, shared by the tests below."""
    root = tmp_path_factory.mktemp("glyphs-a")
    return root, load_dataset("glyphs", data_root=root)


def characters(dataset: FewShotDataset) -> set[str]:
    names = dataset.base.class_names + dataset.val.class_names + dataset.novel.class_names
    return {unicodedata.lookup(name) for name in names}


def grey(images: torch.Tensor) -> torch.Tensor:
    """[N, 32 * 32] brightness, normalised per image, ink positive whatever the colours."""
    pixels = (images.float() * BRIGHTNESS[None, :, None, None]).sum(1)
    pixels = (pixels - pixels.mean((1, 2), keepdim=True)) / pixels.std((1, 2), keepdim=True)
    border = torch.cat([pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]], 1).mean(1)
    return (pixels * torch.where(border > 0, -1.0, 1.0)[:, None, None]).flatten(1)


def test_default_dataset_has_the_promised_shape(built):
    _, dataset = built
    sizes = {"base": 64, "val": 16, "novel": 20}
    for name, classes in sizes.items():
        split = dataset.split(name)
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape == (classes * 60, 3, 32, 32)
        assert split.class_counts().tolist() == [60] * classes
    names = [set(dataset.split(name).class_names) for name in sizes]
    assert len(set.union(*names)) == sum(sizes.values())  # 100 distinct, disjoint classes


def test_a_second_build_elsewhere_gives_the_same_bytes(built, tmp_path):
    _, first = built
    second = GlyphsSource().load(tmp_path, None, 0)
    for name in ("base", "val", "novel"):
        assert second.split(name).fingerprint == first.split(name).fingerprint


def test_build_matches_the_recorded_fingerprints(built):
    # Recorded with matplotlib 3.11.2 and torch 2.14.1. If the build changed on purpose, bump
    # `glyphs.FORMAT` (so that old caches are not reused) and record the new values.
    _, dataset = built
    fingerprints = [dataset.split(name).fingerprint for name in ("base", "val", "novel")]
    assert fingerprints == ["9ea2f1c562e25536", "a9ff6f903f0543b1", "19e904638854c367"]


def test_images_are_not_blank(built):
    _, dataset = built
    for split in (dataset.base, dataset.val, dataset.novel):
        brightness = (split.images.float() * BRIGHTNESS[None, :, None, None]).sum(1)
        assert brightness.flatten(1).std(1).min() > 8.0  # grey levels; a flat image has 0


def test_nearest_class_mean_on_pixels_tells_novel_classes_apart(built):
    _, dataset = built
    split = dataset.novel
    pixels, labels = grey(split.images), split.labels
    train = (torch.arange(len(labels)) % 60) < 30  # first half of each class fits, second tests
    means = torch.stack([pixels[train & (labels == c)].mean(0) for c in range(split.num_classes)])
    predicted = torch.cdist(pixels[~train], means).argmin(1)
    accuracy = (predicted == labels[~train]).float().mean().item()
    assert accuracy > 5 * (1 / split.num_classes)  # chance is 5% for 20 classes


def test_no_two_classes_render_alike(built):
    _, dataset = built
    chars = characters(dataset)
    # Groups that must contribute at most one class each.
    for group in ["AΑА", "O0ΟО", "l1IΙ", "oO", "cC", "sS", "vV", "wW", "xX", "zZ",
                  "BΒВ", "HΗН", "PΡР", "KΚК", "pрρ", "3З"]:
        assert len(chars & set(group)) <= 1, group
    # And an independent check, finer than the one used to choose the classes.
    sans = next(font for font in load_fonts() if font.name == "DejaVuSans")
    codes = sorted(ord(char) for char in chars if ord(char) in sans.codes)
    features = similarity_features([render_glyph(sans.face, code) for code in codes], pool=2)
    similarity = features @ features.T - 2 * np.eye(len(codes))
    worst = np.unravel_index(similarity.argmax(), similarity.shape)
    assert similarity.max() < 0.95, [chr(codes[i]) for i in worst]


def test_missing_characters_are_not_drawn():
    sans = next(font for font in load_fonts() if font.name == "DejaVuSans")
    private_use = 0xE000
    assert private_use not in sans.codes and render_glyph(sans.face, private_use) is None
    assert not is_drawn(sans, sans.notdef)  # the box a font draws for a missing character
    assert not is_drawn(sans, np.zeros((64, 64), dtype=np.uint8))
    assert is_drawn(sans, render_glyph(sans.face, ord("A")))


def test_warp_grid_and_blur_match_the_torch_routines():
    theta = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [3, 1, 16, 16], align_corners=False)
    assert torch.allclose(sampling_grid(theta, 16), expected, atol=1e-12)
    masks = torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8)
    tent = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])[None, None]
    assert torch.equal(tent_blur(masks), F.conv2d(masks[:, None].float(), tent, padding=1))


def test_lookalikes_are_dropped_in_order_of_preference():
    codes = [ord(char) for char in "AΑoOxy"]
    similarity = np.eye(len(codes))
    similarity[0, 1] = similarity[1, 0] = 0.99  # A / Alpha: duplicates
    similarity[2, 3] = similarity[3, 2] = 0.90  # o / O: alike enough for two cases of a letter
    similarity[4, 5] = similarity[5, 4] = 0.90  # x / y: different letters, kept
    kept = drop_lookalikes(codes, similarity, duplicate=0.95, case_pair=0.85, known=())
    assert [chr(code) for code in kept] == ["A", "o", "x", "y"]
    assert ord("0") in candidate_code_points() and ord("Ж") in candidate_code_points()


def test_cache_is_found_then_reused_without_rebuilding(tmp_path, monkeypatch):
    source = GlyphsSource(SMALL)
    assert source.find(tmp_path, None) is None
    first = source.load(tmp_path, None, 0)
    cache = source.find(tmp_path, None)
    assert cache == tmp_path / "glyphs" / SMALL.cache_name() and cache.name.startswith("glyphs-v1-")
    modified = cache.stat().st_mtime_ns

    def no_build(params):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(glyphs, "build_glyphs", no_build)
    again = source.load(tmp_path, None, 0)
    assert again.novel.fingerprint == first.novel.fingerprint
    assert cache.stat().st_mtime_ns == modified


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path):
    folder = tmp_path / "glyphs"
    first = load_glyphs(folder, SMALL)
    cache = folder / SMALL.cache_name()
    size = cache.stat().st_size
    with open(cache, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rebuilt = load_glyphs(folder, SMALL)
    assert rebuilt.base.fingerprint == first.base.fingerprint
    assert cache.stat().st_size == size


def test_cache_with_tampered_images_is_rebuilt(tmp_path):
    folder = tmp_path / "glyphs"
    first = load_glyphs(folder, SMALL)
    cache = folder / SMALL.cache_name()
    payload = torch.load(cache, weights_only=True)
    payload["splits"]["val"]["images"][0, 0, 0, 0] ^= 1
    torch.save(payload, cache)
    with pytest.warns(RuntimeWarning, match="checksum"):
        rebuilt = load_glyphs(folder, SMALL)
    assert rebuilt.val.fingerprint == first.val.fingerprint


def test_source_is_registered_and_resizes_on_request(tmp_path):
    source = get_dataset_source("glyphs")
    assert isinstance(source, GlyphsSource) and "no download" in source.layout
    resized = GlyphsSource(SMALL).load(tmp_path, None, 20)
    assert resized.base.images.shape[-2:] == (20, 20)
    assert os.listdir(tmp_path / "glyphs") == [SMALL.cache_name()]  # only the native-size cache
