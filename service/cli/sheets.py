"""The ``--sheet`` option of `aat upscale` and `aat submit`: a grid, or a metadata file whose
cells are sent with the job and whose scaled copy is written beside the result.

``--sheet 8x4`` / ``--sheet cell=32x32,margin=1,spacing=2`` is passed on as it is;
``--sheet hero.json`` (Aseprite/TexturePacker), ``hero.tres`` (Godot SpriteFrames) or
``hero.png.meta`` (Unity) is read here: its cells go into the job's ``sheet.cells`` and, once
the result is written, the metadata scaled by the factor is written beside it (``out.json``,
``out.tres``, ``out.png.meta`` with a new GUID). Heavy imports stay inside the functions so
``aat --help`` stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from service.core.errors import ParamsError

_SUFFIXES = (".json", ".tres", ".tscn", ".meta")


@dataclass(frozen=True)
class SheetFile:
    """A metadata file given with ``--sheet``."""

    path: Path
    format: str
    text: str


def sheet_option(value: str | None, image: Path) -> tuple[str | None, SheetFile | None]:
    """``(value for params.sheet, metadata file or None)`` for a ``--sheet`` value."""
    if value is None:
        return None, None
    path = Path(value)
    if path.suffix.lower() not in _SUFFIXES:
        return value, None
    from PIL import Image  # noqa: PLC0415

    from service.core.sheets import detect_format, read_cells  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
        with Image.open(image) as im:
            height = im.size[1]
    except OSError as exc:
        raise ParamsError(f"cannot read --sheet {value}: {exc.strerror or exc}",
                          code="sheet_invalid") from exc
    fmt, cells = read_cells(path.name, text, height)
    if not cells:
        raise ParamsError(f"{value} names no cells", code="sheet_invalid")
    assert detect_format(path.name, text) == fmt
    return json.dumps({"cells": [list(c) for c in cells]}), SheetFile(path, fmt, text)


def write_beside(sheet: SheetFile, output: Path, factor: int, max_side: int = 0) -> Path:
    """Write ``sheet`` scaled by ``factor`` beside ``output``; returns the path written."""
    from service.core.atomic import atomic_write  # noqa: PLC0415
    from service.core.sheets import scale_metadata  # noqa: PLC0415
    from service.core.unity_meta import new_meta  # noqa: PLC0415

    if sheet.format == "unity":
        dest = output.with_name(output.name + ".meta")
    else:
        dest = output.with_suffix(sheet.path.suffix)
    if dest.resolve() == sheet.path.resolve():
        raise ParamsError(f"the scaled sheet metadata would overwrite {sheet.path}; choose "
                          "another output name", code="sheet_invalid")
    text, _ = scale_metadata(sheet.format, sheet.text, factor,  # type: ignore[arg-type]
                             image_name=output.name, max_side=max_side)
    if sheet.format == "unity":
        text = new_meta(text)
    atomic_write(dest, text.encode("utf-8"))
    return dest
