"""Pixel-art scalers: exact integer scale, only input colours, hard edges, rounded diagonals."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.alpha import recombine
from service.core.pixelart import integer_factor, lock_palette, palette, scale_pixels
from tests.core.asset_factory import pixel_sprite


def _colours(pixels: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in palette(pixels)}


@pytest.mark.parametrize("scaler", ["epx", "nearest"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_sprite_scaled_exactly_with_only_input_colours(scaler: str, factor: int) -> None:
    rgb, alpha = pixel_sprite(24, 5)
    sprite = recombine(rgb, alpha)
    out, ran = scale_pixels(sprite, factor, scaler)  # type: ignore[arg-type]
    assert out.shape == (24 * factor, 24 * factor, 4) and out.dtype == np.uint8
    assert _colours(out) <= _colours(sprite)
    assert scaler in ran
    # every output pixel comes from its own source pixel or a direct neighbour
    src = np.repeat(np.repeat(sprite, factor, 0), factor, 1)
    if scaler == "nearest":
        assert np.array_equal(out, src)
    else:
        assert 0 < float((out != src).any(axis=2).mean()) < 0.25


def test_epx_rounds_a_staircase_and_keeps_a_solid_block() -> None:
    block = np.zeros((6, 6), np.uint8)
    block[1:5, 1:5] = 9
    out, _ = scale_pixels(block, 2, "epx")
    assert np.array_equal(out, np.repeat(np.repeat(block, 2, 0), 2, 1)) is False  # corners cut
    assert (out[4:8, 4:8] == 9).all()  # the interior stays solid
    stairs = np.array([[1, 0], [1, 1]], np.uint8)
    out, _ = scale_pixels(np.pad(stairs, 1, constant_values=0), 2, "epx")
    assert set(np.unique(out)) <= {0, 1}


def test_transparent_pixels_hiding_different_colours_count_as_one() -> None:
    sprite = np.zeros((4, 4, 4), np.uint8)
    sprite[:, :, :3] = np.arange(16).reshape(4, 4, 1) * 10  # garbage under transparency
    sprite[1:3, 1:3] = (200, 50, 50, 255)
    out, _ = scale_pixels(sprite, 2, "epx")
    inner = out[2:6, 2:6]
    assert (inner[:, :, 3] == 255).sum() == 12  # square with its 4 corners rounded off by EPX


def test_other_factors_fall_back_to_nearest_and_say_so() -> None:
    rgb, alpha = pixel_sprite(8, 1)
    out, ran = scale_pixels(recombine(rgb, alpha), 5, "epx")
    assert out.shape == (40, 40, 4) and "nearest" in ran


def test_integer_factor() -> None:
    assert integer_factor((16, 8), (48, 24)) == 3
    assert integer_factor((16, 8), (48, 25)) is None
    assert integer_factor((16, 8), (32, 24)) is None


def test_lock_palette_snaps_to_input_colours() -> None:
    rgb, _ = pixel_sprite(16, 2)
    noisy = np.clip(rgb.astype(int) + np.random.default_rng(0).integers(-6, 7, rgb.shape), 0,
                    255).astype(np.uint8)
    locked = lock_palette(noisy, palette(rgb))
    assert np.array_equal(locked, rgb)
