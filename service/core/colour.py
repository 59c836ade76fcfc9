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
    top = np.iinfo(dtype).max
    return np.clip(np.rint(values), 0, top).astype(dtype)


def _blur_axis(x: np.ndarray, d: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (d, d)
    p = np.pad(x, pad, mode="edge")
    n = x.shape[axis]
    lo, mid, hi = (np.take(p, np.arange(s, s + n), axis=axis) for s in (0, d, 2 * d))
    mid *= 2.0
    mid += lo
    mid += hi
    mid *= 0.25
    return mid


def wavelet_low(image: np.ndarray) -> np.ndarray:
    """The lowest-frequency band of the a-trous decomposition, float32."""
    low = image.astype(np.float32)
    for i in range(LEVELS):
        low = _blur_axis(_blur_axis(low, 2**i, 0), 2**i, 1)
    return low


def wavelet_colour_fix(tile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``tile - low(tile) + low(reference)``, rounded and clipped to the tile's dtype."""
    _check(tile, reference)
    fixed = tile.astype(np.float32)
    fixed -= wavelet_low(tile)
    fixed += wavelet_low(reference)
    return _to_dtype(fixed, tile.dtype)


def _stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), flat.std(axis=0)


def adain_colour_fix(tile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Match each channel's mean and standard deviation to the reference's."""
    _check(tile, reference)
    return _adain_apply(tile, *_stats(tile), *_stats(reference))


def _adain_apply(tile: np.ndarray, mean_t: np.ndarray, std_t: np.ndarray,
                 mean_r: np.ndarray, std_r: np.ndarray) -> np.ndarray:
    gain = np.where(std_t > 1e-6, std_r / np.maximum(std_t, 1e-6), 1.0)
    values = (tile.astype(np.float32) - mean_t.astype(np.float32)) * gain.astype(np.float32)
    values += mean_r.astype(np.float32)
    return _to_dtype(values, tile.dtype)


def _band_stats(image: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    total = np.zeros(image.shape[-1])
    total_sq = np.zeros(image.shape[-1])
    for y in range(0, image.shape[0], rows):
        band = image[y:y + rows].reshape(-1, image.shape[-1]).astype(np.float64)
        total += band.sum(axis=0)
        total_sq += np.square(band).sum(axis=0)
    count = image.shape[0] * image.shape[1]
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))


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
        stats = (*_band_stats(image, rows), *_band_stats(reference, rows))
        for y in range(0, image.shape[0], rows):
            out[y:y + rows] = _adain_apply(image[y:y + rows], *stats)
        return out
    margin = WAVELET_RADIUS
    for y in range(0, image.shape[0], rows):
        lo, hi = max(0, y - margin), min(image.shape[0], y + rows + margin)
        fixed = wavelet_colour_fix(image[lo:hi], reference[lo:hi])
        out[y:y + rows] = fixed[y - lo:y - lo + min(rows, image.shape[0] - y)]
    return out
