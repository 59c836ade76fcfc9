"""Frames of an animation: key colour to alpha, one size, one anchor, one sheet.

Steps for each generated frame (an RGB image on a flat key colour, any size):

1. :func:`key_to_alpha` — alpha from the colour distance to the key (a soft ramp between
   ``inner`` and ``outer``), the key's share un-mixed from the partly transparent edge pixels
   (so no green fringe survives) and, as in :mod:`service.core.alpha`, the colour of fully
   transparent pixels bled in from visible neighbours so engines' bilinear filtering cannot
   pull the key colour back in.
2. :func:`resize_rgba` — colour and alpha resized separately to the cell size (area average
   when shrinking, Lanczos when growing).
3. :func:`align` — shifted by whole pixels so its anchor sits where the source's does: the
   feet baseline (lowest mostly-opaque row) and the horizontal centre of mass, or the centre of
   mass in both axes (``centre``).

:func:`histogram_distance` measures how far a frame's palette drifted from the source (half
the L1 distance of alpha-weighted colour histograms: 0 = same palette, 1 = disjoint).
:func:`assemble` lays the cells out in a row or a grid; :func:`encode_preview` writes the
animated WebP/GIF. Arrays are ``(H, W, 3|4) uint8``; rectangles ``(x, y, w, h)``, half-open.
Pure: numpy and Pillow on arrays, no I/O.
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
from PIL import Image

from service.core.alpha import bleed_colour

Rect = tuple[int, int, int, int]
OPAQUE = 128  # alpha at or above which a pixel counts for the anchor


def on_key(rgba: np.ndarray, key: tuple[int, int, int]) -> np.ndarray:
    """The sprite composited over the flat key colour: ``(H, W, 3)``."""
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    out = rgba[:, :, :3].astype(np.float32) * a + np.asarray(key, np.float32) * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def key_to_alpha(rgb: np.ndarray, key: tuple[int, int, int], *, inner: float = 24.0,
                 outer: float = 96.0) -> np.ndarray:
    """``(H, W, 3)`` on a key colour -> ``(H, W, 4)``: transparent where the key was.

    A pixel within ``inner`` (largest channel difference) of the key is fully transparent,
    beyond ``outer`` fully opaque, linear between; the key is un-mixed from partial pixels.
    """
    colour = rgb.astype(np.float32)
    k = np.asarray(key, np.float32)
    dist = np.abs(colour - k).max(axis=2)
    a = np.clip((dist - inner) / (outer - inner), 0.0, 1.0)
    partial = (a > 0) & (a < 1)
    safe = np.where(partial, a, 1.0)[:, :, None]
    unmixed = (colour - (1.0 - safe) * k) / safe
    colour = np.where(partial[:, :, None], unmixed, colour)
    out_rgb = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    alpha = np.rint(a * 255).astype(np.uint8)
    return np.dstack([bleed_colour(out_rgb, alpha), alpha])


def resize_rgba(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgba`` at ``size`` (w, h): colour and alpha resized apart (colour must be bled)."""
    w, h = size
    if rgba.shape[1] == w and rgba.shape[0] == h:
        return rgba.copy()
    shrink = w <= rgba.shape[1] and h <= rgba.shape[0]
    method = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
    rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgba[:, :, :3])).resize((w, h), method))
    alpha = np.asarray(Image.fromarray(np.ascontiguousarray(rgba[:, :, 3])).resize((w, h), method))
    return np.dstack([rgb, alpha])


def anchor_of(rgba: np.ndarray, anchor: Literal["feet", "centre"] = "feet"
              ) -> tuple[float, float] | None:
    """``(x, y)`` of the anchor: feet = (centre-of-mass x, one below the lowest opaque row),
    centre = centre of mass; None when nothing is opaque."""
    solid = rgba[:, :, 3] >= OPAQUE
    if not solid.any():
        return None
    ys, xs = np.nonzero(solid)
    weight = rgba[:, :, 3][solid].astype(np.float64)
    cx = float((xs * weight).sum() / weight.sum())
    if anchor == "feet":
        return cx, float(ys.max() + 1)
    return cx, float((ys * weight).sum() / weight.sum())


def shift(rgba: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``rgba`` moved by whole pixels; what leaves the cell is cut, what enters is clear."""
    h, w = rgba.shape[:2]
    out = np.zeros_like(rgba)
    src_x, dst_x = (0, dx) if dx >= 0 else (-dx, 0)
    src_y, dst_y = (0, dy) if dy >= 0 else (-dy, 0)
    cw, ch = w - abs(dx), h - abs(dy)
    if cw > 0 and ch > 0:
        out[dst_y:dst_y + ch, dst_x:dst_x + cw] = rgba[src_y:src_y + ch, src_x:src_x + cw]
    return out


def align(rgba: np.ndarray, target: tuple[float, float],
          anchor: Literal["feet", "centre"] = "feet") -> np.ndarray:
    """``rgba`` shifted so its anchor lands on ``target`` (from :func:`anchor_of`)."""
    own = anchor_of(rgba, anchor)
    if own is None:
        return rgba.copy()
    return shift(rgba, int(round(target[0] - own[0])), int(round(target[1] - own[1])))


def place(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The sprite fitted into a ``size`` cell (shrunk to fit if larger), centred, feet on the
    bottom row: the pose every frame is aligned to."""
    w, h = size
    sh, sw = rgba.shape[:2]
    scale = min(1.0, w / sw, h / sh)
    if scale < 1.0:
        rgba = resize_rgba(np.dstack([bleed_colour(rgba[:, :, :3], rgba[:, :, 3]),
                                      rgba[:, :, 3]]), (max(1, round(sw * scale)),
                                                        max(1, round(sh * scale))))
    cell = np.zeros((h, w, 4), np.uint8)
    y0, x0 = (h - rgba.shape[0]) // 2, (w - rgba.shape[1]) // 2
    cell[y0:y0 + rgba.shape[0], x0:x0 + rgba.shape[1]] = rgba
    own = anchor_of(cell, "feet")
    return cell if own is None else shift(cell, 0, int(h - own[1]))


def histogram_distance(frame: np.ndarray, source: np.ndarray, bins: int = 4) -> float:
    """Half the L1 distance between alpha-weighted RGB histograms (``bins`` per channel)."""
    def hist(rgba: np.ndarray) -> np.ndarray:
        q = (rgba[:, :, :3].astype(np.int32) * bins) // 256
        idx = (q[:, :, 0] * bins + q[:, :, 1]) * bins + q[:, :, 2]
        h = np.bincount(idx.ravel(), weights=rgba[:, :, 3].ravel().astype(np.float64),
                        minlength=bins ** 3)
        total = h.sum()
        return h / total if total > 0 else h

    return float(0.5 * np.abs(hist(frame) - hist(source)).sum())


def grid_shape(count: int, layout: Literal["row", "grid"]) -> tuple[int, int]:
    """(columns, rows) of the sheet."""
    if layout == "row":
        return count, 1
    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


def cell_rects(count: int, size: tuple[int, int], layout: Literal["row", "grid"]) -> list[Rect]:
    cols, _ = grid_shape(count, layout)
    w, h = size
    return [((i % cols) * w, (i // cols) * h, w, h) for i in range(count)]


def assemble(frames: list[np.ndarray], layout: Literal["row", "grid"]
             ) -> tuple[np.ndarray, list[Rect]]:
    """The sheet ``(H, W, 4)`` and each frame's cell, frames in reading order."""
    h, w = frames[0].shape[:2]
    cols, rows = grid_shape(len(frames), layout)
    sheet = np.zeros((rows * h, cols * w, 4), np.uint8)
    rects = cell_rects(len(frames), (w, h), layout)
    for frame, (x, y, _, _) in zip(frames, rects, strict=True):
        sheet[y:y + h, x:x + w] = frame
    return sheet, rects


def cut(sheet: np.ndarray, rects: list[Rect]) -> list[np.ndarray]:
    """The cells of ``sheet`` (the inverse of :func:`assemble`)."""
    return [sheet[y:y + h, x:x + w].copy() for x, y, w, h in rects]


def encode_preview(frames: list[np.ndarray], fps: int, fmt: Literal["webp", "gif"] = "webp",
                   *, loop: bool = True) -> bytes:
    """An animated preview of ``frames`` at ``fps`` (lossless WebP, or GIF)."""
    images = [Image.fromarray(f, "RGBA") for f in frames]
    buf = io.BytesIO()
    duration = max(1, round(1000 / fps))
    extra = {"lossless": True} if fmt == "webp" else {"disposal": 2}
    images[0].save(buf, format=fmt.upper(), save_all=True, append_images=images[1:],
                   duration=duration, loop=0 if loop else 1, **extra)
    return buf.getvalue()
