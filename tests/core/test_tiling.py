"""Tile planner: coordinate tables and properties (coverage, overlaps, wrap, seam-fix plans)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.errors import ParamsError
from service.core.tiling import Tile, extract_tile, plan_seam_fix, plan_tiles

# (width, height, tile, overlap, tileable) -> (x origins, y origins, tile w, tile h, seams_x)
TABLE = [
    ((1, 1, 1024, 128, False), ((0,), (0,), 1, 1, ())),
    ((500, 300, 1024, 128, False), ((0,), (0,), 500, 300, ())),
    ((1024, 1024, 1024, 128, False), ((0,), (0,), 1024, 1024, ())),
    # exact multiple of the stride: the seed's grid, all overlaps 128
    ((8192, 1024, 1024, 128, False),
     ((0, 896, 1792, 2688, 3584, 4480, 5376, 6272, 7168), (0,), 1024, 1024,
      (960, 1856, 2752, 3648, 4544, 5440, 6336, 7232))),
    # the seed clamps the last column to 1024 (overlaps 128 and 896); we spread them evenly
    ((2048, 2048, 1024, 128, False), ((0, 512, 1024), (0, 512, 1024), 1024, 1024, (768, 1280))),
    ((4096, 2304, 1024, 128, False),
     ((0, 768, 1536, 2304, 3072), (0, 640, 1280), 1024, 1024, (896, 1664, 2432, 3200))),
    ((3000, 2000, 1024, 128, False),
     ((0, 659, 1317, 1976), (0, 488, 976), 1024, 1024, (841, 1500, 2158))),
    # odd sizes: one pixel more than a tile needs a second tile
    ((1025, 1023, 1024, 128, False), ((0, 1), (0,), 1024, 1023, (512,))),
    ((777, 333, 256, 31, False), ((0, 174, 347, 521), (0, 77), 256, 256, (215, 388, 562))),
    # zero overlap on an exact multiple: hard cuts at tile borders
    ((2048, 1024, 1024, 0, False), ((0, 1024), (0,), 1024, 1024, (1024,))),
    # huge overlap (tile - 1): a tile at every pixel, ramps cut back so they never meet
    ((12, 10, 10, 9, False), ((0, 1, 2), (0,), 10, 10, (3, 8))),
    # tileable: the grid wraps; the last tile runs past the right edge
    ((2048, 2048, 1024, 128, True), ((0, 683, 1365), (0, 683, 1365), 1024, 1024, (170, 853, 1536))),
    ((500, 300, 1024, 128, True), ((0,), (0,), 500, 300, ())),
]


@pytest.mark.parametrize(("args", "expected"), TABLE)
def test_coordinate_table(args: tuple, expected: tuple) -> None:
    w, h, tile, overlap, tileable = args
    xs, ys, tw, th, seams_x = expected
    plan = plan_tiles(w, h, tile, overlap, tileable=tileable)
    assert plan.axis_x and plan.axis_y
    assert plan.axis_x.origins == xs
    assert plan.axis_y.origins == ys
    assert plan.seams_x == seams_x
    assert len(plan.tiles) == len(xs) * len(ys)
    first, last = plan.tiles[0], plan.tiles[-1]
    assert first == Tile(0, 0, 0, 0, 0, tw, th)
    assert (last.row, last.col, last.x, last.y) == (len(ys) - 1, len(xs) - 1, xs[-1], ys[-1])


def test_seed_clamped_edge_gets_even_overlaps() -> None:
    plan = plan_tiles(2048, 2048, 1024, 128)
    assert plan.axis_x
    origins = plan.axis_x.origins
    overlaps = [origins[i] + 1024 - origins[i + 1] for i in range(len(origins) - 1)]
    assert overlaps == [512, 512]  # the seed: [128, 896]
    assert plan.axis_x.transitions == ((512, 1024), (1024, 1536))  # ramps over the whole overlap


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((0, 10, 1024, 128), "empty"),
        ((10, 10, 0, 0), "tile_size"),
        ((10, 10, 64, 64), "overlap"),
        ((10, 10, 64, -1), "overlap"),
        ((16384, 16384, 64, 63), "use larger tiles"),
    ],
)
def test_bad_parameters_raise_params_error(args: tuple, fragment: str) -> None:
    with pytest.raises(ParamsError) as info:
        plan_tiles(*args)
    assert info.value.code == "invalid_params"
    assert fragment in info.value.message


def _axis_case() -> st.SearchStrategy:
    return st.integers(1, 64).flatmap(
        lambda tile: st.tuples(st.integers(1, 400), st.just(tile), st.integers(0, tile - 1))
    )


@settings(max_examples=300, deadline=None)
@given(_axis_case(), st.booleans())
def test_axis_properties(case: tuple[int, int, int], tileable: bool) -> None:
    length, tile, overlap = case
    axis = plan_tiles(length, 1, tile, overlap, tileable=tileable).axis_x
    assert axis is not None
    o, size, n = axis.origins, axis.size, len(axis.origins)
    assert size == min(tile, length)  # never stretched, smaller only if the image is
    covered = np.zeros(length, dtype=int)
    for start in o:
        covered[(start + np.arange(size)) % length] += 1
    assert covered.min() >= 1  # every pixel covered
    if n == 1:
        return
    stride = tile - overlap
    nxt = list(o[1:]) + ([o[0] + length] if axis.tileable else [])
    overlaps = [o[i] + size - nxt[i] for i in range(len(nxt))]
    assert min(overlaps) >= overlap  # every overlap at least the requested one
    assert max(overlaps) - min(overlaps) <= 1  # spread evenly
    if axis.tileable:
        assert n == -(-length // stride)
    else:
        assert o[0] == 0 and o[-1] == length - size  # edge tiles shifted inward, not outward
        assert n == 1 + -(-(length - size) // stride)  # smallest count that keeps the overlap
    # transitions lie inside their pair's overlap and never meet
    for k, (s, e) in enumerate(axis.transitions):
        assert nxt[k] <= s <= e <= o[k] + size
        if k + 1 < len(axis.transitions):
            assert e <= axis.transitions[k + 1][0]
    if axis.tileable:
        assert axis.transitions[-1][1] - length <= axis.transitions[0][0]


def test_extract_tile_wraps_in_tileable_mode() -> None:
    image = np.arange(6 * 8 * 2, dtype=np.uint16).reshape(6, 8, 2)
    tile = Tile(0, 0, 0, x=6, y=4, w=4, h=3)
    got = extract_tile(image, tile)
    rows, cols = np.array([4, 5, 0]), np.array([6, 7, 0, 1])
    assert np.array_equal(got, image[rows][:, cols])
    assert got.flags.c_contiguous
    inside = extract_tile(image, Tile(1, 0, 1, 1, 1, 3, 2))
    assert np.array_equal(inside, image[1:3, 1:4])
    with pytest.raises(ParamsError):
        extract_tile(image, Tile(0, 0, 0, 0, 0, 9, 2))


def _composite_mask(plan_w: int, plan_h: int, mode: str, band: int | None = None) -> tuple:
    from service.core.blending import blend_seam_fix

    plan = plan_tiles(plan_w, plan_h, 1024, 128)
    fix = plan_seam_fix(plan, mode, band=band)  # type: ignore[arg-type]
    base = np.zeros((plan_h, plan_w, 1), dtype=np.uint8)
    out = blend_seam_fix(base, fix, lambda i: np.full((fix.tiles[i].h, fix.tiles[i].w, 1), 255, np.uint8))
    return plan, fix, out[..., 0]


def test_band_plan_has_far_fewer_tiles_and_covers_every_seam() -> None:
    plan, band, out = _composite_mask(8192, 4096, "band")
    offset = plan_seam_fix(plan, "offset")
    assert len(band.tiles) * 2 <= len(offset.tiles)  # 8192x4096: 20 band tiles, 60 offset tiles
    for x0 in plan.seams_x:  # the whole seam line and the ramp of the first pass are re-drawn
        assert (out[:, x0 - 64:x0 + 64] == 255).all()
    for y0 in plan.seams_y:
        assert (out[y0 - 64:y0 + 64, :] == 255).all()
    assert out.mean() < 0.4 * 255  # only where they apply: most pixels keep the first pass
    away = np.ones_like(out, dtype=bool)
    for x0 in plan.seams_x:
        away[:, x0 - 128:x0 + 128] = False
    for y0 in plan.seams_y:
        away[y0 - 128:y0 + 128, :] = False
    assert (out[away] == 0).all()


def test_offset_plan_is_centred_on_seams_and_redraws_everything() -> None:
    plan, offset, out = _composite_mask(4096, 2048, "offset")
    assert offset.groups[0].grid.axis_x
    xs = offset.groups[0].grid.axis_x.origins
    for x0 in plan.seams_x:
        assert x0 - 512 in xs  # a tile centred on every seam
    assert xs[0] == 0 and xs[-1] == 4096 - 1024
    assert (out == 255).all()


def test_seam_fix_of_a_single_tile_plan_is_empty_and_bad_mode_fails() -> None:
    plan = plan_tiles(900, 700)
    assert plan_seam_fix(plan, "band").tiles == ()
    with pytest.raises(ParamsError):
        plan_seam_fix(plan_tiles(4096, 4096), "sideways")  # type: ignore[arg-type]
    with pytest.raises(ParamsError):
        plan_seam_fix(plan_tiles(4096, 4096), "band", band=2048)


def test_tileable_band_plan_covers_the_wrap_seam() -> None:
    from service.core.blending import blend_seam_fix

    plan = plan_tiles(1200, 800, 256, 32, tileable=True)
    fix = plan_seam_fix(plan, "band")
    base = np.zeros((800, 1200, 1), dtype=np.uint8)
    out = blend_seam_fix(base, fix, lambda i: np.full((fix.tiles[i].h, fix.tiles[i].w, 1), 200, np.uint8))
    assert plan.axis_x and plan.axis_y
    wrap_s, wrap_e = plan.axis_x.transitions[-1]  # the pair (last tile, first tile)
    wrap_seam = ((wrap_s + wrap_e) // 2) % 1200
    assert (out[:, wrap_seam - 16:wrap_seam + 16] == 200).all()
    assert any(t.x + t.w > 1200 for t in fix.tiles)  # a band runs across the right edge
    centre_x = (plan.seams_x[0] + plan.seams_x[1]) // 2
    centre_y = (plan.seams_y[0] + plan.seams_y[1]) // 2
    assert out[centre_y, centre_x] == 0  # a tile centre away from every seam keeps the first pass
