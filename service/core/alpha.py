"""Alpha handling for sprites: colour on a matte, alpha on its own, recombined without halos.

Why: transparent pixels usually store black (or garbage) colour. Any resampler or
super-resolution model that sees the colour channels alone pulls that colour into the visible
edge pixels, which then show a dark (or light) halo. So before colour is upscaled, the colour of
every fully transparent pixel is replaced by colour bled in from its nearest visible neighbours
(a push-pull pyramid: average the visible colour over ever coarser 2x2 blocks, then fill each
hole from the coarsest level that covers it). The bled colour stays in the output on purpose:
engines sample textures bilinearly, and black under transparent pixels would fringe there too.
The alpha channel is upscaled separately (as a
grey image, by the caller's resampler) and the two are put back together.

Arrays: ``rgb`` ``(H, W, 3)`` and ``alpha`` ``(H, W)``, both ``uint8`` or both ``uint16``.
Pure: numpy only.
"""

from __future__ import annotations

import numpy as np


def is_opaque(alpha: np.ndarray | None) -> bool:
    """True when there is no alpha or every pixel is fully opaque."""
    if alpha is None:
        return True
    return bool(alpha.min(initial=np.iinfo(alpha.dtype).max) == np.iinfo(alpha.dtype).max)


def bleed_colour(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Return ``rgb`` with every fully transparent pixel's colour replaced by nearby visible colour.

    Visible pixels (``alpha > 0``) keep their colour exactly. When nothing is visible the input
    is returned unchanged.
    """
    visible = alpha > 0
    if visible.all() or not visible.any():
        return rgb.copy()
    colour = rgb.astype(np.float32)
    filled = _push_pull(colour * visible[:, :, None], visible.astype(np.float32))
    out = np.where(visible[:, :, None], colour, filled)
    return np.clip(np.rint(out), 0, np.iinfo(rgb.dtype).max).astype(rgb.dtype)


def _push_pull(weighted: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fill zero-weight pixels with the weighted mean colour of the nearest coarser level."""
    height, width = weight.shape
    if height <= 1 and width <= 1:
        return weighted / max(float(weight[0, 0]), 1e-6)
    coarse_c, coarse_w = _half(weighted), _half(weight[:, :, None])[:, :, 0]
    coarse = _push_pull(coarse_c, coarse_w)
    up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:height, :width]
    own = weighted / np.maximum(weight, 1e-6)[:, :, None]
    return np.where((weight > 0)[:, :, None], own, up)


def _half(arr: np.ndarray) -> np.ndarray:
    """Sum 2x2 blocks (odd sizes padded with zeros): (H, W, C) -> (ceil(H/2), ceil(W/2), C)."""
    height, width = arr.shape[:2]
    padded = np.pad(arr, ((0, height % 2), (0, width % 2), (0, 0)))
    return (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])


def recombine(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Stack colour and alpha into ``(H, W, 4)`` (or return ``rgb`` when there is no alpha)."""
    if alpha is None:
        return rgb
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} does not match colour {rgb.shape[:2]}")
    return np.dstack([rgb, alpha.astype(rgb.dtype)])


def split(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverse of :func:`recombine`: ``(H, W, 3|4)`` -> ``(rgb, alpha | None)``."""
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected (H, W, 3) or (H, W, 4) pixels, got {pixels.shape}")
    if pixels.shape[2] == 3:
        return pixels, None
    return np.ascontiguousarray(pixels[:, :, :3]), np.ascontiguousarray(pixels[:, :, 3])

