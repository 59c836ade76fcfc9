"""Pixel-art scalers: integer factors, hard edges kept, only the input's colours in the output.

Scalers (``PIXEL_SCALERS``):

* ``nearest`` — every pixel becomes a ``k x k`` block; any integer ``k``.
* ``epx``     — the EPX / AdvMAME Scale2x and Scale3x rules: a corner of the enlarged pixel takes
  the colour of two equal neighbours that meet there (and differ from the other two), which
  rounds diagonal staircases without inventing a colour. ``4x`` = ``2x`` twice, ``6x`` = ``2x``
  then ``3x``, ``8x`` = ``2x`` three times; other factors fall back to ``nearest``.

Both scalers only *copy* input pixels, so the palette is locked by construction;
:func:`lock_palette` snaps anything else (a diffused pixel-art result, when the user asks for
diffusion) back onto the input's colours. Pixels are compared as whole RGBA values; every fully
transparent pixel counts as the same colour for the edge rules, whatever colour it hides.

Why our own code: the maintained PyPI scalers are ``xbrz.py`` (AGPL/GPL, unsuitable for an MIT
service's default install) and ``hqx`` (LGPL, pure Python, RGB only, no alpha); EPX is a few
array operations. See docs/decisions/0005-pixel-art-scalers.md.

Arrays: ``(H, W, C)`` of any integer dtype (colour and alpha together) or ``(H, W)``.
Pure: numpy only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

PixelScaler = Literal["epx", "nearest"]
PIXEL_SCALERS: tuple[PixelScaler, ...] = ("epx", "nearest")
_EPX_STEPS = {1: (), 2: (2,), 3: (3,), 4: (2, 2), 6: (2, 3), 8: (2, 2, 2), 9: (3, 3)}


def integer_factor(src: tuple[int, int], dst: tuple[int, int]) -> int | None:
    """The integer ``k`` with ``dst == k * src`` on both axes, else ``None``."""
    (sw, sh), (dw, dh) = src, dst
    if dw % sw or dh % sh or dw // sw != dh // sh:
        return None
    return dw // sw


def scale_pixels(pixels: np.ndarray, factor: int, scaler: PixelScaler = "epx",
                 *, alpha_channel: bool | None = None) -> tuple[np.ndarray, str]:
    """``pixels`` enlarged ``factor`` times; returns ``(result, what ran)``.

    ``alpha_channel``: whether the last channel of a 2- or 4-channel image is alpha (default:
    yes for 2 and 4 channels), so fully transparent pixels compare equal.
    """
    if factor < 1:
        raise ValueError(f"pixel-art factor must be a positive integer, got {factor}")
    keys = _keys(pixels, alpha_channel)
    positions = np.arange(keys.size, dtype=np.int64).reshape(keys.shape)
    steps = _EPX_STEPS.get(factor) if scaler == "epx" else None
    if steps is None:
        ran = "nearest" if scaler == "nearest" else f"nearest (epx has no x{factor})"
        out = np.repeat(np.repeat(positions, factor, axis=0), factor, axis=1)
    else:
        ran = "epx " + "+".join(f"{s}x" for s in steps) if steps else "identity"
        out = positions
        for step in steps:
            out = _epx(out, keys.ravel()[out], step)
    flat = pixels.reshape(keys.size, -1)
    result = flat[out.ravel()].reshape(out.shape + pixels.shape[2:])
    return result, ran


def _keys(pixels: np.ndarray, alpha_channel: bool | None) -> np.ndarray:
    """One int64 id per pixel; equal ids mean equal colours (all fully transparent ones equal)."""
    planes = pixels[:, :, None] if pixels.ndim == 2 else pixels
    channels = planes.shape[2]
    has_alpha = channels in (2, 4) if alpha_channel is None else alpha_channel
    flat = planes.reshape(-1, channels)
    _, ids = np.unique(flat, axis=0, return_inverse=True)
    ids = ids.reshape(planes.shape[:2]).astype(np.int64)
    if has_alpha:
        ids = np.where(planes[:, :, -1] == 0, -1, ids)
    return ids


def _epx(pos: np.ndarray, key: np.ndarray, step: int) -> np.ndarray:
    """One Scale2x/Scale3x step on a map of source positions, comparing ``key`` values."""
    height, width = pos.shape
    kp = np.pad(key, 1, mode="edge")
    pp = np.pad(pos, 1, mode="edge")

    def at(dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
        sl = (slice(1 + dy, 1 + dy + height), slice(1 + dx, 1 + dx + width))
        return kp[sl], pp[sl]

    (ka, _), (kb, pb), (kc, _) = at(-1, -1), at(-1, 0), at(-1, 1)
    (kd, pd), (ke, pe), (kf, pf) = at(0, -1), at(0, 0), at(0, 1)
    (kg, _), (kh, ph), (ki, _) = at(1, -1), at(1, 0), at(1, 1)
    out = np.empty((height * step, width * step), dtype=pos.dtype)
    top_left = (kd == kb) & (kb != kf) & (kd != kh)
    top_right = (kb == kf) & (kb != kd) & (kf != kh)
    bottom_left = (kd == kh) & (kd != kb) & (kh != kf)
    bottom_right = (kh == kf) & (kd != kh) & (kb != kf)
    if step == 2:
        out[0::2, 0::2] = np.where(top_left, pd, pe)
        out[0::2, 1::2] = np.where(top_right, pf, pe)
        out[1::2, 0::2] = np.where(bottom_left, pd, pe)
        out[1::2, 1::2] = np.where(bottom_right, pf, pe)
        return out
    out[0::3, 0::3] = np.where(top_left, pd, pe)
    out[0::3, 1::3] = np.where((top_left & (ke != kc)) | (top_right & (ke != ka)), pb, pe)
    out[0::3, 2::3] = np.where(top_right, pf, pe)
    out[1::3, 0::3] = np.where((top_left & (ke != kg)) | (bottom_left & (ke != ka)), pd, pe)
    out[1::3, 1::3] = pe
    out[1::3, 2::3] = np.where((top_right & (ke != ki)) | (bottom_right & (ke != kc)), pf, pe)
    out[2::3, 0::3] = np.where(bottom_left, pd, pe)
    out[2::3, 1::3] = np.where((bottom_left & (ke != ki)) | (bottom_right & (ke != kg)), ph, pe)
    out[2::3, 2::3] = np.where(bottom_right, pf, pe)
    return out


def palette(pixels: np.ndarray) -> np.ndarray:
    """The distinct colours of ``pixels`` as ``(N, C)``."""
    planes = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return np.unique(planes.reshape(-1, planes.shape[2]), axis=0)


def lock_palette(pixels: np.ndarray, colours: np.ndarray, *, rows: int = 64) -> np.ndarray:
    """Every pixel replaced by the nearest colour of ``colours`` (``(N, C)``, same dtype)."""
    planes = pixels[:, :, None] if pixels.ndim == 2 else pixels
    pal = colours.astype(np.float32)
    out = np.empty_like(planes)
    for y0 in range(0, planes.shape[0], rows):
        band = planes[y0:y0 + rows].astype(np.float32)
        dist = ((band[:, :, None, :] - pal[None, None, :, :]) ** 2).sum(axis=3)
        out[y0:y0 + rows] = colours[dist.argmin(axis=2)]
    return out[:, :, 0] if pixels.ndim == 2 else out
