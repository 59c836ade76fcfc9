"""Normal maps stay unit vectors pointing where the upscaled surface points; masks stay data."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.assets import green_convention
from service.core.normalmap import (
    decode_normals,
    normals_from_height,
    resample_plane,
    upscale_channels,
    upscale_normals,
)
from tests.core.asset_factory import height16, height_field, normal_map


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.clip((a * b).sum(axis=2) / np.linalg.norm(a, axis=2) / np.linalg.norm(b, axis=2),
                  -1, 1)
    return np.degrees(np.arccos(cos))


@pytest.mark.parametrize("green", ["opengl", "directx"])
@pytest.mark.parametrize("factor", [2, 4])
def test_normal_map_from_height_field_stays_unit_and_follows_the_surface(
        green: str, factor: int) -> None:
    size = 64
    height = height_field(size, seed=7)
    encoded = normal_map(size, 7, green)
    out = upscale_normals(encoded, size * factor, size * factor, tileable=True)
    assert out.shape == (size * factor, size * factor, 3) and out.dtype == np.uint8
    vectors = decode_normals(out)
    length_error = np.abs(np.linalg.norm(vectors, axis=2) - 1.0)
    assert float(length_error.mean()) < 0.005
    # the surface the upscaled height field describes: pixels are 1/k as wide, so heights in
    # new-pixel units are k times larger
    big_height = resample_plane(height.astype(np.float32), size * factor, size * factor,
                                wrap=True) * factor
    expected = normals_from_height(big_height, green=green)
    angles = _angles_deg(vectors, expected)
    assert float(angles.mean()) < 2.0 and float(np.percentile(angles, 99)) < 6.0
    # green kept as found
    assert green_convention(out)[0] == green
    # a colour resampler would have shortened the vectors; ours did not
    naive = upscale_channels(encoded, size * factor, size * factor, tileable=True)
    assert float(np.abs(np.linalg.norm(decode_normals(naive), axis=2) - 1).mean()) > \
        float(length_error.mean())


def test_sixteen_bit_normal_map_stays_sixteen_bit() -> None:
    encoded = normal_map(32, 2, dtype=np.uint16)
    out = upscale_normals(encoded, 64, 64)
    assert out.dtype == np.uint16
    assert float(np.abs(np.linalg.norm(decode_normals(out), axis=2) - 1).mean()) < 0.001


def test_two_channel_map_keeps_blue_empty() -> None:
    encoded = normal_map(32, 3)
    encoded[:, :, 2] = 0
    out = upscale_normals(encoded, 96, 96)
    assert (out[:, :, 2] == 0).all()
    xy = decode_normals(out)[:, :, :2]
    assert float((xy ** 2).sum(axis=2).max()) <= 1.01


def test_sixteen_bit_height_map_upscaled_per_channel_stays_sixteen_bit() -> None:
    grey = height16(48, 4)
    out = upscale_channels(grey, 96, 96)
    assert out.dtype == np.uint16 and out.shape == (96, 96, 3)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    assert len(np.unique(out)) > 256  # real 16-bit precision, not 8-bit steps


def test_mask_channels_do_not_mix() -> None:
    pack = np.zeros((16, 16, 3), np.uint8)
    pack[:, :8, 0] = 255  # R only on the left, G only on the right
    pack[:, 8:, 1] = 255
    out = upscale_channels(pack, 32, 32)
    assert (out[:, :, 2] == 0).all()  # blue stays empty: no colour fix, no cross-talk
    assert out[:, :10, 1].max() == 0 and out[:, 22:, 0].max() == 0  # beyond the filter
