"""A transparent sprite saved as JPEG (no alpha) shows the sprite on the matte, not the colour
that hid under its transparent pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.core.alpha import composite_on_matte, parse_matte
from service.core.imaging import encode_image, matte_warning


def _sprite() -> tuple[np.ndarray, np.ndarray]:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:] = (160, 0, 200)  # purple garbage under the transparent area
    rgb[16:48, 16:48] = (30, 140, 60)  # the green sprite
    alpha = np.zeros((64, 64), np.uint8)
    alpha[16:48, 16:48] = 255
    alpha[16:48, 15] = 128  # a half-covered edge column
    return rgb, alpha


@pytest.mark.parametrize(("matte", "colour"), [("#ffffff", (255, 255, 255)),
                                               ("black", (0, 0, 0)), ("#08f", (0, 136, 255))])
def test_jpeg_of_transparent_sprite_shows_sprite_on_matte(matte: str,
                                                          colour: tuple[int, int, int]) -> None:
    rgb, alpha = _sprite()
    data = encode_image(rgb, alpha, "jpeg", matte=parse_matte(matte))
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(out[2:12, 2:12] - colour).max() <= 4  # background is the matte
    assert np.abs(out[24:40, 24:40] - (30, 140, 60)).max() <= 6  # the sprite itself
    edge = out[30, 15]
    expected = (np.array((160, 0, 200)) * 128 + np.array(colour) * 127) / 255
    assert np.abs(edge - expected).max() <= 20  # half coverage blends with the matte
    assert "matte" in (matte_warning("jpeg", alpha, matte) or "")


def test_formats_with_alpha_keep_it_and_warn_nothing() -> None:
    rgb, alpha = _sprite()
    png = Image.open(io.BytesIO(encode_image(rgb, alpha, "png")))
    assert png.mode == "RGBA" and np.array_equal(np.asarray(png)[:, :, 3], alpha)
    assert matte_warning("png", alpha) is None
    assert matte_warning("jpeg", np.full((4, 4), 255, np.uint8)) is None  # opaque: no warning


def test_sixteen_bit_matte_is_widened() -> None:
    rgb = np.full((2, 2, 3), 1000, np.uint16)
    alpha = np.zeros((2, 2), np.uint16)
    assert (composite_on_matte(rgb, alpha, (255, 255, 255)) == 65535).all()


def test_bad_matte_is_refused() -> None:
    with pytest.raises(ValueError, match="not a colour"):
        parse_matte("purple-ish")
