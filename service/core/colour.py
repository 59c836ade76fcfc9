"""Colour fix: pull a refined image's low frequencies (its colour and shading) back to a reference.

Diffusion at low denoise adds detail but lets each tile drift in colour. The reference is the
pre-upscaled input at the same size. Pure numpy, float32, no I/O.

* :func:`wavelet_colour_fix` (default; as in SUPIR / StableSR): a 5-level a-trous decomposition
  with the 3x3 kernel ``[1, 2, 1] (x) [1, 2, 1] / 16`` at dilation ``2**i`` and replicate padding;
  the result is the refined image's high frequencies plus the reference's low frequency. New
  detail stays, colour comes from the reference.
* :func:`adain_colour_fix`: per channel ``(x - mean_x) / std_x * std_ref + mean_ref``.
* :func:`colour_fix` applies either to a whole image of any size in row bands, so memory stays
  bounded; the wavelet result is identical to the one-shot call because every output pixel
  depends only on inputs within :data:`WAVELET_RADIUS` rows.

Arrays are ``(H, W, C)`` uint8 or uint16 (C = 1-4; every channel is fixed, alpha included, so
pass colour channels only if alpha must stay untouched). Shapes and dtypes of tile and
reference must match.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from service.core.errors import ParamsError

LEVELS = 5
WAVELET_RADIUS = sum(2**i for i in range(LEVELS))  # 31 px: the reach of the low-pass chain
ColourFixMode = Literal["none", "wavelet", "adain"]


def _check(tile: np.ndarray, reference: np.ndarray) -> None:
    if tile.shape != reference.shape or tile.dtype != reference.dtype:
        raise ParamsError(
            f"colour fix needs a reference of the same shape and dtype: got {tile.shape} {tile.dtype} "
            f"and {reference.shape} {reference.dtype}; resize the reference to the output size"
        )
    if tile.ndim != 3 or tile.dtype not in (np.uint8, np.uint16):
        raise ParamsError(f"colour fix takes (H, W, C) uint8/uint16 images, not {tile.shape} {tile.dtype}")


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float values into an integer dtype (``values`` is overwritten)."""
    np.rint(values, out=values)
    np.clip(values, 0, np.iinfo(dtype).max, out=values)
    return values.astype(dtype)


def _blur_axis(x: np.ndarray, d: int, axis: int) -> np.ndarray:
    """``[1, 2, 1]`` (unnormalised: sums to 4) along ``axis`` at dilation ``d`` with replicate
    padding, written without a padded copy (new array)."""
    n = x.shape[axis]

    if n <= 2 * d:  # tiny: every neighbour is clamped, index explicitly
        idx = np.arange(n)
        before = np.take(x, np.maximum(idx - d, 0), axis=axis)
        after = np.take(x, np.minimum(idx + d, n - 1), axis=axis)
        return before + after + x + x
    out = np.empty_like(x)
    dst = out.swapaxes(0, axis) if axis else out
    src = x.swapaxes(0, axis) if axis else x
    for lo, hi, left, right in ((d, n - d, src[: n - 2 * d], src[2 * d:]),
                                (0, d, src[:1], src[d: 2 * d]),
                                (n - d, n, src[n - 2 * d: n - d], src[n - 1:])):
        part = dst[lo:hi]
        np.add(left, right, out=part)
        part += src[lo:hi]
        part += src[lo:hi]
    return out


def wavelet_low(image: np.ndarray) -> np.ndarray:
    """The lowest-frequency band of the a-trous decomposition, float32 (linear in ``image``)."""
    return _low_in_place(image.astype(np.float32))


def _low_in_place(low: np.ndarray) -> np.ndarray:
    for i in range(LEVELS):
        low = _blur_axis(_blur_axis(low, 2**i, 0), 2**i, 1)
    low *= np.float32(0.5 ** (4 * LEVELS))  # each level's two [1, 2, 1] passes sum to 16
    return low


def wavelet_colour_fix(tile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``tile - low(tile) + low(reference)``, rounded and clipped to the tile's dtype.

    The low-pass is linear, so this is computed as ``tile + low(reference - tile)``: one
    decomposition instead of two."""
    _check(tile, reference)
    fixed = _low_in_place(np.subtract(reference, tile, dtype=np.float32))
    fixed += tile
    return _to_dtype(fixed, tile.dtype)


def _histograms(image: np.ndarray) -> list[np.ndarray]:
    """Per-channel value histograms (exact statistics for integer images, cheap to merge)."""
    size = np.iinfo(image.dtype).max + 1
    return [np.bincount(image[..., c].ravel(), minlength=size) for c in range(image.shape[-1])]


def _moments(hists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    means, stds = [], []
    for hist in hists:
        values = np.arange(hist.size, dtype=np.float64)
        count = max(int(hist.sum()), 1)
        mean = float(hist @ values) / count
        means.append(mean)
        stds.append(np.sqrt(max(float(hist @ (values - mean) ** 2) / count, 0.0)))
    return np.array(means), np.array(stds)


def _adain_luts(image_hists: list[np.ndarray], ref_hists: list[np.ndarray], dtype: np.dtype
                ) -> list[np.ndarray]:
    """Per channel, the table value -> ``(value - mean) / std * std_ref + mean_ref``."""
    (mean_t, std_t), (mean_r, std_r) = _moments(image_hists), _moments(ref_hists)
    values = np.arange(np.iinfo(dtype).max + 1, dtype=np.float64)
    luts = []
    for c in range(mean_t.size):
        gain = std_r[c] / std_t[c] if std_t[c] > 1e-6 else 1.0
        luts.append(_to_dtype((values - mean_t[c]) * gain + mean_r[c], dtype))
    return luts


def _apply_luts(image: np.ndarray, luts: list[np.ndarray]) -> np.ndarray:
    out = np.empty_like(image)
    for c, lut in enumerate(luts):
        out[..., c] = lut[image[..., c]]
    return out


def adain_colour_fix(tile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Match each channel's mean and standard deviation to the reference's."""
    _check(tile, reference)
    return _apply_luts(tile, _adain_luts(_histograms(tile), _histograms(reference), tile.dtype))


def _band_histograms(image: np.ndarray, rows: int) -> list[np.ndarray]:
    bands = [_histograms(image[y:y + rows]) for y in range(0, image.shape[0], rows)]
    return [np.sum([band[c] for band in bands], axis=0) for c in range(image.shape[-1])]


def colour_fix(image: np.ndarray, reference: np.ndarray, mode: ColourFixMode = "wavelet", *,
               rows: int = 512) -> np.ndarray:
    """Colour-fix a whole image against ``reference`` in bands of ``rows`` rows (new array)."""
    _check(image, reference)
    if mode == "none":
        return image.copy()
    if mode not in ("wavelet", "adain"):
        raise ParamsError(f"unknown colour fix {mode!r}; use 'none', 'wavelet' or 'adain'")
    out = np.empty_like(image)
    if mode == "adain":
        luts = _adain_luts(_band_histograms(image, rows), _band_histograms(reference, rows),
                           image.dtype)
        for y in range(0, image.shape[0], rows):
            out[y:y + rows] = _apply_luts(image[y:y + rows], luts)
        return out
    margin = WAVELET_RADIUS
    for y in range(0, image.shape[0], rows):
        lo, hi = max(0, y - margin), min(image.shape[0], y + rows + margin)
        fixed = wavelet_colour_fix(image[lo:hi], reference[lo:hi])
        out[y:y + rows] = fixed[y - lo:y - lo + min(rows, image.shape[0] - y)]
    return out
