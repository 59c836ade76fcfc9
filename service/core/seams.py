"""Seam metrics: numbers that say whether a tiled result shows its tiles.

Definitions follow the project's reference (upscale anchors, section 2.3). Inputs are
``(H, W, C)`` sRGB images (C = 1-4; alpha ignored; uint16 is scaled to 8-bit levels) and the
internal seams from the tile plan (``x0`` means columns ``x0 - 1`` and ``x0`` come from different
tile centres). Each metric is the maximum over seams; with no measurable seam the neutral value
is returned (1.0 for SGR, 0.0 for the others).

* :func:`sgr` — Seam Gradient Ratio: mean luma gradient across the seam over the median of the
  same at offsets 3-13 px. About 1.0 means no hard cut. Gate: <= 1.10.
* :func:`lrs` — Low-frequency Residual Step, in 8-bit levels: a step in the Gaussian-blurred
  (sigma 2) luma residual against the reference, minus the median step nearby. Catches drift that
  feathering hides. Gate: <= 1.0.
* :func:`tcd` — Tile Colour Drift: the largest CIE76 Delta E between the mean CIELAB (D65) of
  an output tile and of the reference over the same box. Gate: <= 2.
* :func:`wrap_seam_lrs` — LRS across the wrap-around edges of a tileable image, without a
  reference: the image is rolled by half its size so the wrap edges become interior seams.

Pure numpy; large images are reduced per seam, or converted to CIELAB once per pixel in row bands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.core.errors import ParamsError
from service.core.tiling import TilePlan, axis_spans

SGR_OFFSETS = (3, 5, 7, 9, 11, 13)
LRS_OFFSETS = (-40, -32, -24, 24, 32, 40)
LRS_WINDOW = 8
SIGMA = 2.0
NOREF_BLOCK = 64
_EPS = 1e-3


def to_levels(image: np.ndarray) -> np.ndarray:
    """Colour channels as float64 in 8-bit levels, shape (H, W, 3) (grey is repeated)."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or not 1 <= image.shape[2] <= 4:
        raise ParamsError(f"seam metrics take (H, W, C) images with 1-4 channels, not {image.shape}")
    scale = 255.0 / 65535.0 if image.dtype == np.uint16 else 1.0
    colour = image[..., :3] if image.shape[2] >= 3 else image[..., :1].repeat(3, axis=2)
    return colour.astype(np.float64) * scale


def luma(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma ``0.299 R + 0.587 G + 0.114 B`` in 8-bit levels, float64 (H, W)."""
    rgb = to_levels(image)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def gaussian_blur(plane: np.ndarray, sigma: float = SIGMA, *, mode: str = "reflect") -> np.ndarray:
    """Separable Gaussian blur of a 2-D plane (radius 3 sigma), ``np.pad`` border ``mode``."""
    radius = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    out = plane
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode=mode)  # type: ignore[call-overload]
        n = out.shape[axis]
        acc = np.zeros_like(out, dtype=np.float64)
        for i, k in enumerate(kernel):
            acc += k * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def _columns(image: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    """Luma of columns (axis 1) or rows (axis 0) ``[lo, hi)`` taken modulo the image size, laid
    out so the seams run along columns."""
    idx = np.arange(lo, hi) % image.shape[axis]
    return luma(np.take(image, idx, axis=axis)) if axis == 1 else luma(np.take(image, idx, axis=0)).T


def _sgr_at(image: np.ndarray, axis: int, x0: int) -> float | None:
    length = image.shape[axis]
    lo, hi = max(0, x0 - 1 - SGR_OFFSETS[-1]), min(length, x0 + SGR_OFFSETS[-1] + 1)
    if not 1 <= x0 < length:
        return None
    grad = np.abs(np.diff(_columns(image, axis, lo, hi), axis=1)).mean(axis=0)
    at = x0 - 1 - lo  # grad[at]: between columns x0 - 1 and x0
    refs = [grad[at + s * o] for o in SGR_OFFSETS for s in (-1, 1) if 0 <= at + s * o < grad.size]
    if not refs:
        return None
    return float((grad[at] + _EPS) / (float(np.median(refs)) + _EPS))


def sgr(output: np.ndarray, seams_x: Sequence[int], seams_y: Sequence[int]) -> float:
    """Seam Gradient Ratio (max over seams; 1.0 = no cut)."""
    values = [_sgr_at(output, 1, x0) for x0 in seams_x] + [_sgr_at(output, 0, y0) for y0 in seams_y]
    return max([1.0] + [v for v in values if v is not None])


def _step_excess(resid: np.ndarray, x0: int, valid: tuple[int, int], *,
                 detrend: bool = False) -> float | None:
    """LRS at column ``x0`` of a blurred residual: the step there minus the median nearby.
    Windows must lie inside ``valid`` (the columns holding true data).

    ``detrend`` is for planes measured without a reference: each row's step has the mean of its
    two neighbouring steps removed (a smooth gradient is not a step) and the signed steps are
    averaged over blocks of :data:`NOREF_BLOCK` rows before taking magnitudes, so texture (whose
    steps change sign from row to row) cancels while a seam (a coherent step) remains."""
    cums = np.concatenate([np.zeros((resid.shape[0], 1)), np.cumsum(resid, axis=1)], axis=1)
    win = LRS_WINDOW
    reach = 2 * win if detrend else win

    def mean(a: int) -> np.ndarray:  # per row, mean of columns [a, a + win)
        return (cums[:, a + win] - cums[:, a]) / win

    def step(x: int) -> float | None:
        if x - reach < valid[0] or x + reach > valid[1]:
            return None
        jump = mean(x) - mean(x - win)
        if detrend:
            jump -= 0.5 * ((mean(x + win) - mean(x)) + (mean(x - win) - mean(x - 2 * win)))
            block = min(NOREF_BLOCK, jump.size)
            jump = jump[: jump.size // block * block].reshape(-1, block).mean(axis=1)
        return float(np.abs(jump).mean())

    here = step(x0)
    near = [s for s in (step(x0 + o) for o in LRS_OFFSETS) if s is not None]
    if here is None or not near:
        return None
    return here - float(np.median(near))


_REACH = max(LRS_OFFSETS) + LRS_WINDOW  # columns either side of a seam the windows read
_BLUR_R = int(np.ceil(3 * SIGMA))


def _lrs_at(output: np.ndarray, reference: np.ndarray, axis: int, x0: int) -> float | None:
    length = output.shape[axis]
    lo, hi = max(0, x0 - _REACH - _BLUR_R), min(length, x0 + _REACH + _BLUR_R)
    resid = gaussian_blur(_columns(output, axis, lo, hi) - _columns(reference, axis, lo, hi))
    # columns within the blur radius of a cut that is not an image edge are not exact
    valid = (0 if lo == 0 else _BLUR_R, hi - lo if hi == length else hi - lo - _BLUR_R)
    return _step_excess(resid, x0 - lo, valid)


def lrs(output: np.ndarray, reference: np.ndarray, seams_x: Sequence[int],
        seams_y: Sequence[int]) -> float:
    """Low-frequency Residual Step in 8-bit levels (max over seams; 0 = no step)."""
    if output.shape[:2] != reference.shape[:2]:
        raise ParamsError(
            f"output {output.shape[:2]} and reference {reference.shape[:2]} differ in size; "
            "resize the reference to the output size"
        )
    values = [_lrs_at(output, reference, 1, x0) for x0 in seams_x]
    values += [_lrs_at(output, reference, 0, y0) for y0 in seams_y]
    return max([0.0] + [v for v in values if v is not None])


def wrap_seam_lrs(output: np.ndarray, reference: np.ndarray | None = None) -> float:
    """LRS across the left/right and top/bottom wrap edges of a tileable image.

    The image is read periodically around each wrap edge (as if rolled by half its size), so the
    edge becomes an interior seam; the blur wraps too. With a (seamless) ``reference`` this is
    exactly LRS on the residual; gate on this form. Without one, the output's own blurred
    luma is used with detrended, row-averaged steps: a coarse check whose noise floor on strongly
    textured images is about 1-2 levels, so it only flags clear breaks.
    """
    if reference is not None and reference.shape[:2] != output.shape[:2]:
        raise ParamsError("output and reference differ in size; resize the reference to the output size")
    worst = 0.0
    reach = _REACH + LRS_WINDOW + _BLUR_R
    for axis in (1, 0):
        plane = _columns(output, axis, -reach, reach)
        if reference is not None:
            plane = plane - _columns(reference, axis, -reach, reach)
        strip = gaussian_blur(plane, mode="wrap")
        value = _step_excess(strip, reach, (_BLUR_R, 2 * reach - _BLUR_R), detrend=reference is None)
        worst = max(worst, value if value is not None else 0.0)
    return worst


_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])
_LAB_BAND_ROWS = 256


def _linear_lut(dtype: np.dtype) -> np.ndarray:
    """sRGB code value -> linear light, float32, one entry per value of ``dtype``."""
    c = np.arange(np.iinfo(dtype).max + 1, dtype=np.float64) / np.iinfo(dtype).max
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an sRGB uint8/uint16 image (1-4 channels, alpha ignored), float32 (H, W, 3)."""
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype not in (np.uint8, np.uint16) or not 1 <= image.shape[-1] <= 4:
        raise ParamsError(f"CIELAB needs (H, W, C) uint8/uint16 sRGB, not {image.shape} {image.dtype}")
    colour = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    linear = _linear_lut(image.dtype)[colour]
    xyz = linear @ (_SRGB_TO_XYZ.T / _D65[None, :]).astype(np.float32)
    small = xyz <= (6 / 29) ** 3
    f = np.cbrt(xyz)
    f[small] = xyz[small] / np.float32(3 * (6 / 29) ** 2) + np.float32(4 / 29)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def _tile_lab_means(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Mean CIELAB of every tile, (n_tiles, 3) float64; each pixel is converted once, in bands."""
    sums = np.zeros((len(plan.tiles), 3))
    spans = [(axis_spans(t.y, t.h, plan.height), axis_spans(t.x, t.w, plan.width)) for t in plan.tiles]
    for y0 in range(0, plan.height, _LAB_BAND_ROWS):
        y1 = min(plan.height, y0 + _LAB_BAND_ROWS)
        lab = to_lab(image[y0:y1])
        for i, (rows, cols) in enumerate(spans):
            for r0, r1, _ in rows:
                lo, hi = max(r0, y0), min(r1, y1)
                if lo < hi:
                    for c0, c1, _ in cols:
                        sums[i] += lab[lo - y0:hi - y0, c0:c1].sum(axis=(0, 1), dtype=np.float64)
    counts = np.array([t.w * t.h for t in plan.tiles], dtype=np.float64)
    return sums / counts[:, None]


def tcd(output: np.ndarray, reference: np.ndarray, plan: TilePlan) -> float:
    """Tile Colour Drift: max over the plan's tiles of Delta E*ab between mean Labs."""
    if output.shape[:2] != reference.shape[:2] or output.shape[:2] != (plan.height, plan.width):
        raise ParamsError(
            f"output {output.shape[:2]}, reference {reference.shape[:2]} and plan "
            f"({plan.height}, {plan.width}) must have the same size"
        )
    drift = _tile_lab_means(output, plan) - _tile_lab_means(reference, plan)
    return float(np.sqrt((drift**2).sum(axis=1)).max()) if len(drift) else 0.0
