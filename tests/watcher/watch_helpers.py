"""Shared helpers for the watcher tests: tiny real PNG files and careful writes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(seed: int, size: int = 8) -> bytes:
    """A unique tiny RGB PNG (random pixels from ``seed``)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def drop(path: Path, data: bytes) -> Path:
    """Write a file the way a careful app does: temp name, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


