"""Seeded, batched augmentation that turns clean glyph masks into small colour images.

Everything runs on whole batches with torch ops, and every random number comes from one
`torch.Generator` in a fixed order, so the same masks and seed give the same bytes on any
machine and any thread count: the steps whose last bits may depend on the CPU (sin/cos, the
bilinear warp) run in float64, far below one grey level, and the rest is exact arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CHUNK = 2048  # images warped at once; bounds memory at about 70 MB per float64 tensor
TENT_SUM = 16.0  # sum of the [1, 2, 1] x [1, 2, 1] blur, see `tent_blur`
EDGE_WIDTH = 0.6  # grey levels over which the re-thresholded glyph edge goes from 0 to 1


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes, each drawn uniformly per image.

    Args:
        max_rotation_degrees: rotation in [-r, r].
        scale_range: overall glyph scale.
        max_aspect_log: log of the width / height ratio change in [-a, a].
        max_shear: horizontal shear in [-s, s].
        max_shift: shift of the glyph in each direction, as a fraction of the half image side.
        stroke_range: grey level of the anti-aliased glyph edge that becomes the new half-ink
            edge: below 0.5 thickens strokes, above 0.5 thins them.
        min_contrast: the least brightness difference between ink and background, in [0, 1].
        max_colour_jitter: per-channel change of the ink colour away from pure brightness.
        max_noise: amplitude of uniform pixel noise, drawn per image in [0, max_noise].
    """

    max_rotation_degrees: float = 15.0
    scale_range: tuple[float, float] = (0.7, 1.1)
    max_aspect_log: float = 0.1
    max_shear: float = 0.2
    max_shift: float = 0.12
    stroke_range: tuple[float, float] = (0.3, 0.65)
    min_contrast: float = 0.4
    max_colour_jitter: float = 0.15
    max_noise: float = 0.03


def uniform(generator: torch.Generator, count: int, low: float, high: float,
            width: int = 1) -> torch.Tensor:
    """`count` x `width` float64 numbers drawn uniformly from [low, high)."""
    draw = torch.rand((count, width), generator=generator, dtype=torch.float64)
    return low + (high - low) * draw


def random_affine(config: AugmentConfig, count: int, generator: torch.Generator) -> torch.Tensor:
    """Sampling matrices [count, 2, 3] for `F.affine_grid`: output coordinates -> input.

    The glyph is scaled (with aspect change), sheared, rotated and then shifted; the matrix
    is the inverse of that forward map, written out for 2 x 2 matrices.
    """
    angle = uniform(generator, count, -1.0, 1.0)[:, 0] * math.radians(config.max_rotation_degrees)
    scale = uniform(generator, count, *config.scale_range)[:, 0]
    log_aspect = uniform(generator, count, -config.max_aspect_log, config.max_aspect_log)[:, 0]
    aspect = torch.exp(log_aspect)
    shear = uniform(generator, count, -config.max_shear, config.max_shear)[:, 0]
    shift = uniform(generator, count, -config.max_shift, config.max_shift, width=2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = scale * aspect, scale / aspect
    # forward = rotation @ [[1, shear], [0, 1]] @ diag(sx, sy)
    a, b = cos * sx, (cos * shear - sin) * sy
    c, d = sin * sx, (sin * shear + cos) * sy
    det = a * d - b * c
    inverse = torch.stack([torch.stack([d, -b], 1), torch.stack([-c, a], 1)], 1)
    inverse = inverse / det[:, None, None]
    offset = -(inverse[:, :, 0] * shift[:, None, 0] + inverse[:, :, 1] * shift[:, None, 1])
    return torch.cat([inverse, offset[:, :, None]], dim=2)


def sampling_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """`F.affine_grid(theta, [N, 1, size, size], align_corners=False)`, written elementwise
    (no matrix product, whose rounding may depend on the CPU's BLAS).

    Args:
        theta: float64 [N, 2, 3] sampling matrices.
        size: side of the output grid.
    """
    centres = (torch.arange(size, dtype=theta.dtype) * 2 + 1) / size - 1
    grid = torch.empty((theta.shape[0], size, size, 2), dtype=theta.dtype)
    for axis in range(2):
        along_x = theta[:, axis, 0, None, None] * centres[None, None, :]
        along_y = (theta[:, axis, 1, None, None] * centres[None, :, None]
                   + theta[:, axis, 2, None, None])
        grid[..., axis] = along_x + along_y
    return grid


def tent_blur(masks: torch.Tensor) -> torch.Tensor:
    """Blur uint8 masks [G, C, C] by [1, 2, 1] x [1, 2, 1] (unnormalised), float32 [G, 1, C, C].

    Sampling the blurred double-resolution masks at the output resolution stands in for
    warping at double resolution and averaging 2 x 2 blocks. Sums of integer grey levels are
    exact in float32, whatever the order (unlike a convolution routine, which may transform).
    """
    padded = F.pad(masks[:, None].to(torch.float32), (1, 1, 1, 1))
    rows = padded[..., :-2] + 2 * padded[..., 1:-1] + padded[..., 2:]
    return rows[..., :-2, :] + 2 * rows[..., 1:-1, :] + rows[..., 2:, :]


def change_stroke(alpha: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """Thicken or thin anti-aliased strokes by moving the grey level taken as the glyph's edge.

    Args:
        alpha: [N, 1, H, W] ink coverage in [0, 1].
        edge: [N], the grey level that becomes 0.5 (below 0.5 thickens).
    """
    return ((alpha - edge[:, None, None, None]) / EDGE_WIDTH + 0.5).clamp(0.0, 1.0)


def random_colours(config: AugmentConfig, count: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Background and ink colours [count, 3] in [0, 1], the ink lighter on dark backgrounds
    and darker on light ones by at least about `min_contrast`."""
    background = uniform(generator, count, 0.0, 1.0, width=3)
    contrast = uniform(generator, count, config.min_contrast, 1.0)
    jitter = uniform(generator, count, -config.max_colour_jitter, config.max_colour_jitter, width=3)
    brightness = (0.299 * background[:, 0] + 0.587 * background[:, 1] + 0.114 * background[:, 2])
    direction = torch.where(brightness < 0.5, 1.0, -1.0).to(torch.float64)[:, None]
    ink = (background + direction * contrast + jitter).clamp(0.0, 1.0)
    return background, ink


def augment_glyphs(masks: torch.Tensor, mask_index: torch.Tensor, config: AugmentConfig,
                   image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Turn clean masks into augmented uint8 RGB images [N, 3, image_size, image_size].

    Args:
        masks: uint8 [G, C, C] clean glyph masks, C = 2 * image_size (twice the output
            resolution, blurred before sampling, which anti-aliases the result).
        mask_index: int64 [N], the mask each image starts from.
        config: the augmentation ranges.
        image_size: output side in pixels.
        generator: the source of all randomness, consumed in a fixed order.
    """
    count, canvas = mask_index.shape[0], masks.shape[-1]
    if canvas != 2 * image_size:
        raise ValueError(f"masks must be {2 * image_size} pixels wide, got {canvas}")
    theta = random_affine(config, count, generator)
    edge = uniform(generator, count, *config.stroke_range)[:, 0]
    background, ink = random_colours(config, count, generator)
    noise_level = uniform(generator, count, 0.0, config.max_noise)
    blurred = tent_blur(masks)
    images = torch.empty((count, 3, image_size, image_size), dtype=torch.uint8)
    for start in range(0, count, CHUNK):
        part = slice(start, min(start + CHUNK, count))
        glyphs = blurred[mask_index[part]].to(torch.float64)
        warped = F.grid_sample(glyphs, sampling_grid(theta[part], image_size), mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        alpha = change_stroke(warped / (255.0 * TENT_SUM), edge[part])
        rgb = background[part, :, None, None] * (1 - alpha) + ink[part, :, None, None] * alpha
        noise = torch.rand(alpha.shape, generator=generator, dtype=torch.float64) * 2 - 1
        rgb = rgb + noise * noise_level[part, :, None, None]  # the same on all channels
        images[part] = (rgb.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images
