"""Spritesheets cell by cell: every cell is its own image, so nothing crosses a cell border.

For a sheet (:mod:`service.core.sheets` gives its :class:`~service.core.sheets.SheetLayout`)
the pipeline works per cell at every step:

* :func:`upscale_cells` — the base upscale (any resampler or model, the pixel-art scalers, the
  normal-map path) runs on each cell's own pixels and is pasted at ``k`` times the cell's
  position; the pixels outside every cell (gutters, margins) are carried over by
  nearest-neighbour, so transparent padding stays exactly transparent;
* :func:`plan_sheet` — each cell gets its own tile grid (cell-local coordinates); the flat
  :attr:`SheetPlan.plan` lists every tile in image coordinates with one global index, so the
  job's tile table, refine loop and caches work unchanged, and no tile box crosses a cell border;
* :func:`blend_sheet` — each cell's tiles are blended within that cell only.

All frames share one caption, seed and style: a tile's seed slot (:meth:`SheetPlan.seed_slot`)
is its index *inside its cell*, so tile ``j`` of every cell gets the same seed.

Sheets need an integer scale ``k`` (a cell of ``w`` px becomes exactly ``k * w`` px).
Pure: numpy only; boxes are ``(x, y, w, h)``, half-open, in pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.core.blending import blend_tiles
from service.core.errors import ParamsError
from service.core.sheets import Rect, SheetLayout, unique_cells
from service.core.tiling import Tile, TilePlan, plan_tiles


@dataclass(frozen=True)
class CellTiles:
    """One cell at the output size: its box, its own tile grid, the global index of its first
    tile."""

    box: Rect
    plan: TilePlan
    first: int


@dataclass(frozen=True)
class SheetPlan:
    """Tiles planned per cell of a sheet; :attr:`plan` is the flat list in image coordinates."""

    width: int
    height: int
    cells: tuple[CellTiles, ...]
    plan: TilePlan

    def locate(self, index: int) -> tuple[CellTiles, int]:
        """``(cell, index inside the cell)`` of global tile ``index``."""
        for cell in self.cells:
            if cell.first <= index < cell.first + len(cell.plan.tiles):
                return cell, index - cell.first
        raise IndexError(f"no tile {index} in this sheet plan")

    def seed_slot(self, index: int) -> int:
        """The seed slot of global tile ``index``: its index inside its cell."""
        return self.locate(index)[1]


def integer_scale(layout: SheetLayout, width: int, height: int) -> int:
    """``k`` with ``(width, height) == k * sheet size``; ParamsError otherwise."""
    k = width // layout.width
    if k < 1 or width != k * layout.width or height != k * layout.height:
        raise ParamsError(f"a spritesheet needs an integer scale (2, 3, 4...); "
                          f"{layout.width}x{layout.height} -> {width}x{height} is not one",
                          code="sheet_invalid")
    return k


def upscale_cells(pixels: np.ndarray, layout: SheetLayout, factor: int,
                  upscale: Callable[[np.ndarray, int, int], np.ndarray]) -> np.ndarray:
    """``pixels`` (``(H, W)`` or ``(H, W, C)``) ``factor`` times larger, cell by cell.

    ``upscale(crop, width, height)`` enlarges one cell's pixels to exactly ``width`` x
    ``height``; everything outside the cells is nearest-neighbour.
    """
    out = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
    for x, y, w, h in unique_cells(layout):
        crop = np.ascontiguousarray(pixels[y:y + h, x:x + w])
        cell = upscale(crop, w * factor, h * factor)
        out[y * factor:(y + h) * factor, x * factor:(x + w) * factor] = cell
    return out


def plan_sheet(layout: SheetLayout, tile_size: int, overlap: int) -> SheetPlan:
    """Tile each cell of ``layout`` (already at the output size) on its own."""
    cells: list[CellTiles] = []
    flat: list[Tile] = []
    for x, y, w, h in unique_cells(layout):
        plan = plan_tiles(w, h, tile_size, min(overlap, max(0, min(tile_size, w, h) - 1)))
        first = len(flat)
        cells.append(CellTiles((x, y, w, h), plan, first))
        flat += [Tile(first + t.index, t.row, t.col, x + t.x, y + t.y, t.w, t.h)
                 for t in plan.tiles]
    whole = TilePlan(layout.width, layout.height, tile_size, overlap, False, tuple(flat), (), (),
                     "cells")
    return SheetPlan(layout.width, layout.height, tuple(cells), whole)


def blend_sheet(sheet: SheetPlan, get_tile: Callable[[int], np.ndarray], base: np.ndarray
                ) -> np.ndarray:
    """``base`` with each cell replaced by the blend of that cell's tiles (``get_tile`` takes
    global indices and returns ``(h, w, C)`` of ``base``'s dtype)."""
    out = base.copy()
    channels = 1 if base.ndim == 2 else base.shape[2]
    for cell in sheet.cells:
        x, y, w, h = cell.box
        blended = blend_tiles(cell.plan, _offset(get_tile, cell.first), channels=channels,
                              dtype=base.dtype)
        out[y:y + h, x:x + w] = blended if base.ndim == 3 else blended[:, :, 0]
    return out


def _offset(get_tile: Callable[[int], np.ndarray], first: int) -> Callable[[int], np.ndarray]:
    return lambda j: get_tile(first + j)
