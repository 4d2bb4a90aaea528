"""Batched image preprocessing on the training device: uint8 in, normalized float out.

`to_float` is the one normalization used for training and for feature extraction alike;
`augment` adds random crop with padding, horizontal flip and colour jitter, drawing every random
number from one CPU `torch.Generator`, so a batch's augmentation is a pure function of its seed.

Example:
    >>> batch = augment(images_uint8, torch.Generator().manual_seed(0))   # [B, 3, H, W] float32
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GRAY = (0.299, 0.587, 0.114)


def _per_channel(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> mean/std normalized, channels_last."""
    images = (images - _per_channel(MEAN, images)) / _per_channel(STD, images)
    return images.contiguous(memory_format=torch.channels_last)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 normalized with the ImageNet mean/std, channels_last."""
    return normalize(images.float().div_(255.0))


def default_padding(image_size: int) -> int:
    """Crop padding: 4 pixels at 32x32 (as in RFS), 10 at 84x84."""
    return max(1, image_size // 8)


def augment(images: torch.Tensor, generator: torch.Generator, *, padding: int | None = None,
            flip: bool = True, jitter: float = 0.4) -> torch.Tensor:
    """Randomly crop (zero padding), flip and colour-jitter a batch; return it normalized.

    The same random numbers are drawn whatever the settings, so turning one augmentation off
    leaves the others' draws unchanged.

    Args:
        images: uint8 [B, 3, H, W] on any device.
        generator: CPU generator, the only source of randomness.
        padding: pixels of zero padding around the image before cropping (default `H // 8`).
        flip: mirror half of the images horizontally.
        jitter: brightness, contrast and saturation factors are drawn from [1 - jitter, 1 + jitter].
    """
    batch, _, height, width = images.shape
    padding = default_padding(height) if padding is None else padding
    # All random numbers come from the CPU generator in a fixed order, then move to the device.
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    mirror = (torch.rand(batch, generator=generator) < 0.5) & flip
    factors = 1.0 + jitter * (2.0 * torch.rand(3, batch, generator=generator) - 1.0)
    device = images.device
    cropped = crop_and_flip(images, top.to(device), left.to(device), mirror.to(device), padding)
    brightness, contrast, saturation = (f.to(device).view(batch, 1, 1, 1) for f in factors)
    return normalize(color_jitter(cropped.float().div_(255.0), brightness, contrast, saturation))


def crop_and_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                  padding: int) -> torch.Tensor:
    """Crop each image of the zero-padded batch at (top, left), mirrored where `flip`, in one gather.

    Args:
        images: [B, 3, H, W].
        top: [B] row offsets in [0, 2 * padding].
        left: [B] column offsets in [0, 2 * padding].
        flip: [B] bool, mirror horizontally.
        padding: zero padding on each side.
    """
    batch, channels, height, width = images.shape
    padded_width = width + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)).flatten(2)       # [B, 3, P*P]
    rows = top.view(-1, 1) + torch.arange(height, device=images.device)         # [B, H]
    columns = torch.arange(width, device=images.device).expand(batch, width)
    columns = torch.where(flip.view(-1, 1), columns.flip(1), columns) + left.view(-1, 1)  # [B, W]
    # A gather over the flattened padded image (the same index for every channel) is several
    # times faster on CPU than 4-D advanced indexing, and keeps the NCHW layout that the
    # colour jitter's channel reductions are fastest on.
    flat = rows.view(batch, height, 1) * padded_width + columns.view(batch, 1, width)
    flat = flat.view(batch, 1, height * width).expand(batch, channels, height * width)
    return padded.gather(2, flat).view(batch, channels, height, width)


def color_jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                 saturation: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, then saturation, like torchvision's ColorJitter in a fixed order.

    Args:
        images: float [B, 3, H, W] in [0, 1].
        brightness: [B, 1, 1, 1] factors (1 leaves the image unchanged); same for the others.
    """
    gray_weights = _per_channel(GRAY, images)
    images = (images * brightness).clamp_(0.0, 1.0)
    mean_gray = (images * gray_weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    images = torch.lerp(mean_gray, images, contrast).clamp_(0.0, 1.0)
    gray = (images * gray_weights).sum(dim=1, keepdim=True)
    return torch.lerp(gray, images, saturation).clamp_(0.0, 1.0)
