"""Lanczos (and nearest-neighbour) resampling: always available, exact output size.

Works on ``(H, W)`` or ``(H, W, C)`` arrays of ``uint8`` or ``uint16``. ``wrap=True`` treats the
image as a torus (the filter reads across the opposite edge), so tileable textures stay
tileable.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_LANCZOS_RADIUS = 3


def resize_lanczos(arr: np.ndarray, width: int, height: int, *, wrap: bool = False,
                   resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """Resample ``arr`` to exactly ``(height, width[, C])``, keeping its dtype."""
    src_h, src_w = arr.shape[:2]
    if (src_h, src_w) == (height, width):
        return arr.copy()
    pad_y = pad_x = 0
    if wrap:
        pad_x = min(src_w, math.ceil(_LANCZOS_RADIUS * max(1.0, src_w / width)) + 2)
        pad_y = min(src_h, math.ceil(_LANCZOS_RADIUS * max(1.0, src_h / height)) + 2)
        widths = ((pad_y, pad_y), (pad_x, pad_x)) + ((0, 0),) * (arr.ndim - 2)
        arr = np.pad(arr, widths, mode="wrap")
    box = (pad_x, pad_y, pad_x + src_w, pad_y + src_h)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (3, 4)):
        out = Image.fromarray(np.ascontiguousarray(arr)).resize((width, height), resample, box=box)
        return np.asarray(out).copy()
    if arr.ndim == 2:
        return _resize_float(arr, width, height, box, resample)
    planes = [_resize_float(arr[:, :, c], width, height, box, resample)
              for c in range(arr.shape[2])]
    return np.dstack(planes)


def _resize_float(plane: np.ndarray, width: int, height: int,
                  box: tuple[int, int, int, int], resample: Image.Resampling) -> np.ndarray:
    out = Image.fromarray(plane.astype(np.float32)).resize((width, height), resample, box=box)
    top = np.iinfo(plane.dtype).max if plane.dtype.kind in "ui" else None
    values = np.asarray(out)
    if top is None:
        return values.astype(plane.dtype)
    return np.clip(np.rint(values), 0, top).astype(plane.dtype)


class LanczosUpscaler:
    """Lanczos-3 resampling with Pillow; no model, always available."""

    name = "lanczos"
    model = "lanczos3"

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str:
        return ""

    def upscale(self, rgb: np.ndarray, width: int, height: int, *,
                tileable: bool = False) -> np.ndarray:
        return resize_lanczos(rgb, width, height, wrap=tileable)


class NearestUpscaler(LanczosUpscaler):
    """Nearest-neighbour: keeps hard pixel-art edges (integer scales look best)."""

    name = "nearest"
    model = "nearest"

    def upscale(self, rgb: np.ndarray, width: int, height: int, *,
                tileable: bool = False) -> np.ndarray:
        return resize_lanczos(rgb, width, height, wrap=False, resample=Image.Resampling.NEAREST)
