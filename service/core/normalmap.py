"""Normal maps and other data textures: deterministic upscales that never diffuse.

A normal map stores unit vectors, ``c = (v + 1) / 2`` per channel, in linear space. Resampling
the colours as if they were a photo shortens the vectors (an average of unit vectors is shorter
than one) and any colour model or diffusion step invents directions that break lighting. So:
decode to vectors, resample each component, renormalise to unit length, encode again in the
input's dtype. Green is never flipped: whatever convention the input uses (OpenGL Y+ or DirectX
Y-) the output uses too. Two-channel maps (blue all 0, as BC5 exports) get their Z rebuilt for
the resample and dropped again.

Masks, ORM/ARM packs and height maps are data too: every channel is resampled on its own with no
colour fix and no matte, and 16-bit input stays 16-bit.

Arrays: ``(H, W, 3)`` ``uint8`` or ``uint16``; alpha ``(H, W)`` of the same dtype or ``None``.
Pure: numpy and Pillow only.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_RADIUS = 3  # Lanczos-3


def resample_plane(plane: np.ndarray, width: int, height: int, *, wrap: bool = False,
                   resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """One float32 channel resampled to ``(height, width)``; ``wrap`` reads across the edges."""
    src_h, src_w = plane.shape
    data = plane.astype(np.float32)
    pad_x = pad_y = 0
    if wrap:
        pad_x = min(src_w, math.ceil(_RADIUS * max(1.0, src_w / width)) + 2)
        pad_y = min(src_h, math.ceil(_RADIUS * max(1.0, src_h / height)) + 2)
        data = np.pad(data, ((pad_y, pad_y), (pad_x, pad_x)), mode="wrap")
    box = (pad_x, pad_y, pad_x + src_w, pad_y + src_h)
    out = Image.fromarray(data, mode="F").resize((width, height), resample, box=box)
    return np.asarray(out, dtype=np.float32)


def _top(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max)


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` integer colours -> float32 vectors in ``[-1, 1]`` (not renormalised)."""
    return rgb.astype(np.float32) * (2.0 / _top(rgb.dtype)) - 1.0


def encode_normals(vectors: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float vectors -> integer colours of ``dtype`` (rounded, clipped)."""
    top = _top(dtype)
    return np.clip(np.rint((vectors + 1.0) * (top / 2.0)), 0, top).astype(dtype)


def renormalise(vectors: np.ndarray) -> np.ndarray:
    """Scale every vector to unit length (zero vectors become straight up, ``(0, 0, 1)``)."""
    length = np.sqrt((vectors ** 2).sum(axis=2, keepdims=True))
    out = vectors / np.maximum(length, 1e-8)
    flat = length[:, :, 0] < 1e-8
    out[flat] = (0.0, 0.0, 1.0)
    return out


def is_two_channel(rgb: np.ndarray) -> bool:
    """True for RG-only normal maps (blue all 0, as BC5/two-channel exports store them)."""
    return bool((rgb[:, :, 2] == 0).all())


def upscale_normals(rgb: np.ndarray, width: int, height: int, *,
                    tileable: bool = False) -> np.ndarray:
    """A normal map resampled as unit vectors, in the input's dtype and green convention."""
    v = decode_normals(rgb)
    two = is_two_channel(rgb)
    if two:  # rebuild z from x and y for the resample
        v[:, :, 2] = np.sqrt(np.clip(1.0 - v[:, :, 0] ** 2 - v[:, :, 1] ** 2, 0.0, 1.0))
    big = np.dstack([resample_plane(v[:, :, c], width, height, wrap=tileable) for c in range(3)])
    unit = renormalise(big)
    out = encode_normals(unit, rgb.dtype)
    if two:
        out[:, :, 2] = 0
    return out


def upscale_channels(pixels: np.ndarray, width: int, height: int, *,
                     tileable: bool = False) -> np.ndarray:
    """Every channel resampled on its own (Lanczos), clipped, in the input's dtype."""
    top = _top(pixels.dtype)
    planes = pixels[:, :, None] if pixels.ndim == 2 else pixels
    out = [np.clip(np.rint(resample_plane(planes[:, :, c], width, height, wrap=tileable)),
                   0, top).astype(pixels.dtype) for c in range(planes.shape[2])]
    return out[0] if pixels.ndim == 2 else np.dstack(out)


def normals_from_height(height: np.ndarray, *, strength: float = 1.0,
                        green: str = "opengl") -> np.ndarray:
    """Unit normals ``(H, W, 3)`` float32 of a height field (in pixel units, rows downward).

    ``green='opengl'`` points +Y up the image, ``'directx'`` down it. Central differences,
    wrapping at the edges.
    """
    h = height.astype(np.float64) * strength
    d_x = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) / 2.0
    d_row = (np.roll(h, -1, axis=0) - np.roll(h, 1, axis=0)) / 2.0
    ny = d_row if green == "opengl" else -d_row
    v = np.dstack([-d_x, ny, np.ones_like(h)]).astype(np.float32)
    return renormalise(v)
