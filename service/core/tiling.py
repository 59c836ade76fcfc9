"""Tile planning: where each tile of an output image lies, and where the seams between them are.

Owns the geometry of tiled upscaling; pure (numbers and numpy arrays, no I/O, no logging).

Conventions
-----------
* Boxes are half-open and in output pixels: a tile covers columns ``[x, x + w)`` and rows
  ``[y, y + h)``. Tiles are numbered row-major: ``index = row * n_cols + col``.
* Along each axis, ``n`` is the smallest count for which every overlap between neighbouring
  tiles is at least the requested one; the origins are spread evenly,
  ``origin_i = round(i * (L - T) / (n - 1))``, so edge tiles are shifted inward (never stretched,
  never clamped into one wide overlap). A tile is smaller than ``tile_size`` only when the whole
  image is, along that axis.
* Tileable mode treats the image as a torus: ``n = ceil(L / (T - overlap))`` tiles with origins
  ``round(i * L / n)``; a box may run past the right/bottom edge and wraps to the left/top, so the
  wrap-around edge is blended like any other seam and a seamless texture stays seamless.
* Each pair of neighbouring tiles has one **transition** ``(start, end)``: the columns over which
  the blend weight ramps from the first tile to the second. It is the actual overlap of the pair,
  cut back only where overlaps are so large (more than half a tile) that the transitions of
  consecutive pairs would meet. Transitions never intersect, so at most two tiles per axis mix at
  any pixel. The seam ``x0`` of a transition is its middle (columns ``x0 - 1`` and ``x0`` come
  from different tile centres); ``TilePlan.seams_x`` / ``seams_y`` list the internal ones.
* Seam-fix plans (:func:`plan_seam_fix`) hold extra tiles in :class:`FixGroup` s: each group is
  blended like a grid and composited over the first pass by
  ``service.core.blending.blend_seam_fix`` through a feathered mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from service.core.errors import ParamsError

MAX_TILES = 65536  # a plan larger than this is a mistake (tiny tiles, huge overlap), not a job
SeamFixMode = Literal["offset", "band"]
PlanKind = Literal["grid", "offset", "band", "cells"]  # cells: per spritesheet cell (core.cells)


@dataclass(frozen=True)
class Tile:
    """One tile: half-open box ``[x, x + w) x [y, y + h)`` in output pixels (may wrap if tileable)."""

    index: int
    row: int
    col: int
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Axis:
    """The tiling of one axis: tile origins, tile size and the transitions between neighbours.

    ``transitions[k]`` is the ramp from tile ``k`` to tile ``k + 1`` (in tileable mode the last
    one runs from the last tile to tile 0, in coordinates past ``length``).
    """

    length: int
    size: int
    origins: tuple[int, ...]
    transitions: tuple[tuple[int, int], ...]
    tileable: bool

    @property
    def seams(self) -> tuple[int, ...]:
        """Internal seam positions in ``(0, length)``, sorted (the wrap edge itself excluded)."""
        out = {((s + e) // 2) % self.length for s, e in self.transitions}
        out.discard(0)
        return tuple(sorted(out))


@dataclass(frozen=True)
class TilePlan:
    """All tiles for a ``width`` x ``height`` output, plus per-axis geometry and seams."""

    width: int
    height: int
    tile_size: int
    overlap: int
    tileable: bool
    tiles: tuple[Tile, ...]
    seams_x: tuple[int, ...]
    seams_y: tuple[int, ...]
    kind: PlanKind = "grid"
    axis_x: Axis | None = None
    axis_y: Axis | None = None
    groups: tuple[FixGroup, ...] = field(default=())

    @property
    def n_cols(self) -> int:
        return len(self.axis_x.origins) if self.axis_x else 0

    @property
    def n_rows(self) -> int:
        return len(self.axis_y.origins) if self.axis_y else 0


@dataclass(frozen=True)
class FixGroup:
    """Seam-fix tiles that are blended together like a grid, then composited over the image.

    ``grid`` is a grid plan in the group's own coordinates (its tiles carry image coordinates
    and the fix plan's indices, starting at ``first``); the blended group lands at ``(x, y)``
    (wrapping if tileable) through a mask whose edges inside the image are feathered over
    ``feather_x`` / ``feather_y`` px.
    """

    x: int
    y: int
    grid: TilePlan
    first: int
    feather_x: int
    feather_y: int


def _round_div(num: int, den: int) -> int:
    """``round(num / den)`` for non-negative integers, halves rounded up (no banker's rounding)."""
    return (2 * num + den) // (2 * den)


def _origins(length: int, size: int, overlap: int, tileable: bool) -> tuple[tuple[int, ...], int]:
    """Tile origins and tile size along one axis."""
    if length <= size:
        return (0,), length
    stride = size - overlap
    if tileable:
        n = -(-length // stride)
        return tuple(_round_div(i * length, n) for i in range(n)), size
    n = 1 + -(-(length - size) // stride)
    return tuple(_round_div(i * (length - size), n - 1) for i in range(n)), size


def _transitions(origins: tuple[int, ...], size: int, length: int, tileable: bool
                 ) -> tuple[tuple[int, int], ...]:
    """Disjoint ramps between consecutive tiles: each pair's overlap, cut at the midpoints
    between neighbouring overlap centres so that consecutive ramps never meet."""
    n = len(origins)
    if n == 1:
        return ()
    starts = list(origins) + ([origins[0] + length] if tileable else [])
    pairs = [(starts[k + 1], starts[k] + size) for k in range(len(starts) - 1)]
    twice_centres = [a + b for a, b in pairs]
    out = []
    for k, (a, b) in enumerate(pairs):
        lo, hi = a, b
        if k > 0 or tileable:
            prev = twice_centres[k - 1] if k > 0 else twice_centres[-1] - 2 * length
            lo = max(lo, (prev + twice_centres[k]) // 4)
        if k < len(pairs) - 1 or tileable:
            nxt = twice_centres[k + 1] if k < len(pairs) - 1 else twice_centres[0] + 2 * length
            hi = min(hi, (twice_centres[k] + nxt) // 4)
        out.append((lo, max(lo, hi)))
    return tuple(out)


def _axis(length: int, size: int, overlap: int, tileable: bool) -> Axis:
    origins, tile_len = _origins(length, size, overlap, tileable)
    wrap = tileable and len(origins) > 1
    return Axis(length, tile_len, origins, _transitions(origins, tile_len, length, wrap), wrap)


def _check(width: int, height: int, tile_size: int, overlap: int) -> None:
    if width < 1 or height < 1:
        raise ParamsError(f"image size {width}x{height} is empty; give a width and height of at least 1 px")
    if tile_size < 1:
        raise ParamsError(f"tile_size {tile_size} must be at least 1 px")
    if not 0 <= overlap < tile_size:
        raise ParamsError(
            f"overlap {overlap} must be between 0 and tile_size - 1 ({tile_size - 1}); lower the overlap"
        )


def plan_tiles(width: int, height: int, tile_size: int = 1024, overlap: int = 128, *,
               tileable: bool = False) -> TilePlan:
    """Plan the tiles of a ``width`` x ``height`` output (see the module docstring for the rules).

    Raises :class:`ParamsError` for an empty image, ``tile_size < 1``, an overlap outside
    ``[0, tile_size)`` or a plan of more than :data:`MAX_TILES` tiles.
    """
    _check(width, height, tile_size, overlap)
    ax = _axis(width, tile_size, overlap, tileable)
    ay = _axis(height, tile_size, overlap, tileable)
    count = len(ax.origins) * len(ay.origins)
    if count > MAX_TILES:
        raise ParamsError(
            f"{width}x{height} with tile_size {tile_size} and overlap {overlap} needs {count} tiles "
            f"(at most {MAX_TILES}); use larger tiles or a smaller overlap"
        )
    tiles = tuple(
        Tile(r * len(ax.origins) + c, r, c, x, y, ax.size, ay.size)
        for r, y in enumerate(ay.origins)
        for c, x in enumerate(ax.origins)
    )
    return TilePlan(width, height, tile_size, overlap, tileable, tiles, ax.seams, ay.seams,
                    "grid", ax, ay)


def _grid(width: int, height: int, ax: Axis, ay: Axis, plan: TilePlan, kind: PlanKind,
          x: int = 0, y: int = 0, first: int = 0) -> TilePlan:
    """A grid plan over axes ``ax``/``ay``; its tiles are shifted by ``(x, y)`` and numbered
    from ``first`` (seam-fix tiles in image coordinates)."""
    tiles = tuple(
        Tile(first + r * len(ax.origins) + c, r, c, x + ox, y + oy, ax.size, ay.size)
        for r, oy in enumerate(ay.origins)
        for c, ox in enumerate(ax.origins)
    )
    return TilePlan(width, height, plan.tile_size, plan.overlap, plan.tileable, tiles,
                    ax.seams, ay.seams, kind, ax, ay)


def _offset_axis(axis: Axis) -> Axis:
    """Tiles centred on each seam of ``axis`` (plus the edge tiles if not wrapping)."""
    if len(axis.origins) == 1:
        return axis
    size, length = axis.size, axis.length
    centred = [(s + e) // 2 - size // 2 for s, e in axis.transitions]
    if axis.tileable:
        origins = tuple(sorted({c % length for c in centred}))
    else:
        origins = tuple(sorted({0, *(min(max(c, 0), length - size) for c in centred), length - size}))
    wrap = axis.tileable and len(origins) > 1
    return Axis(length, size, origins, _transitions(origins, size, length, wrap), wrap)


def _offset_plan(plan: TilePlan) -> TilePlan:
    assert plan.axis_x and plan.axis_y
    grid = _grid(plan.width, plan.height, _offset_axis(plan.axis_x), _offset_axis(plan.axis_y),
                 plan, "grid")
    return _fix_plan(plan, "offset", grid.tiles, (FixGroup(0, 0, grid, 0, 0, 0),))


def _band_groups(plan: TilePlan, band: int) -> list[FixGroup]:
    """One group per seam: a strip ``band`` px across, tiled along the seam."""
    assert plan.axis_x and plan.axis_y
    long_side = min(4 * plan.tile_size, max(plan.tile_size, plan.tile_size * plan.tile_size // band))
    groups: list[FixGroup] = []
    first = 0
    for vertical, across, other in ((True, plan.axis_x, plan.axis_y),
                                    (False, plan.axis_y, plan.axis_x)):
        along = _axis(other.length, long_side, min(plan.overlap, long_side - 1), plan.tileable)
        width = min(band, across.length)
        thin = _axis(width, width, 0, False)
        for s, e in across.transitions:
            start = (s + e) // 2 - width // 2
            start = start % across.length if across.tileable else min(max(start, 0), across.length - width)
            if vertical:
                grid = _grid(width, other.length, thin, along, plan, "grid", start, 0, first)
                groups.append(FixGroup(start, 0, grid, first, width // 4, 0))
            else:
                grid = _grid(other.length, width, along, thin, plan, "grid", 0, start, first)
                groups.append(FixGroup(0, start, grid, first, 0, width // 4))
            first += len(grid.tiles)
    return groups


def _fix_plan(plan: TilePlan, kind: PlanKind, tiles: tuple[Tile, ...],
              groups: tuple[FixGroup, ...]) -> TilePlan:
    return TilePlan(plan.width, plan.height, plan.tile_size, plan.overlap, plan.tileable, tiles,
                    plan.seams_x, plan.seams_y, kind, plan.axis_x, plan.axis_y, groups)


def plan_seam_fix(plan: TilePlan, mode: SeamFixMode, *, band: int | None = None) -> TilePlan:
    """Plan a seam-fix pass over a blended ``plan`` (a grid from :func:`plan_tiles`).

    * ``offset``: a second full grid shifted by half a stride, i.e. tiles centred on every seam
      plus the edge tiles (in tileable mode the grid simply wraps). It re-draws every pixel; its
      own seams fall in the middle of the first pass's tiles.
    * ``band``: only strips centred on the seams, ``band`` px across (default ``2 * overlap``,
      at least 64, at most ``tile_size``), each tiled along its seam with tiles about
      ``tile_size**2 / band`` long (at most 4 tiles), so a band tile costs about one tile of
      GPU work and far fewer are needed than for ``offset``. Vertical seams come first.

    Tiles are numbered in plan order; each :class:`FixGroup` is blended on its own and then
    composited (see ``blend_seam_fix``). The seams of the result are those of ``plan``.
    A plan without seams gives no tiles.
    """
    if plan.kind != "grid" or plan.axis_x is None or plan.axis_y is None:
        raise ParamsError("plan_seam_fix needs a grid plan from plan_tiles, not a seam-fix plan")
    if mode not in ("offset", "band"):
        raise ParamsError(f"unknown seam-fix mode {mode!r}; use 'offset' or 'band'")
    if not plan.axis_x.transitions and not plan.axis_y.transitions:
        return _fix_plan(plan, mode, (), ())
    if mode == "offset":
        return _offset_plan(plan)
    band = band if band is not None else min(plan.tile_size, max(64, 2 * plan.overlap))
    if not 2 <= band <= plan.tile_size:
        raise ParamsError(f"seam-fix band {band} must be between 2 and tile_size ({plan.tile_size}) px")
    groups = _band_groups(plan, band)
    return _fix_plan(plan, "band", tuple(t for g in groups for t in g.grid.tiles), tuple(groups))


def axis_spans(start: int, size: int, length: int) -> list[tuple[int, int, int]]:
    """Split ``[start, start + size)`` (wrapping modulo ``length``) into pieces inside the image:
    ``(image_start, image_end, local_start)``."""
    start %= length
    first = min(size, length - start)
    pieces = [(start, start + first, 0)]
    if first < size:
        pieces.append((0, size - first, first))
    return pieces


def extract_tile(image: np.ndarray, tile: Tile) -> np.ndarray:
    """The pixels of ``tile`` from an (H, W[, C]) image as a new C-contiguous array.

    A box running past the right/bottom edge wraps around (tileable plans); otherwise it must lie
    inside the image.
    """
    height, width = image.shape[:2]
    if tile.w > width or tile.h > height or tile.w < 1 or tile.h < 1:
        raise ParamsError(f"tile {tile.index} ({tile.w}x{tile.h}) does not fit a {width}x{height} image")
    out = np.empty((tile.h, tile.w, *image.shape[2:]), dtype=image.dtype)
    for y0, y1, ly in axis_spans(tile.y, tile.h, height):
        for x0, x1, lx in axis_spans(tile.x, tile.w, width):
            out[ly:ly + y1 - y0, lx:lx + x1 - x0] = image[y0:y1, x0:x1]
    return out
