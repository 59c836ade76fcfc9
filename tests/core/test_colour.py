"""Colour fix: per-tile tints are pulled back to the reference, new detail is kept."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.blending import blend_tiles
from service.core.colour import adain_colour_fix, colour_fix, wavelet_colour_fix
from service.core.errors import ParamsError
from service.core.seams import lrs, sgr, tcd
from service.core.tiling import extract_tile, plan_tiles

TINTS = [(14.0, -6.0, 4.0), (-10.0, 8.0, -12.0), (6.0, 12.0, -8.0), (-12.0, -10.0, 10.0)]


def _refined(plane: np.ndarray, rgb8, tint: tuple, seed: int) -> np.ndarray:
    """What a drifting diffusion tile looks like: the reference, a global tint, new fine detail."""
    detail = np.random.default_rng(seed).normal(0.0, 6.0, plane.shape)
    return rgb8(plane + detail, tint)


@pytest.mark.parametrize("fix", [wavelet_colour_fix, adain_colour_fix])
def test_colour_fix_removes_a_per_tile_tint(texture, rgb8, fix) -> None:
    plane = texture(384, 384, seed=7)
    ref = rgb8(plane)
    plan = plan_tiles(384, 384, 224, 64)
    refined = {t.index: _refined(extract_tile(plane[..., None], t)[..., 0], rgb8, TINTS[t.index], t.index)
               for t in plan.tiles}
    drifted = blend_tiles(plan, lambda i: refined[i], channels=3, dtype=np.uint8)
    fixed = blend_tiles(plan, lambda i: fix(refined[i], extract_tile(ref, plan.tiles[i])),
                        channels=3, dtype=np.uint8)
    assert tcd(drifted, ref, plan) > 5.0
    assert tcd(fixed, ref, plan) < 2.0


def test_wavelet_fix_keeps_the_new_detail(texture, rgb8) -> None:
    plane = texture(256, 256, seed=8)
    ref = rgb8(plane)
    detail = np.random.default_rng(1).normal(0.0, 6.0, plane.shape)
    refined = rgb8(plane + detail, (20.0, -15.0, 5.0))
    fixed = wavelet_colour_fix(refined, ref)
    kept = fixed.astype(float)[..., 1] - ref.astype(float)[..., 1]
    assert np.corrcoef(kept.ravel(), detail.ravel())[0, 1] > 0.9
    assert abs(float(kept.mean())) < 0.5  # the green tint of -15 is gone


def test_fixing_an_image_against_itself_changes_nothing(texture, rgb8) -> None:
    img = rgb8(texture(100, 130, seed=9), (3.0, 0.0, -3.0))
    assert np.array_equal(wavelet_colour_fix(img, img), img)
    assert np.abs(adain_colour_fix(img, img).astype(int) - img).max() <= 1


def test_banded_whole_image_fix_equals_the_one_shot_fix(texture, rgb8) -> None:
    plane = texture(300, 90, seed=10)
    ref = rgb8(plane)
    img = rgb8(plane + np.random.default_rng(2).normal(0.0, 5.0, plane.shape), (9.0, -4.0, 2.0))
    assert np.array_equal(colour_fix(img, ref, "wavelet", rows=37), wavelet_colour_fix(img, ref))
    banded = colour_fix(img, ref, "adain", rows=37).astype(int)
    assert np.abs(banded - adain_colour_fix(img, ref)).max() <= 1
    assert np.array_equal(colour_fix(img, ref, "none"), img)


def test_uint16_and_alpha_channels_are_supported(texture) -> None:
    plane = texture(64, 64, seed=11) * 257
    ref = np.clip(np.stack([plane] * 4, axis=-1), 0, 65535).astype(np.uint16)
    tinted = np.clip(ref.astype(np.int64) + [3000, -2000, 1000, 0], 0, 65535).astype(np.uint16)
    fixed = wavelet_colour_fix(tinted, ref)
    assert fixed.dtype == np.uint16
    assert np.abs(fixed.astype(np.int64) - ref).mean() < 60  # < 0.1% of full scale


def test_mismatched_reference_and_unknown_mode_are_clear_errors() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ParamsError, match="same shape"):
        wavelet_colour_fix(a, np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ParamsError, match="same shape"):
        adain_colour_fix(a, np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(ParamsError, match="unknown colour fix"):
        colour_fix(a, a, "histogram")  # type: ignore[arg-type]


def _drifting_tile(plane: np.ndarray, tint: tuple, seed: int) -> np.ndarray:
    """A refined tile whose colour drifts on its own: a flat tint plus a shading ramp across it,
    over new fine detail (float, before rounding)."""
    h, w = plane.shape
    ramp = np.linspace(-6.0, 6.0, w)[None, :] * (1 if seed % 2 else -1)
    detail = np.random.default_rng(seed).normal(0.0, 6.0, plane.shape)
    return (plane + detail + ramp)[..., None] + np.asarray(tint)[None, None, :]


def test_per_tile_fix_leaves_no_seam_and_no_tint(texture, rgb8) -> None:
    """Each tile fixed on its own against the reference under it (as tiles arrive in a job),
    then blended: no tile keeps its tint (TCD), no seam shows (SGR, LRS)."""
    plane = texture(448, 448, seed=12)
    ref = rgb8(plane)
    plan = plan_tiles(448, 448, 192, 48)
    tints = [(16.0, 4.0, -6.0), (-12.0, -14.0, -4.0), (8.0, 14.0, -10.0), (-14.0, -2.0, 12.0)] * 3
    raw = {t.index: np.clip(np.rint(_drifting_tile(extract_tile(plane[..., None], t)[..., 0],
                                                   tints[t.index], t.index)), 0, 255
                            ).astype(np.uint8) for t in plan.tiles}
    drifted = blend_tiles(plan, lambda i: raw[i], channels=3, dtype=np.uint8)
    fixed = blend_tiles(plan, lambda i: wavelet_colour_fix(raw[i], extract_tile(ref, plan.tiles[i])),
                        channels=3, dtype=np.uint8)
    seams = (plan.seams_x, plan.seams_y)
    assert tcd(drifted, ref, plan) > 5.0 and lrs(drifted, ref, *seams) > 1.0  # visible without
    assert tcd(fixed, ref, plan) < 2.0
    assert sgr(fixed, *seams) <= 1.10
    assert lrs(fixed, ref, *seams) <= 1.0
    # and it is as good as fixing the blended image once
    whole = colour_fix(drifted, ref, "wavelet")
    assert np.abs(fixed.astype(int) - whole).mean() < 1.0
