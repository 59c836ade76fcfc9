"""Stability gate: a file is taken only once it has stopped changing and decodes as an image.

A writer may still be appending (a slow copy, a network drive, an editor saving in chunks).
:class:`StabilityTracker` holds the last seen ``(size, mtime_ns)`` of every candidate and calls
a file stable when that signature has stood still for ``window_s`` seconds over at least two
checks and the file is not empty. :func:`check_image` then proves the bytes decode, so a
truncated file left by a copier that died is recorded as failed rather than submitted; the
header is held against the service's input limits first, so a decompression bomb dropped into
an inbox is refused without being decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from service.core.errors import ImageError
from service.core.imaging import ImageLimits, probe_image
from watcher.scan import FileStat


@dataclass(slots=True)
class _Seen:
    sig: FileStat
    since: float
    checks: int


class StabilityTracker:
    """Remembers candidates' signatures and reports which have stood still long enough."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: dict[Path, _Seen] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, path: object) -> bool:
        return path in self._seen

    def paths(self) -> list[Path]:
        return list(self._seen)

    def observe(self, path: Path, sig: FileStat | None, now: float) -> bool:
        """Record one check of ``path``; True when it is stable now (and stop tracking it).

        ``sig`` None means the file is gone: it is forgotten.
        """
        if sig is None:
            self._seen.pop(path, None)
            return False
        seen = self._seen.get(path)
        if seen is None or seen.sig != sig:
            self._seen[path] = _Seen(sig, now, 1)
            return False
        seen.checks += 1
        if sig.size > 0 and seen.checks >= 2 and now - seen.since >= self.window_s:
            del self._seen[path]
            return True
        return False

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """What the watcher learns from decoding a file: the size the service will see (after
    EXIF orientation, as ``service.core.imaging`` decodes it) and Pillow's format name."""

    size: tuple[int, int]
    format: str


def check_image(data: bytes, name: str, limits: ImageLimits | None = None
                ) -> tuple[int, int]:
    """Return ``(width, height)`` when ``data`` is a complete image, else raise ImageError."""
    return inspect_image(data, name, limits).size


def inspect_image(data: bytes, name: str, limits: ImageLimits | None = None) -> ImageCheck:
    """Size and format of ``data`` when it is a complete image, else raise ImageError.
    The header is first held against ``limits`` (the service's input limits; default
    :class:`ImageLimits`), so a decompression bomb is refused (``image_bomb``) and an image
    the service would refuse as too large (``image_too_large``) is never decoded here."""
    if not data:
        raise ImageError(f"{name} is empty; save the image again", code="image_empty")
    try:
        probe_image(data, limits or ImageLimits())
    except ImageError as exc:
        if exc.code in ("image_bomb", "image_too_large"):
            raise ImageError(f"{name}: {exc.message}", code=exc.code) from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, fmt = img.size, str(img.format)
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # verify() misses truncated pixel data in some formats
            turned = img.getexif().get(_ORIENTATION) in (5, 6, 7, 8)
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name} is not an image Pillow can read; re-export it as PNG", code="image_corrupt"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{name} could not be decoded ({exc}); re-export it", code="image_corrupt"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to decode safely", code="image_bomb") from exc
    return ImageCheck((size[1], size[0]) if turned else size, fmt)


_ORIENTATION = 0x0112  # EXIF: 5-8 mean the image is stored turned by 90 degrees
