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


def bleed_colour(rgb: np.ndarray, alpha: np.ndarray, *, band: int = 256) -> np.ndarray:
    """Return ``rgb`` with every fully transparent pixel's colour replaced by nearby visible colour.

    Visible pixels (``alpha > 0``) keep their colour exactly. When nothing is visible the input
    is returned unchanged. Full-size work is done in the input dtype and in bands of ``band``
    rows; float maths only runs from half resolution down, so peak memory is about five times
    the input's (a 4096x4096 RGB sprite: ~256 MiB).
    """
    visible = alpha > 0
    if visible.all() or not visible.any():
        return rgb.copy()
    coarse = _push_pull(_half(rgb * visible[:, :, None]), _half(visible[:, :, None])[:, :, 0])
    top = np.iinfo(rgb.dtype).max
    out = rgb.copy()
    height, width = visible.shape
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        up = np.repeat(np.repeat(coarse[y0 // 2:(y1 + 1) // 2], 2, axis=0), 2, axis=1)
        fill = np.clip(np.rint(up[: y1 - y0, :width]), 0, top).astype(rgb.dtype)
        holes = ~visible[y0:y1]
        out[y0:y1][holes] = fill[holes]
    return out


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
    """Sum 2x2 blocks in float32 (odd edges count zeros): (H, W, C) -> (ceil(H/2), ceil(W/2), C)."""
    height, width = arr.shape[:2]
    out = np.zeros(((height + 1) // 2, (width + 1) // 2, arr.shape[2]), dtype=np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            part = arr[dy::2, dx::2]
            out[:part.shape[0], :part.shape[1]] += part
    return out


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



def parse_matte(text: str) -> tuple[int, int, int]:
    """``#rrggbb``, ``rrggbb``, ``#rgb`` or a name (white, black, grey/gray, magenta) -> RGB."""
    names = {"white": "ffffff", "black": "000000", "grey": "808080", "gray": "808080",
             "magenta": "ff00ff"}
    value = names.get(text.strip().lower(), text.strip().lstrip("#"))
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    if len(value) != 6 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"matte {text!r} is not a colour; give #rrggbb or white/black/grey")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def composite_on_matte(rgb: np.ndarray, alpha: np.ndarray,
                       matte: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Colour over a solid ``matte`` through ``alpha`` (for formats without alpha, e.g. JPEG).

    ``matte`` is 8-bit RGB; for ``uint16`` pixels it is widened (x257). Same dtype out.
    """
    top = float(np.iinfo(rgb.dtype).max)
    scale = 257.0 if rgb.dtype == np.uint16 else 1.0
    a = alpha.astype(np.float32)[:, :, None] / top
    bg = np.asarray(matte, dtype=np.float32) * scale
    out = rgb.astype(np.float32) * a + bg[None, None, :] * (1.0 - a)
    return np.clip(np.rint(out), 0, top).astype(rgb.dtype)
