"""Spritesheets cell by cell: no tile crosses a cell border, a changed cell changes only its
own output, gutters keep their pixels, tile j of every cell shares a seed slot."""

from __future__ import annotations

import numpy as np
import pytest
from image_factory import noise

from service.core.cells import blend_sheet, integer_scale, plan_sheet, upscale_cells
from service.core.errors import ParamsError
from service.core.sheets import SheetParams, layout_for
from service.core.tiling import extract_tile


def _lanczos(crop: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.LANCZOS))


def _sheet() -> tuple[np.ndarray, object]:
    layout = layout_for(SheetParams(grid="3x2", margin=2, spacing=4), 2 * 2 + 3 * 40 + 2 * 4,
                        2 * 2 + 2 * 40 + 4)
    pixels = noise(layout.height, layout.width, 3, seed=1)
    return pixels, layout


def test_changing_one_cell_changes_only_that_cell() -> None:
    pixels, layout = _sheet()
    edited = pixels.copy()
    x, y, w, h = layout.cells[4]
    edited[y:y + h, x:x + w] = 255 - edited[y:y + h, x:x + w]
    k = 3
    a = upscale_cells(pixels, layout, k, _lanczos)
    b = upscale_cells(edited, layout, k, _lanczos)
    big = layout.scaled(k)
    changed = np.zeros(a.shape[:2], bool)
    changed[(a != b).any(axis=2)] = True
    bx, by, bw, bh = big.cells[4]
    inside = np.zeros_like(changed)
    inside[by:by + bh, bx:bx + bw] = True
    assert changed[inside].any() and not changed[~inside].any()
    # whole-image lanczos would have bled the edit into the gutter and its neighbours
    whole_a, whole_b = _lanczos(pixels, a.shape[1], a.shape[0]), _lanczos(edited, a.shape[1],
                                                                          a.shape[0])
    assert (whole_a != whole_b).any(axis=2)[~inside].any()


def test_gutters_are_carried_over_exactly() -> None:
    pixels, layout = _sheet()
    out = upscale_cells(pixels, layout, 2, _lanczos)
    nearest = np.repeat(np.repeat(pixels, 2, 0), 2, 1)
    outside = np.ones(out.shape[:2], bool)
    for x, y, w, h in layout.scaled(2).cells:
        outside[y:y + h, x:x + w] = False
    assert np.array_equal(out[outside], nearest[outside])


def test_tiles_never_cross_a_cell_and_blend_stays_inside() -> None:
    _, layout = _sheet()
    big = layout.scaled(4)  # 160 px cells
    sheet = plan_sheet(big, tile_size=96, overlap=16)
    assert len(sheet.plan.tiles) == 6 * 4 and sheet.plan.kind == "cells"
    for tile in sheet.plan.tiles:
        cell, local = sheet.locate(tile.index)
        cx, cy, cw, ch = cell.box
        assert cx <= tile.x and tile.x + tile.w <= cx + cw
        assert cy <= tile.y and tile.y + tile.h <= cy + ch
        assert sheet.seed_slot(tile.index) == local < 4
    base = noise(big.height, big.width, 3, seed=2) // 2  # room for +1
    # refined tiles are their base pixels + 1: the blend changes cells and nothing else
    out = blend_sheet(sheet, lambda i: extract_tile(base, sheet.plan.tiles[i]) + 1, base)
    inside = np.zeros(base.shape[:2], bool)
    for x, y, w, h in big.cells:
        inside[y:y + h, x:x + w] = True
    assert np.array_equal(out[~inside], base[~inside])
    assert np.abs(out[inside].astype(int) - base[inside]).max() <= 1
    assert (out[inside] != base[inside]).mean() > 0.95


def test_sheets_need_an_integer_scale() -> None:
    _, layout = _sheet()
    assert integer_scale(layout, layout.width * 3, layout.height * 3) == 3
    with pytest.raises(ParamsError, match="integer scale"):
        integer_scale(layout, layout.width * 3 // 2, layout.height * 3 // 2)
