"""PNG outputs written band by band: :class:`PngStream` compresses rows as soon as they are
final, so a job encodes its result while tiles are still on the GPU.

Filtering is Pillow's C encoder (adaptive per row, as in :func:`~service.core.imaging.encode_image`),
compression one continuous zlib stream (``Z_FILTERED``, as Pillow); the file decodes to the same
pixels and carries the same EXIF metadata as ``encode_image``'s PNG. Pure: arrays in, bytes out.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from service.core.imaging import PNG_COMPRESS_LEVEL, exif_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF)


def _idat(png: bytes) -> bytes:
    """The concatenated IDAT payload of a PNG file."""
    parts, pos = [], 8
    while pos < len(png):
        size, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            parts.append(png[pos + 8:pos + 8 + size])
        pos += 12 + size
    return b"".join(parts)


def _filtered(rows: np.ndarray, above: np.ndarray | None) -> bytes:
    """PNG scanlines of ``rows`` (``(n, W, C)`` uint8), each with the filter byte Pillow's C
    encoder chose (adaptive), continuing from the row ``above`` (the last one of the previous
    band): Pillow writes them uncompressed (level 0), the first (``above``) line is dropped."""
    stacked = rows if above is None else np.concatenate([above[None], rows])
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stacked)).save(buf, "PNG", compress_level=0)
    raw = zlib.decompress(_idat(buf.getvalue()))
    return raw if above is None else raw[len(raw) // stacked.shape[0]:]


class PngStream:
    """A PNG written band by band as rows become final (8-bit RGB or RGBA), so compressing
    overlaps whatever produces the rows. ``add(rows)`` takes ``(n, W, C)`` uint8 rows in order;
    ``finish()`` returns the file once all ``height`` rows are in. Decodes like
    :func:`encode_image`'s PNG (same EXIF metadata); the bytes depend only on pixels, metadata,
    level and band boundaries."""

    def __init__(self, width: int, height: int, channels: int, *,
                 metadata: dict[str, str] | None = None,
                 compress_level: int = PNG_COMPRESS_LEVEL) -> None:
        if channels not in (3, 4):
            raise ValueError("PngStream writes RGB or RGBA")
        self.width, self.height, self.channels, self.done = width, height, channels, 0
        # Z_FILTERED, as Pillow uses for PNG: at levels >= 4 it suits filtered scanlines
        self._zip = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, zlib.Z_FILTERED)
        self._above: np.ndarray | None = None
        self._idat: list[bytes] = []
        head = struct.pack(">IIBBBBB", width, height, 8, 6 if channels == 4 else 2, 0, 0, 0)
        text = "; ".join(f"{k}={v}" for k, v in (metadata or {}).items())
        self._head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", head) + (
            _chunk(b"eXIf", exif_bytes(text).removeprefix(b"Exif\x00\x00")) if text else b"")

    def add(self, rows: np.ndarray) -> None:
        if rows.dtype != np.uint8 or rows.shape[1:] != (self.width, self.channels):
            raise ValueError(f"rows must be (n, {self.width}, {self.channels}) uint8")
        if self.done + rows.shape[0] > self.height:
            raise ValueError("more rows than the image has")
        if not rows.shape[0]:
            return
        data = self._zip.compress(_filtered(rows, self._above))
        if data:
            self._idat.append(data)
        self._above = rows[-1].copy()
        self.done += rows.shape[0]

    def finish(self) -> bytes:
        if self.done != self.height:
            raise ValueError(f"only {self.done} of {self.height} rows were added")
        self._idat.append(self._zip.flush())
        body = b"".join(self._idat)
        step = 1 << 20
        idat = b"".join(_chunk(b"IDAT", body[i:i + step]) for i in range(0, len(body), step))
        return self._head + idat + _chunk(b"IEND", b"")
