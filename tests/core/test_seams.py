"""Seam metrics reproduce the reference anchor table's ordering and agree with a plain
whole-image implementation of their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.errors import ParamsError
from service.core.seams import gaussian_blur, lrs, luma, sgr, tcd, to_lab, wrap_seam_lrs
from service.core.tiling import extract_tile, plan_tiles

N = 512


def _cut(plane: np.ndarray, delta: float, feather: int, rgb8) -> np.ndarray:
    """Right half offset by ``delta`` levels, cut at x = N/2, optionally feathered linearly."""
    x = np.arange(plane.shape[1])
    if feather:
        w = np.clip((x - (N // 2 - feather / 2) + 0.5) / feather, 0.0, 1.0)
    else:
        w = (x >= N // 2).astype(float)
    return rgb8(plane + delta * w[None, :])


@pytest.fixture
def scene(texture, rgb8) -> tuple:
    plane = texture(N, N, seed=0)
    return plane, rgb8(plane)


def test_anchor_table_ordering(scene, rgb8) -> None:
    plane, ref = scene
    seams = [N // 2]

    def both(delta: float, feather: int) -> tuple[float, float]:
        out = _cut(plane, delta, feather, rgb8)
        return sgr(out, seams, []), lrs(out, ref, seams, [])

    clean, hard2, hard4, hard8 = both(0, 0), both(2, 0), both(4, 0), both(8, 0)
    soft16, soft64 = both(8, 16), both(8, 64)
    assert clean[0] <= 1.10 and clean[1] < 0.1  # clean: SGR about 1
    assert hard8[0] > 1.5  # delta 8 hard cut
    assert clean[0] < hard2[0] < hard4[0] < hard8[0]
    assert clean[1] < hard2[1] < hard4[1] < hard8[1]
    assert 5.5 < hard8[1] < 7.5  # anchor: 6.42 levels
    assert soft16[0] <= 1.10 and soft16[1] > 3.0  # feathering hides the cut from SGR, not from LRS
    assert soft64[1] < 1.0 < soft16[1]


def _reference_lrs(out: np.ndarray, ref: np.ndarray, x0: int) -> float:
    """LRS at one vertical seam, straight from the definition on the whole image."""
    d = gaussian_blur(luma(out) - luma(ref))

    def step(x: int) -> float:
        return float(np.abs(d[:, x:x + 8].mean(axis=1) - d[:, x - 8:x].mean(axis=1)).mean())

    return step(x0) - float(np.median([step(x0 + o) for o in (-40, -32, -24, 24, 32, 40)]))


@pytest.mark.parametrize("x0", [48, 100, 256, 400, 463])
def test_lrs_on_strips_equals_the_whole_image_definition(scene, rgb8, x0: int) -> None:
    plane, ref = scene
    out = rgb8(plane + 6.0 * (np.arange(N) >= x0)[None, :] + np.sin(np.arange(N) / 9.0)[:, None])
    assert lrs(out, ref, [x0], []) == pytest.approx(_reference_lrs(out, ref, x0), abs=1e-9)
    transposed = np.ascontiguousarray(out.transpose(1, 0, 2))
    assert lrs(transposed, np.ascontiguousarray(ref.transpose(1, 0, 2)), [], [x0]) == pytest.approx(
        _reference_lrs(out, ref, x0), abs=1e-9)


def test_tcd_catches_a_tinted_tile(scene, rgb8) -> None:
    plane, ref = scene
    plan = plan_tiles(N, N, 256, 32)
    tinted = ref.copy()
    t = plan.tiles[3]
    tinted[t.y:t.y + t.h, t.x:t.x + t.w] = rgb8(plane[t.y:t.y + t.h, t.x:t.x + t.w], (10.0, 0.0, -10.0))
    assert tcd(ref, ref, plan) == 0.0
    assert tcd(tinted, ref, plan) > 5.0


def test_tcd_equals_the_per_tile_definition_on_a_wrapping_plan(scene, rgb8) -> None:
    plane, ref = scene
    plan = plan_tiles(N, N, 200, 40, tileable=True)  # boxes run past the edges and wrap
    out = rgb8(plane + np.linspace(0, 12, N)[None, :], (0.0, 4.0, -6.0))

    def mean_lab(img: np.ndarray, i: int) -> np.ndarray:
        return to_lab(extract_tile(img, plan.tiles[i])).reshape(-1, 3).astype(np.float64).mean(axis=0)

    expected = max(float(np.linalg.norm(mean_lab(out, i) - mean_lab(ref, i))) for i in range(len(plan.tiles)))
    assert tcd(out, ref, plan) == pytest.approx(expected, abs=1e-3)
    assert expected > 2.0


def test_lab_conversion_known_colours() -> None:
    lab = to_lab(np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0]]], np.uint8))[0]
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    assert lab[1] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert lab[2] == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)


def test_wrap_seam_lrs_tells_a_seamless_texture_from_a_broken_one(texture, rgb8) -> None:
    plane = texture(200, 300, seed=4)  # periodic
    ramp = np.linspace(0.0, 8.0, 300)[None, :]  # left and right edges differ by 8 levels
    seamless, broken = rgb8(plane), rgb8(plane + ramp)
    assert wrap_seam_lrs(seamless, seamless) == 0.0
    assert wrap_seam_lrs(broken, seamless) > 5.0  # with the seamless input as reference
    smooth = rgb8(texture(200, 300, seed=4, std=6.0))
    assert wrap_seam_lrs(smooth) < 1.0  # no reference: coarse, but a clear break stands out
    assert wrap_seam_lrs(rgb8(texture(200, 300, seed=4, std=6.0) + 3 * ramp)) > 5.0
    small = rgb8(texture(40, 30, seed=5))  # smaller than the metric's reach: read periodically
    assert wrap_seam_lrs(rgb8(texture(40, 30, seed=5) + 10.0), small) < 0.1


def test_uint16_and_alpha_are_measured_in_8_bit_levels(scene, rgb8) -> None:
    plane, ref = scene
    out = _cut(plane, 8, 0, rgb8)
    wide = np.concatenate([out.astype(np.uint16) * 257, np.full((N, N, 1), 65535, np.uint16)], axis=2)
    wide_ref = ref.astype(np.uint16) * 257
    assert sgr(wide, [N // 2], []) == pytest.approx(sgr(out, [N // 2], []))
    assert lrs(wide, wide_ref, [N // 2], []) == pytest.approx(lrs(out, ref, [N // 2], []))


def test_no_seams_give_neutral_values_and_size_mismatch_is_an_error(scene) -> None:
    _, ref = scene
    assert sgr(ref, [], []) == 1.0
    assert lrs(ref, ref, [], []) == 0.0
    with pytest.raises(ParamsError, match="resize the reference"):
        lrs(ref, ref[:10], [5], [])
    with pytest.raises(ParamsError):
        tcd(ref, ref, plan_tiles(100, 100))
