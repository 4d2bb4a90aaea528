"""Every PIL image mode is decoded faithfully into 8-bit RGB, or refused by name."""
import numpy as np
import pytest
from PIL import Image

from episodes import UserError
from episodes.imagefiles import decode_image

GRAY = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 4)  # 16 gray levels, black to near white


def decoded(tmp_path, image: Image.Image, name: str) -> np.ndarray:
    image.save(tmp_path / name)
    return decode_image(tmp_path / name, 0).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name, make", [
    ("gray16.png", lambda: Image.fromarray(GRAY.astype(np.uint16) * 257)),             # I;16: v -> 257 v
    ("gray16.tif", lambda: Image.fromarray(GRAY.astype(np.uint16) * 257)),
    ("float.tif", lambda: Image.fromarray(GRAY.astype(np.float32) / 255)),             # F on [0, 1]
    ("gray8.png", lambda: Image.fromarray(GRAY)),
    ("bilevel.png", lambda: Image.fromarray(GRAY).convert("1", dither=Image.Dither.NONE)),
])
def test_gray_modes_keep_their_levels(tmp_path, name, make):
    image = make()
    expected = GRAY if image.mode != "1" else np.where(GRAY >= 128, 255, 0)
    pixels = decoded(tmp_path, image, name)
    assert np.array_equal(pixels, np.repeat(expected[..., None], 3, axis=2)), (image.mode, pixels[..., 0])


def test_transparent_pixels_are_shown_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    pixels = decoded(tmp_path, Image.fromarray(rgba, mode="RGBA"), "alpha.png")
    assert (pixels[:2] == [200, 0, 0]).all() and (pixels[2:] == 255).all()


def test_colour_spaces_match_pils_own_conversion(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    assert np.array_equal(decoded(tmp_path, cmyk, "cmyk.tif"), np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("name, make, says", [
    ("far.tif", lambda: Image.fromarray(GRAY.astype(np.float32)), "PIL mode F"),
    ("int32.tif", lambda: Image.fromarray(GRAY.astype(np.int32) << 20), "PIL mode 'I'"),
])
def test_modes_without_a_known_scale_are_refused_by_name(tmp_path, name, make, says):
    with pytest.raises(UserError, match=says):
        decoded(tmp_path, make(), name)
