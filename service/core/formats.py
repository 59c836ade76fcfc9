"""The one table of image formats: name <-> Pillow format <-> file suffixes <-> media type.

Every part that turns a suffix, a Pillow format name or a media type into another reads this
table: intake (which inputs we take and the suffix they are stored under), the result's file
suffix and media type, ``aat upscale -o`` (which suffixes it can write), the CLI's raw upload
and download, and the watcher (which files it takes, where the result goes). So the watcher
takes exactly the files the REST API takes, and a suffix means the same format everywhere.

Inputs: PNG, JPEG, WebP, TGA, DDS, BMP, GIF. Outputs: PNG, WebP, JPEG, TGA, DDS (``auto``
keeps the input's format when we can write it, else PNG). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    name: str  # our name, as in ``output_format``: "png", "jpeg", ...
    pillow: str  # Pillow's format name: "PNG", "JPEG", ...
    suffixes: tuple[str, ...]  # lower case; the first is the one we write
    media_type: str
    writable: bool  # we encode it (an output format); else input only

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("png", "PNG", (".png",), "image/png", True),
    ImageFormat("webp", "WEBP", (".webp",), "image/webp", True),
    ImageFormat("jpeg", "JPEG", (".jpg", ".jpeg"), "image/jpeg", True),
    ImageFormat("tga", "TGA", (".tga",), "image/x-tga", True),
    ImageFormat("dds", "DDS", (".dds",), "image/vnd-ms.dds", True),
    ImageFormat("bmp", "BMP", (".bmp",), "image/bmp", False),
    ImageFormat("gif", "GIF", (".gif",), "image/gif", False),
)

#: Pillow format names we read, and our names of the formats we write.
INPUT_FORMATS: tuple[str, ...] = tuple(f.pillow for f in FORMATS)
OUTPUT_FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS if f.writable)
#: Every file suffix of an input we take (the watcher takes exactly these files).
INPUT_SUFFIXES: frozenset[str] = frozenset(s for f in FORMATS for s in f.suffixes)
#: The suffixes ``aat upscale -o`` can write, as a user reads them.
OUTPUT_SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS if f.writable for s in f.suffixes)

#: The input formats as a user reads them: "PNG, WebP, JPEG, TGA, DDS, BMP or GIF".
INPUT_NAMES = ", ".join(f.pillow.replace("WEBP", "WebP") for f in FORMATS[:-1]) + \
    f" or {FORMATS[-1].pillow}"

_BY_NAME = {f.name: f for f in FORMATS}
_BY_PILLOW = {f.pillow: f for f in FORMATS}
_BY_SUFFIX = {s: f for f in FORMATS for s in f.suffixes}
_BY_MEDIA = {f.media_type: f for f in FORMATS}


def by_name(name: str) -> ImageFormat | None:
    return _BY_NAME.get(name.lower())


def by_pillow(pillow: str) -> ImageFormat | None:
    return _BY_PILLOW.get(pillow.upper())


def by_suffix(suffix: str) -> ImageFormat | None:
    """The format a file suffix names (``.JPG`` -> jpeg), None if it names none of ours."""
    return _BY_SUFFIX.get(suffix.lower())


def by_media_type(media_type: str) -> ImageFormat | None:
    return _BY_MEDIA.get(media_type.split(";")[0].strip().lower())


def auto_output(input_pillow: str) -> str:
    """The output format ``auto`` picks for an input: its own when we write it, else PNG."""
    fmt = by_pillow(input_pillow)
    return fmt.name if fmt is not None and fmt.writable else "png"


def suffix_for(name: str) -> str:
    """The file suffix we give a result in format ``name`` (``jpeg`` -> ``.jpg``)."""
    fmt = by_name(name)
    if fmt is None:
        raise KeyError(name)
    return fmt.suffix


def input_suffix(input_pillow: str) -> str:
    """The suffix an input of this Pillow format is stored under (``.img`` if unknown)."""
    fmt = by_pillow(input_pillow)
    return fmt.suffix if fmt is not None else ".img"


def media_type_for_suffix(suffix: str) -> str:
    fmt = by_suffix(suffix)
    return fmt.media_type if fmt is not None else "application/octet-stream"
