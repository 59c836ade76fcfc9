"""Blending: exact identity, weights summing to one, smooth ramps over actual overlaps,
alpha/channel handling, bounded memory, seam-fix compositing."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.blending import axis_weights, blend_seam_fix, blend_tiles
from service.core.errors import ParamsError
from service.core.seams import lrs, sgr, wrap_seam_lrs
from service.core.tiling import TilePlan, extract_tile, plan_seam_fix, plan_tiles


def _tiles_of(src: np.ndarray, plan: TilePlan) -> Callable[[int], np.ndarray]:
    return lambda i: extract_tile(src, plan.tiles[i])


@st.composite
def _cases(draw: st.DrawFn) -> tuple:
    tile = draw(st.integers(2, 48))
    overlap = draw(st.integers(0, tile - 1))
    width, height = draw(st.integers(1, min(150, 8 * tile))), draw(st.integers(1, min(150, 8 * tile)))
    channels = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    tileable = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return width, height, tile, overlap, channels, dtype, tileable, seed


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_identical_tiles_round_trip_bit_for_bit(case: tuple) -> None:
    width, height, tile, overlap, channels, dtype, tileable, seed = case
    src = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (height, width, channels),
                                               dtype=dtype)
    plan = plan_tiles(width, height, tile, overlap, tileable=tileable)
    out = blend_tiles(plan, _tiles_of(src, plan), channels=channels, dtype=dtype)
    assert out.dtype == dtype and out.shape == src.shape
    assert np.array_equal(out, src)
    for mode in ("band", "offset"):
        fix = plan_seam_fix(plan, mode)  # type: ignore[arg-type]
        assert np.array_equal(blend_seam_fix(out, fix, _tiles_of(src, fix)), src)


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_weights_sum_to_one_and_stay_inside_their_tiles(case: tuple) -> None:
    width, height, tile, overlap, _, _, tileable, _ = case
    plan = plan_tiles(width, height, tile, overlap, tileable=tileable)
    for axis in (plan.axis_x, plan.axis_y):
        assert axis is not None
        weights = axis_weights(axis)
        assert np.all(weights.sum(axis=0) == 1.0)
        assert weights.min() >= 0.0
        for i, start in enumerate(axis.origins):
            inside = np.zeros(axis.length, dtype=bool)
            inside[(start + np.arange(axis.size)) % axis.length] = True
            assert np.all(weights[i, ~inside] == 0.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 32).flatmap(lambda t: st.tuples(
    st.just(t), st.integers(0, t // 2), st.integers(1, 3 * t), st.integers(1, 3 * t), st.booleans())))
def test_two_dimensional_weights_sum_to_one(case: tuple) -> None:
    """Blend 'indicator' tiles (one tile white, the rest black): summed over tiles the result is
    white everywhere, corners included (up to one rounding step per tile)."""
    tile, overlap, width, height, tileable = case
    plan = plan_tiles(width, height, tile, overlap, tileable=tileable)
    total = np.zeros((plan.height, plan.width), dtype=np.int64)
    for k, t in enumerate(plan.tiles):
        def get(i: int, k: int = k, t=t) -> np.ndarray:
            return np.full((t.h, t.w, 1), 65535 if i == k else 0, dtype=np.uint16)

        total += blend_tiles(plan, get, channels=1, dtype=np.uint16)[..., 0]
    assert np.abs(total - 65535).max() <= len(plan.tiles)


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_blend_never_leaves_the_range_of_the_tiles_it_mixes(case: tuple) -> None:
    """Different tiles everywhere: each output pixel lies between the smallest and largest value
    the covering tiles have there (weights are non-negative: no overshoot, no dark rims)."""
    width, height, tile, overlap, channels, dtype, tileable, seed = case
    plan = plan_tiles(min(width, 80), min(height, 80), tile, overlap, tileable=tileable)
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max + 1
    tiles = [rng.integers(0, top, (t.h, t.w, channels), dtype=dtype) for t in plan.tiles]
    out = blend_tiles(plan, lambda i: tiles[i], channels=channels, dtype=dtype)
    low = np.full(out.shape, top, dtype=np.int64)
    high = np.full(out.shape, -1, dtype=np.int64)
    for t, arr in zip(plan.tiles, tiles, strict=True):
        rows = (t.y + np.arange(t.h)) % plan.height
        cols = (t.x + np.arange(t.w)) % plan.width
        box = np.ix_(rows, cols)
        low[box] = np.minimum(low[box], arr)
        high[box] = np.maximum(high[box], arr)
    assert (low <= out).all() and (out <= high).all()


def _seed_blend(tiles: list[np.ndarray], xs: list[int], width: int, overlap: int) -> np.ndarray:
    """The seed's pass-1 blend along x: a linear ramp of the *nominal* overlap on every inner
    edge, full-frame float accumulators, divide."""
    height = tiles[0].shape[0]
    acc = np.zeros((height, width, 3), np.float32)
    wsum = np.zeros((height, width, 1), np.float32)
    for tile, x in zip(tiles, xs, strict=True):
        w = np.ones(tile.shape[1], np.float32)
        ramp = np.linspace(0, 1, overlap, endpoint=False, dtype=np.float32)
        if x > 0:
            w[:overlap] *= ramp
        if x + tile.shape[1] < width:
            w[-overlap:] *= ramp[::-1]
        acc[:, x:x + tile.shape[1]] += tile * w[None, :, None]
        wsum[:, x:x + tile.shape[1]] += w[None, :, None]
    return np.clip(acc / np.maximum(wsum, 1e-6), 0, 255).astype(np.uint8)


def _longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for flag in mask:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def test_seed_clamped_edge_case_gets_a_smooth_ramp_instead_of_a_plateau(texture, rgb8) -> None:
    """2048 wide, tile 1024, overlap 128, three tiles drifting by +8 levels each. The seed puts
    the columns at 0/896/1024 and leaves a 640 px flat 50/50 mix of two tiles; we put them at
    0/512/1024 and cross-fade smoothly over each whole 512 px overlap."""
    plane = texture(48, 2048, seed=1)
    ref = rgb8(plane)
    plan = plan_tiles(2048, 48, 1024, 128)
    drift = {t.col: 8.0 * t.col for t in plan.tiles}
    ours = blend_tiles(plan, lambda i: rgb8(plane, (drift[plan.tiles[i].col],) * 3)[:, plan.tiles[i].x:
                                                                                   plan.tiles[i].x + 1024],
                       channels=3, dtype=np.uint8)
    seed_xs = [0, 896, 1024]
    seed = _seed_blend([rgb8(plane, (8.0 * c,) * 3)[:, x:x + 1024] for c, x in enumerate(seed_xs)],
                       seed_xs, 2048, 128)

    def profile(img: np.ndarray) -> np.ndarray:
        return (img.astype(float) - ref.astype(float)).mean(axis=(0, 2))

    assert _longest_run(np.abs(profile(seed) - 12.0) < 0.5) >= 600  # the seed's plateau
    assert _longest_run(np.abs(profile(ours) - 12.0) < 0.5) < 64
    first_pair = profile(ours)[:1024]  # tiles 0 and 1 overlap on [512, 1024): ramp over all of it
    assert np.count_nonzero((first_pair > 0.5) & (first_pair < 7.5)) >= 300  # a 128 px ramp: < 100
    steps = np.diff(profile(ours))
    assert steps.min() >= 0.0 and steps.max() <= 1.0  # monotone, one quantisation level at most
    assert np.count_nonzero(steps) >= 16  # 16 levels of drift spread out, not cut
    assert sgr(ours, plan.seams_x, plan.seams_y) <= 1.10
    assert lrs(ours, ref, plan.seams_x, plan.seams_y) <= 1.0


def test_tileable_blend_keeps_a_seamless_texture_seamless(texture, rgb8) -> None:
    """Tiles of a seamless texture drift apart (tints by tile column); blended as tileable, the
    wrap-around edge is cross-faded like any seam, so the texture still tiles."""
    plane = texture(96, 600, seed=2)  # periodic: wraps without a seam
    tint = {0: 0.0, 1: 4.0, 2: 8.0, 3: 8.0, 4: 4.0}
    ref = rgb8(plane)

    def blended(tileable: bool) -> np.ndarray:
        plan = plan_tiles(600, 96, 200, 64, tileable=tileable)
        src = {c: rgb8(plane, (tint[c],) * 3) for c in tint}
        return blend_tiles(plan, lambda i: extract_tile(src[plan.tiles[i].col], plan.tiles[i]),
                           channels=3, dtype=np.uint8)

    assert wrap_seam_lrs(blended(tileable=True), ref) <= 1.0
    assert wrap_seam_lrs(blended(tileable=False), ref) > 2.5  # last and first tile meet hard


def test_alpha_and_colour_share_the_weights_for_every_channel_count() -> None:
    rng = np.random.default_rng(5)
    plan = plan_tiles(90, 70, 32, 12)
    tiles = [rng.integers(0, 256, (t.h, t.w, 4), dtype=np.uint8) for t in plan.tiles]
    rgba = blend_tiles(plan, lambda i: tiles[i], channels=4, dtype=np.uint8)
    for c in range(4):
        single = blend_tiles(plan, lambda i, c=c: tiles[i][..., c], channels=1, dtype=np.uint8)
        assert np.array_equal(rgba[..., c], single[..., 0])
    assert len(np.unique(rgba[..., 3])) > 200  # alpha really was blended, not copied from one tile


@pytest.mark.slow  # 7-24 s: the fast tier leaves it to CI
def test_only_two_rows_of_tiles_are_held_and_each_is_fetched_once() -> None:
    plan = plan_tiles(400, 400, 64, 16)
    calls: list[int] = []
    alive: set[int] = set()
    peak = 0

    def get(i: int) -> np.ndarray:
        nonlocal peak
        gc.collect()
        calls.append(i)
        arr = np.full((64, 64, 3), i % 256, dtype=np.uint8)
        alive.add(i)
        weakref.finalize(arr, alive.discard, i)
        peak = max(peak, len(alive))
        return arr

    blend_tiles(plan, get, channels=3, dtype=np.uint8)
    assert sorted(calls) == list(range(len(plan.tiles)))
    assert peak <= 2 * plan.n_cols + 1


def test_no_full_frame_accumulator_only_the_output_and_small_cells() -> None:
    src = np.random.default_rng(6).integers(0, 256, (2048, 2048, 4), dtype=np.uint8)
    plan = plan_tiles(2048, 2048, 512, 64)

    def view(i: int) -> np.ndarray:  # tiles that cost no memory, so only blending is measured
        t = plan.tiles[i]
        return src[t.y:t.y + t.h, t.x:t.x + t.w]

    tracemalloc.start()
    try:
        out = blend_tiles(plan, view, channels=4, dtype=np.uint8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, src)
    assert peak < out.nbytes + 2 * 2**20  # a float32 accumulator alone would be 4x the output


@pytest.mark.parametrize(
    ("tile", "fragment"),
    [
        (np.zeros((64, 60, 3), np.uint8), "64x60x3 uint8, expected 64x64x3 uint8"),
        (np.zeros((64, 64, 3), np.float32), "float32"),
        (np.zeros((64, 64, 4), np.uint8), "64x64x4"),
    ],
)
def test_a_tile_of_the_wrong_shape_or_dtype_is_a_clear_error(tile: np.ndarray, fragment: str) -> None:
    plan = plan_tiles(100, 64, 64, 16)
    with pytest.raises(ParamsError) as info:
        blend_tiles(plan, lambda i: tile, channels=3, dtype=np.uint8)
    assert fragment in info.value.message
    assert "planned size" in info.value.message


def test_unsupported_dtype_channels_and_plan_kind_are_rejected() -> None:
    plan = plan_tiles(100, 64, 64, 16)
    with pytest.raises(ParamsError, match="uint8 or uint16"):
        blend_tiles(plan, lambda i: np.zeros((64, 64, 3)), channels=3, dtype=np.float64)
    with pytest.raises(ParamsError, match="1 to 4 channels"):
        blend_tiles(plan, lambda i: np.zeros((64, 64, 5), np.uint8), channels=5, dtype=np.uint8)
    with pytest.raises(ParamsError, match="grid plan"):
        blend_tiles(plan_seam_fix(plan, "band"), lambda i: np.zeros((1, 1, 3), np.uint8), channels=3)
    with pytest.raises(ParamsError, match="plan_seam_fix"):
        blend_seam_fix(np.zeros((64, 100, 3), np.uint8), plan, lambda i: np.zeros((1, 1, 3), np.uint8))


def test_band_seam_fix_removes_a_hard_cut_and_keeps_the_rest(texture, rgb8) -> None:
    """First pass with hard cuts (overlap 0) and per-tile drift; the seam-fix tiles (re-drawn
    consistently) are laid over bands only: the cut disappears, tile centres keep the first pass."""
    plane = texture(512, 512, seed=3)
    ref = rgb8(plane)
    plan = plan_tiles(512, 512, 256, 0)
    drift = {(0, 0): 0.0, (0, 1): 10.0, (1, 0): -10.0, (1, 1): 5.0}
    first = blend_tiles(plan, lambda i: extract_tile(rgb8(plane, (drift[(plan.tiles[i].row, plan.tiles[i].col)],) * 3),
                                                     plan.tiles[i]), channels=3, dtype=np.uint8)
    assert sgr(first, plan.seams_x, plan.seams_y) > 1.5
    fix = plan_seam_fix(plan, "band", band=128)
    fixed = blend_seam_fix(first, fix, _tiles_of(ref, fix))
    assert sgr(fixed, plan.seams_x, plan.seams_y) <= 1.10
    assert np.array_equal(fixed[100:140, 100:140], first[100:140, 100:140])
    assert not np.array_equal(fixed, first)
    assert np.array_equal(first, blend_tiles(  # the input was not modified
        plan, lambda i: extract_tile(rgb8(plane, (drift[(plan.tiles[i].row, plan.tiles[i].col)],) * 3),
                                     plan.tiles[i]), channels=3, dtype=np.uint8))
