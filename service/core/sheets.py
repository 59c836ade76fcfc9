"""Spritesheets and atlases: where the cells are, and their metadata scaled for the result.

A sheet is processed cell by cell (each cell is its own little image, so no tile, filter or
blend ever reads across a cell border and nothing bleeds between frames); the pixels outside
every cell (gutters, padding) are carried over by nearest-neighbour, so transparent stays
transparent. Cells come from:

* a grid: ``grid = "COLSxROWS"`` or ``cell = "WxH"`` (pixels), with ``margin`` (around the sheet)
  and ``spacing`` (between cells), as most engines' grid slicers take them;
* metadata game tools write: Aseprite and TexturePacker JSON (hash or array ``frames``), Godot
  ``SpriteFrames``/``AtlasTexture`` resources (``region = Rect2(...)``) and Unity texture
  ``.meta`` sprite rects (``spriteMode: 2``; Unity counts ``y`` from the bottom).

:func:`scale_metadata` writes the same metadata back for a sheet ``k`` times larger: every pixel
rectangle, size and offset times ``k``; flags, durations, tags, normalised pivots and ids kept.
Unity ``.meta`` files are handled by :mod:`service.core.unity_meta`.

Rectangles are ``(x, y, w, h)`` in pixels from the top-left, half-open. Pure: text in, text out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.errors import ParamsError

Rect = tuple[int, int, int, int]
SheetFormat = Literal["aseprite", "texturepacker", "godot", "unity"]
MAX_CELLS = 4096
_WXH = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"


class SheetParams(BaseModel):
    """How a spritesheet is cut into cells (one of ``grid``, ``cell`` or ``cells``)."""

    model_config = ConfigDict(extra="forbid")

    grid: str | None = Field(default=None, pattern=_WXH, description=(
        "Cells as COLSxROWS, e.g. 8x4; every cell the same size."), examples=["8x4"])
    cell: str | None = Field(default=None, pattern=_WXH, description=(
        "Cell size in pixels as WxH, e.g. 32x32; as many cells as fit."), examples=["32x32"])
    margin: int = Field(default=0, ge=0, le=4096,
                        description="Pixels around the whole sheet, outside every cell.")
    spacing: int = Field(default=0, ge=0, le=4096,
                         description="Pixels between neighbouring cells (gutters).")
    cells: list[tuple[int, int, int, int]] | None = Field(
        default=None, max_length=MAX_CELLS, description=(
            "Explicit cell rectangles [x, y, w, h] in pixels from the top-left (filled from "
            "Aseprite/TexturePacker JSON, Godot .tres or Unity .meta when a sheet file is given)."))

    @model_validator(mode="after")
    def _one_way(self) -> SheetParams:
        given = [n for n in ("grid", "cell", "cells") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a sheet needs exactly one of grid (COLSxROWS), cell (WxH) or cells")
        return self


def parse_sheet_spec(text: str) -> dict[str, Any]:
    """``"8x4"`` (a grid), ``"grid=8x4,margin=1,spacing=2"`` / ``"cell=32x32"``, or the fields
    as a JSON object (``'{"cells": [[0, 0, 16, 16], ...]}'``) -> fields."""
    if text.strip().startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("sheet JSON must be an object")
        return value
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "grid", part
        key = key.strip().lower()
        if key not in ("grid", "cell", "margin", "spacing"):
            raise ValueError(f"unknown sheet setting {key!r}; use grid=COLSxROWS or cell=WxH, "
                             "margin=N, spacing=N")
        out[key] = value.strip()
    return out


@dataclass(frozen=True)
class SheetLayout:
    """The cells of one sheet, in the sheet's pixels."""

    width: int
    height: int
    cells: tuple[Rect, ...]

    def scaled(self, factor: int) -> SheetLayout:
        return SheetLayout(self.width * factor, self.height * factor,
                           tuple((x * factor, y * factor, w * factor, h * factor)
                                 for x, y, w, h in self.cells))


def _pair(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def layout_for(sheet: SheetParams, width: int, height: int) -> SheetLayout:
    """The cells ``sheet`` describes on a ``width`` x ``height`` image; ParamsError if they do
    not fit or overlap."""
    m, s = sheet.margin, sheet.spacing
    if sheet.cells is not None:
        cells = tuple(tuple(int(v) for v in c) for c in sheet.cells)
    else:
        if sheet.grid is not None:
            cols, rows = _pair(sheet.grid)
            free_w, free_h = width - 2 * m - (cols - 1) * s, height - 2 * m - (rows - 1) * s
            if free_w <= 0 or free_h <= 0 or free_w % cols or free_h % rows:
                raise ParamsError(f"grid {sheet.grid} with margin {m} and spacing {s} does not "
                                  f"divide a {width}x{height} sheet into equal cells",
                                  code="sheet_invalid")
            cw, ch = free_w // cols, free_h // rows
        else:
            assert sheet.cell is not None
            cw, ch = _pair(sheet.cell)
            cols, rows = (width - 2 * m + s) // (cw + s), (height - 2 * m + s) // (ch + s)
            if cols < 1 or rows < 1:
                raise ParamsError(f"cells of {sheet.cell} do not fit a {width}x{height} sheet",
                                  code="sheet_invalid")
        if cols * rows > MAX_CELLS:
            raise ParamsError(f"{cols * rows} cells is more than {MAX_CELLS}", code="sheet_invalid")
        cells = tuple((m + c * (cw + s), m + r * (ch + s), cw, ch)
                      for r in range(rows) for c in range(cols))
    layout = SheetLayout(width, height, cells)  # type: ignore[arg-type]
    check_layout(layout)
    return layout


def check_layout(layout: SheetLayout) -> None:
    """Refuse cells outside the sheet, empty cells and cells that overlap (duplicates merge)."""
    seen: set[Rect] = set()
    unique: list[Rect] = []
    for x, y, w, h in layout.cells:
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > layout.width or y + h > layout.height:
            raise ParamsError(f"sheet cell [{x}, {y}, {w}, {h}] lies outside the "
                              f"{layout.width}x{layout.height} image", code="sheet_invalid")
        if (x, y, w, h) not in seen:
            seen.add((x, y, w, h))
            unique.append((x, y, w, h))
    ordered = sorted(unique)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b[0] >= a[0] + a[2]:
                break
            if b[1] < a[1] + a[3] and a[1] < b[1] + b[3]:
                raise ParamsError(f"sheet cells {list(a)} and {list(b)} overlap; cells must be "
                                  "disjoint", code="sheet_invalid")


def unique_cells(layout: SheetLayout) -> tuple[Rect, ...]:
    """The distinct rectangles, in first-seen order (atlases reuse a region for many frames)."""
    return tuple(dict.fromkeys(layout.cells))


# ---- reading metadata -----------------------------------------------------------------------


def detect_format(name: str, text: str) -> SheetFormat | None:
    """Which metadata ``text`` (from a file called ``name``) is, or ``None``."""
    lower = name.lower()
    if lower.endswith(".meta") and "TextureImporter" in text:
        return "unity"
    if lower.endswith((".tres", ".tscn")) and "Rect2(" in text:
        return "godot"
    if lower.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if isinstance(data, dict) and "frames" in data:
            app = str((data.get("meta") or {}).get("app", "")).lower()
            return "aseprite" if "aseprite" in app else "texturepacker"
    return None


def read_cells(name: str, text: str, height: int) -> tuple[SheetFormat, list[Rect]]:
    """Cell rectangles (top-left origin) from a metadata file; ParamsError when unreadable.

    ``height`` is the sheet's height (Unity rects count ``y`` from the bottom).
    """
    fmt = detect_format(name, text)
    if fmt in ("aseprite", "texturepacker"):
        return fmt, _json_cells(json.loads(text))
    if fmt == "godot":
        return fmt, [_ints(m.group(2)) for m in _RECT2.finditer(text) if m.group(1) == "region"]
    if fmt == "unity":
        from service.core.unity_meta import sprite_rects  # noqa: PLC0415 - sibling, no cycle

        return fmt, [(x, height - y - h, w, h) for x, y, w, h in sprite_rects(text)]
    raise ParamsError(f"{name} is not spritesheet metadata this service reads (Aseprite or "
                      "TexturePacker JSON, Godot .tres, Unity .meta)", code="sheet_invalid")


def _frames(data: dict[str, Any]) -> list[dict[str, Any]]:
    frames = data.get("frames")
    if isinstance(frames, dict):
        return [f for f in frames.values() if isinstance(f, dict)]
    if isinstance(frames, list):
        return [f for f in frames if isinstance(f, dict)]
    raise ParamsError("sheet JSON has no frames", code="sheet_invalid")


def _json_cells(data: dict[str, Any]) -> list[Rect]:
    cells: list[Rect] = []
    for frame in _frames(data):
        box = frame.get("frame") or {}
        try:
            x, y, w, h = (int(box[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParamsError("a sheet JSON frame has no frame {x, y, w, h}",
                              code="sheet_invalid") from exc
        if frame.get("rotated"):
            w, h = h, w  # stored turned by 90 degrees: the sheet area is h x w
        cells.append((x, y, w, h))
    return cells


_RECT2 = re.compile(r"\b(region|margin)\s*=\s*Rect2\(\s*([-0-9.eE,\s]+)\)")


def _ints(text: str) -> Rect:
    x, y, w, h = (int(round(float(v))) for v in text.split(","))
    return x, y, w, h


# ---- writing metadata back ------------------------------------------------------------------


def scale_metadata(fmt: SheetFormat, text: str, factor: int, *, image_name: str | None = None,
                   max_side: int = 0) -> tuple[str, list[str]]:
    """``text`` rewritten for a sheet ``factor`` times larger; returns ``(text, notes)``.

    ``image_name`` replaces the JSON's ``meta.image`` (the result's file name).
    """
    if fmt in ("aseprite", "texturepacker"):
        return _scale_json(text, factor, image_name), []
    if fmt == "godot":
        return _RECT2.sub(lambda m: f"{m.group(1)} = Rect2({_scaled_list(m.group(2), factor)})",
                          text), []
    from service.core.unity_meta import scale_meta  # noqa: PLC0415 - sibling, no cycle

    return scale_meta(text, factor, max_side=max_side)


def _scaled_list(text: str, factor: int) -> str:
    values = [float(v) for v in text.split(",")]
    return ", ".join(f"{v * factor:g}" for v in values)


def _times(box: Any, factor: int, keys: tuple[str, ...]) -> None:
    if isinstance(box, dict):
        for k in keys:
            if isinstance(box.get(k), (int, float)) and not isinstance(box.get(k), bool):
                box[k] = box[k] * factor


def _scale_json(text: str, factor: int, image_name: str | None) -> str:
    data = json.loads(text)
    for frame in _frames(data):
        _times(frame.get("frame"), factor, ("x", "y", "w", "h"))
        _times(frame.get("spriteSourceSize"), factor, ("x", "y", "w", "h"))
        _times(frame.get("sourceSize"), factor, ("w", "h"))
    meta = data.get("meta")
    if isinstance(meta, dict):
        _times(meta.get("size"), factor, ("w", "h"))
        if image_name is not None and "image" in meta:
            meta["image"] = image_name
        for sl in meta.get("slices") or []:
            for key in (sl.get("keys") or []) if isinstance(sl, dict) else []:
                if isinstance(key, dict):
                    _times(key.get("bounds"), factor, ("x", "y", "w", "h"))
                    _times(key.get("center"), factor, ("x", "y", "w", "h"))
                    _times(key.get("pivot"), factor, ("x", "y"))
    indent = 1 if text.lstrip().startswith("{ \"frames\"") else 2
    out = json.dumps(data, indent=indent, ensure_ascii=False)
    return out + ("\n" if text.endswith("\n") else "")


# ---- Godot resources that point at one image ------------------------------------------------

_EXT = re.compile(r'^\[ext_resource\b[^\]]*\bpath="(?P<path>[^"]+)"[^\]]*\bid="(?P<id>[^"]+)"',
                  re.MULTILINE)
_EXT_ID_FIRST = re.compile(
    r'^\[ext_resource\b[^\]]*\bid="(?P<id>[^"]+)"[^\]]*\bpath="(?P<path>[^"]+)"', re.MULTILINE)
_ATLAS = re.compile(r'^\s*atlas\s*=\s*ExtResource\(\s*"(?P<id>[^"]+)"\s*\)', re.MULTILINE)


def godot_ids_for(text: str, res_path: str) -> set[str]:
    """The ``ext_resource`` ids under which a Godot resource loads ``res_path``."""
    return {m.group("id") for rx in (_EXT, _EXT_ID_FIRST) for m in rx.finditer(text)
            if m.group("path") == res_path}


def _godot_sections(text: str, ids: set[str]) -> list[tuple[str, bool]]:
    """``text`` cut at section headers; each part flagged when its ``atlas`` is one of ``ids``."""
    parts = re.split(r"(?m)^(?=\[)", text)
    out = []
    for part in parts:
        atlas = _ATLAS.search(part)
        out.append((part, atlas is not None and atlas.group("id") in ids))
    return out


def godot_cells(text: str, res_path: str) -> list[Rect]:
    """``region`` rectangles of the AtlasTextures in ``text`` that cut ``res_path``."""
    ids = godot_ids_for(text, res_path)
    return [_ints(m.group(2)) for part, ours in _godot_sections(text, ids) if ours
            for m in _RECT2.finditer(part) if m.group(1) == "region"]


def scale_godot_regions(text: str, res_path: str, factor: int) -> tuple[str, int]:
    """``text`` with the ``region``/``margin`` of every AtlasTexture cutting ``res_path`` times
    ``factor`` (regions of other atlases untouched); returns ``(text, regions scaled)``."""
    ids = godot_ids_for(text, res_path)
    count = 0
    out = []
    for part, ours in _godot_sections(text, ids):
        if ours:
            part, n = _RECT2.subn(
                lambda m: f"{m.group(1)} = Rect2({_scaled_list(m.group(2), factor)})", part)
            count += n
        out.append(part)
    return "".join(out), count
