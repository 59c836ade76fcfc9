"""The small transparent test sprite the animate tests share: a 24x32 knight, an outlined body
(and, with ``face``, a face) on a clear background."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 24, 32  # the sprite's (and so each cell's) size


def knight_rgba(*, face: bool = False) -> np.ndarray:
    a = np.zeros((H, W, 4), np.uint8)
    a[4:28, 6:18] = (40, 40, 60, 255)  # outline
    a[5:27, 7:17] = (200, 80, 40, 255)  # body
    if face:
        a[8:12, 9:15] = (250, 220, 180, 255)
    return a


def knight_png(*, face: bool = False, path: Path | None = None) -> bytes:
    """The sprite as PNG bytes, also written to ``path`` when given."""
    buf = io.BytesIO()
    Image.fromarray(knight_rgba(face=face), "RGBA").save(buf, format="PNG")
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()
