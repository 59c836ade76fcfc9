"""Blending: assemble refined tiles into one image, and composite seam-fix tiles over it.

Owns the weights and the arithmetic of the merge; pure (arrays in, arrays out, no I/O).

How :func:`blend_tiles` works
-----------------------------
Each axis is cut into *segments* (see :func:`axis_segments`): a pure segment belongs to one
tile (weight exactly 1) and a transition segment mixes two neighbouring tiles with a smoothstep
ramp over their actual overlap (``TilePlan`` transitions). The 2-D weight of a tile is the product
of its two axis weights, so the weights of all tiles sum to one at every pixel.

The image is filled cell by cell, one row segment (a band of rows) at a time: pure x pure cells are
copied straight from their tile, edge cells mix two tiles and corner cells four. Weights are
integers on a ``K = 2**bits`` scale (``bits`` = 7 for uint8, 15 for uint16). An edge cell is
``a + ((b - a) * q + K/2 >> bits)`` in int16 (uint8) or int32 (uint16), which cannot overflow
and is exactly ``a`` where ``a == b``; a corner cell is ``(sum_i v_i * k_i + K**2/2) >> 2 bits``
with ``sum_i k_i == K**2`` exactly. So where all contributing tiles agree the result *is* their
value, bit for bit, and nothing larger than one cell is ever held in a wider type: no
full-frame float accumulators. Only the tiles of at most two tile rows are kept at a time. All channels
(colour and alpha, 1-4 of them, uint8 or uint16) are blended with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.core.errors import ParamsError
from service.core.tiling import Axis, TilePlan, axis_spans

GetTile = Callable[[int], np.ndarray]
# weight bits -> (signed type of an edge lerp, accumulator of a corner's four products)
_ACC = {7: (np.int16, np.uint32), 15: (np.int32, np.uint64)}


@dataclass(frozen=True)
class Segment:
    """``[start, end)`` of one axis; tile ``a`` (local offset ``la``) alone, or mixed with tile
    ``b`` (local offset ``lb``) with integer weights ``q`` for ``b`` and ``K - q`` for ``a``."""

    start: int
    end: int
    a: int
    la: int
    b: int = -1
    lb: int = 0
    q: np.ndarray | None = None


def _bits(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 7
    if dtype == np.uint16:
        return 15
    raise ParamsError(f"cannot blend {dtype} images; convert them to uint8 or uint16 first")


def smooth_ramp(length: int, bits: int) -> np.ndarray:
    """Integer weights (0..2**bits) rising along a smoothstep over ``length`` pixel centres."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    return np.rint(t * t * (3.0 - 2.0 * t) * (1 << bits)).astype(np.int64)


def _clip(seg: Segment, length: int) -> Segment | None:
    lo, hi = max(seg.start, 0), min(seg.end, length)
    if lo >= hi:
        return None
    cut = lo - seg.start
    q = None if seg.q is None else seg.q[cut:cut + hi - lo]
    return Segment(lo, hi, seg.a, seg.la + cut, seg.b, seg.lb + cut, q)


def axis_segments(axis: Axis, bits: int = 8) -> list[Segment]:
    """Cover ``[0, axis.length)`` with pure and transition segments, in order."""
    n, length, origins = len(axis.origins), axis.length, axis.origins
    if n == 1:
        return [Segment(0, length, 0, 0)]
    trans = axis.transitions
    periods = (-1, 0, 1) if axis.tileable else (0,)
    raw: list[Segment] = []
    for p in periods:
        shift = p * length
        for k in range(n):
            o_k = origins[k] + shift
            if k > 0:
                prev_end = trans[k - 1][1] + shift
            else:
                prev_end = trans[-1][1] + shift - length if axis.tileable else 0
            nxt = trans[k][0] + shift if k < len(trans) else length
            raw.append(Segment(prev_end, nxt, k, prev_end - o_k))
            if k < len(trans):
                s, e = trans[k][0] + shift, trans[k][1] + shift
                k2 = (k + 1) % n
                o_k2 = origins[k2] + shift + (length if k2 < k else 0)
                raw.append(Segment(s, e, k, s - o_k, k2, s - o_k2, smooth_ramp(e - s, bits)))
    clipped = (_clip(seg, length) for seg in raw)
    return sorted((seg for seg in clipped if seg is not None), key=lambda seg: seg.start)


def axis_weights(axis: Axis) -> np.ndarray:
    """The blend weight of every tile of ``axis`` at every pixel, shape ``(n, length)``, float64.
    Columns sum to exactly one."""
    bits = 8
    out = np.zeros((len(axis.origins), axis.length))
    for seg in axis_segments(axis, bits):
        if seg.q is None:
            out[seg.a, seg.start:seg.end] += 1.0
        else:
            out[seg.a, seg.start:seg.end] += ((1 << bits) - seg.q) / (1 << bits)
            out[seg.b, seg.start:seg.end] += seg.q / (1 << bits)
    return out


def _checked(arr: np.ndarray, index: int, h: int, w: int, channels: int, dtype: np.dtype) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2 and channels == 1:
        arr = arr[..., None]
    if arr.shape != (h, w, channels) or arr.dtype != dtype:
        raise ParamsError(
            f"tile {index} is {'x'.join(map(str, arr.shape))} {arr.dtype}, expected "
            f"{h}x{w}x{channels} {dtype}; return tiles at their planned size and format"
        )
    return arr


class _TileRows:
    """Fetches tiles on demand, keeping only those of the tile rows still needed."""

    def __init__(self, plan: TilePlan, get_tile: GetTile, channels: int, dtype: np.dtype) -> None:
        self.plan, self.get_tile, self.channels, self.dtype = plan, get_tile, channels, dtype
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def keep(self, rows: set[int]) -> None:
        for key in [k for k in self.cache if k[0] not in rows]:
            del self.cache[key]

    def get(self, row: int, col: int) -> np.ndarray:
        key = (row, col)
        if key not in self.cache:
            tile = self.plan.tiles[row * self.plan.n_cols + col]
            self.cache[key] = _checked(self.get_tile(tile.index), tile.index, tile.h, tile.w,
                                       self.channels, self.dtype)
        return self.cache[key]


def _lerp(dst: np.ndarray, a: np.ndarray, b: np.ndarray, q: np.ndarray, bits: int) -> None:
    """``dst = a + round((b - a) * q / K)`` (``q`` in 0..K broadcasts); exactly ``a`` where
    ``a == b``; ``dst`` may be ``a``."""
    diff = np.subtract(b, a, dtype=_ACC[bits][0])
    diff *= q.astype(diff.dtype)
    diff += 1 << (bits - 1)
    diff >>= bits
    diff += a
    dst[...] = diff


def _fill_cell(out: np.ndarray, ys: Segment, xs: Segment, rows: _TileRows, bits: int) -> None:
    h, w = ys.end - ys.start, xs.end - xs.start
    dst = out[ys.start:ys.end, xs.start:xs.end]

    def part(r: int, ly: int, c: int, lx: int) -> np.ndarray:
        return rows.get(r, c)[ly:ly + h, lx:lx + w]

    acc2 = _ACC[bits][1]
    if ys.q is None and xs.q is None:
        dst[...] = part(ys.a, ys.la, xs.a, xs.la)
    elif ys.q is None:
        assert xs.q is not None
        _lerp(dst, part(ys.a, ys.la, xs.a, xs.la), part(ys.a, ys.la, xs.b, xs.lb),
              xs.q.reshape(1, w, 1), bits)
    elif xs.q is None:
        _lerp(dst, part(ys.a, ys.la, xs.a, xs.la), part(ys.b, ys.lb, xs.a, xs.la),
              ys.q.reshape(h, 1, 1), bits)
    else:
        k = 1 << bits
        qx, qy = xs.q.reshape(1, w, 1).astype(acc2), ys.q.reshape(h, 1, 1).astype(acc2)
        total = np.multiply(part(ys.a, ys.la, xs.a, xs.la), (k - qy) * (k - qx), dtype=acc2)
        total += np.multiply(part(ys.a, ys.la, xs.b, xs.lb), (k - qy) * qx, dtype=acc2)
        total += np.multiply(part(ys.b, ys.lb, xs.a, xs.la), qy * (k - qx), dtype=acc2)
        total += np.multiply(part(ys.b, ys.lb, xs.b, xs.lb), qy * qx, dtype=acc2)
        total += 1 << (2 * bits - 1)
        total >>= 2 * bits
        dst[...] = total


def _check_plan(plan: TilePlan, channels: int) -> None:
    if plan.kind != "grid" or plan.axis_x is None or plan.axis_y is None:
        raise ParamsError("blend_tiles needs a grid plan from plan_tiles; use blend_seam_fix for seam-fix tiles")
    if not 1 <= channels <= 4:
        raise ParamsError(f"cannot blend {channels} channels; images have 1 to 4 channels")


def blend_tiles(plan: TilePlan, get_tile: GetTile, *, channels: int,
                dtype: np.dtype | type = np.uint8,
                on_rows: Callable[[np.ndarray, int, int], None] | None = None) -> np.ndarray:
    """Blend the tiles of a grid ``plan`` into one ``(height, width, channels)`` image.

    ``get_tile(index)`` returns tile ``index`` as ``(h, w, channels)`` (or ``(h, w)`` for one
    channel) of ``dtype``; it is called once per tile (twice for the first and last tile rows of a
    tileable plan). A tile of the wrong shape or dtype raises :class:`ParamsError`.
    ``on_rows(out, start, end)`` is called as each band of rows ``[start, end)`` is final, in
    order (so a consumer can encode while later tiles are still being produced).
    """
    dtype = np.dtype(dtype)
    bits = _bits(dtype)
    _check_plan(plan, channels)
    assert plan.axis_x is not None and plan.axis_y is not None
    out = np.empty((plan.height, plan.width, channels), dtype=dtype)
    xsegs = axis_segments(plan.axis_x, bits)
    rows = _TileRows(plan, get_tile, channels, dtype)
    for ys in axis_segments(plan.axis_y, bits):
        rows.keep({ys.a, ys.b})
        for xs in xsegs:
            _fill_cell(out, ys, xs, rows, bits)
        if on_rows is not None:
            on_rows(out, ys.start, ys.end)
    return out


def _edge_mask(start: int, size: int, length: int, feather: int, wraps: bool, bits: int) -> np.ndarray:
    """Integer mask (0..K) along one axis of a seam-fix group: ramps at edges inside the image."""
    k = 1 << bits
    mask = np.full(size, k, dtype=np.int64)
    feather = min(feather, size // 2)
    if feather < 1 or size >= length:
        return mask
    ramp = smooth_ramp(feather, bits)
    if wraps or start > 0:
        mask[:feather] = ramp
    if wraps or start + size < length:
        mask[size - feather:] = np.minimum(mask[size - feather:], ramp[::-1])
    return mask


def _composite(out: np.ndarray, layer: np.ndarray, x: int, y: int, q: np.ndarray, bits: int) -> None:
    """Lay ``layer`` over ``out`` at ``(x, y)`` (wrapping) through integer mask ``q`` (0..K)."""
    height, width = out.shape[:2]
    h, w = layer.shape[:2]
    full = bool(np.all(q == (1 << bits)))
    for y0, y1, ly in axis_spans(y, h, height):
        for x0, x1, lx in axis_spans(x, w, width):
            src = layer[ly:ly + y1 - y0, lx:lx + x1 - x0]
            dst = out[y0:y1, x0:x1]
            if full:
                dst[...] = src
            else:
                _lerp(dst, dst, src, q[ly:ly + y1 - y0, lx:lx + x1 - x0, None], bits)


def blend_seam_fix(base: np.ndarray, fix_plan: TilePlan, get_tile: GetTile, *,
                   inplace: bool = False) -> np.ndarray:
    """Composite the seam-fix tiles of ``fix_plan`` over ``base`` (H, W, C), group by group.

    Each :class:`~service.core.tiling.FixGroup` is first blended on its own exactly like
    :func:`blend_tiles` (smooth ramps over the actual overlaps of its tiles), then laid over the
    image through a mask: 1 inside, a smoothstep ramp ``feather`` px wide at each edge that lies
    inside the image (image borders stay hard unless the plan is tileable). Outside every mask
    the base is untouched; where the tiles equal the base the result is bit-identical.
    ``get_tile(index)`` is called with the fix plan's tile indices. Returns a new array unless
    ``inplace``.
    """
    if fix_plan.kind not in ("offset", "band"):
        raise ParamsError("blend_seam_fix needs a plan from plan_seam_fix")
    if base.ndim != 3 or base.shape[:2] != (fix_plan.height, fix_plan.width):
        raise ParamsError(
            f"base image is {base.shape}, expected ({fix_plan.height}, {fix_plan.width}, C)"
        )
    bits = _bits(base.dtype)
    out = base if inplace else base.copy()
    for group in fix_plan.groups:
        layer = blend_tiles(group.grid, get_tile, channels=base.shape[2], dtype=base.dtype)
        h, w = layer.shape[:2]
        mx = _edge_mask(group.x, w, fix_plan.width, group.feather_x, fix_plan.tileable, bits)
        my = _edge_mask(group.y, h, fix_plan.height, group.feather_y, fix_plan.tileable, bits)
        q = (my[:, None] * mx[None, :] + (1 << (bits - 1))) >> bits
        _composite(out, layer, group.x, group.y, q, bits)
    return out
