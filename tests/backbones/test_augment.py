"""Batched augmentation: crop with padding, flip, colour jitter, normalization, reproducibility."""
import torch

from backbones.augment import MEAN, STD, augment, color_jitter, crop_and_flip, to_float


def ramp_images(batch: int = 4, size: int = 8) -> torch.Tensor:
    """uint8 images whose pixel value encodes its column (and channel), easy to track."""
    columns = torch.arange(size, dtype=torch.uint8) * 10 + 10
    image = columns.expand(3, size, size) + torch.tensor([0, 1, 2], dtype=torch.uint8).view(3, 1, 1)
    return image.expand(batch, 3, size, size).clone()


def test_to_float_normalizes_with_the_mean_and_std_in_channels_last():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = to_float(images)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    expected = (1.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


def test_crop_without_offset_or_flip_is_the_identity_and_flip_mirrors():
    images = ramp_images()
    zeros = torch.zeros(4, dtype=torch.int64)
    same = crop_and_flip(images, zeros + 2, zeros + 2, torch.zeros(4, dtype=torch.bool), padding=2)
    assert torch.equal(same, images)
    mirrored = crop_and_flip(images, zeros + 2, zeros + 2, torch.ones(4, dtype=torch.bool), padding=2)
    assert torch.equal(mirrored, images.flip(-1))


def test_crop_shifts_each_image_by_its_own_offset_and_pads_with_zeros():
    images = ramp_images(batch=2)
    top = torch.tensor([0, 4])
    left = torch.tensor([0, 4])
    out = crop_and_flip(images, top, left, torch.zeros(2, dtype=torch.bool), padding=2)
    # Image 0 moved 2 pixels right and down: zero border top-left; image 1 moved up-left.
    assert (out[0, :, :2, :] == 0).all() and (out[0, :, :, :2] == 0).all()
    assert torch.equal(out[0, :, 2:, 2:], images[0, :, :6, :6])
    assert torch.equal(out[1, :, :6, :6], images[1, :, 2:, 2:])
    assert (out[1, :, 6:, :] == 0).all()


def test_color_jitter_with_unit_factors_changes_nothing_and_zero_saturation_makes_gray():
    images = torch.rand(3, 3, 5, 5)
    ones = torch.ones(3, 1, 1, 1)
    assert torch.allclose(color_jitter(images, ones, ones, ones), images)
    gray = color_jitter(images, ones, ones, torch.zeros(3, 1, 1, 1))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    flat = color_jitter(images, ones, torch.zeros(3, 1, 1, 1), ones)
    assert torch.allclose(flat, flat[:, :, :1, :1].expand_as(flat))   # zero contrast: one colour


def test_augment_is_a_pure_function_of_the_generator_seed():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    first = augment(images, torch.Generator().manual_seed(7))
    again = augment(images, torch.Generator().manual_seed(7))
    other = augment(images, torch.Generator().manual_seed(8))
    assert first.shape == (16, 3, 32, 32) and first.dtype == torch.float32
    assert first.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_augment_varies_images_within_the_batch():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(32, -1, -1, -1)
    out = augment(images, torch.Generator().manual_seed(0))
    distinct = {tuple(out[i].flatten()[:64].tolist()) for i in range(32)}
    assert len(distinct) > 16


def test_each_augmentation_can_be_turned_off():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    plain = augment(images, torch.Generator().manual_seed(1), padding=0, flip=False, jitter=0.0)
    assert torch.allclose(plain, to_float(images))
    flipped = augment(images, torch.Generator().manual_seed(1), padding=0, flip=True, jitter=0.0)
    mirrored = [not torch.equal(flipped[i], plain[i]) for i in range(16)]
    assert 0 < sum(mirrored) < 16
    assert all(torch.allclose(flipped[i], plain[i].flip(-1)) for i in range(16) if mirrored[i])
