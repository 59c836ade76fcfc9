"""Unity texture ``.meta`` files: keep the sprite the same size in the game after an upscale.

A sprite whose pixels grow ``k`` times while ``spritePixelsToUnits`` stays the same is ``k``
times bigger in the world. :func:`scale_meta` multiplies the pixel quantities by ``k``:
``spritePixelsToUnits``, ``spriteBorder`` (9-slice), every ``spriteSheet.sprites[]`` ``rect``
and ``border``, and the points of ``outline``/``physicsShape``; a ``maxTextureSize`` (top level
and in every ``platformSettings`` entry) smaller than the new size is raised to the next power
of two, or the texture would be cut back silently on import. Normalised pivots, ``guid``,
``internalID``, ``spriteID`` and every other byte stay exactly as they were.

Unity's own YAML writer is not full YAML and a YAML round trip corrupts these files (digit-only
GUIDs become integers, inline maps become blocks, empty values become ``null``), so this edits
the known keys line by line and never re-serialises. :func:`new_meta` gives the ``.meta`` for a
new file beside the source: the same import settings under a new GUID.

Pure: text in, text out (``uuid4`` for new GUIDs).
"""

from __future__ import annotations

import re
import uuid

_KEY = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*?)(?P<eol>\r?\n?)$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_INLINE = re.compile(r"(\b[xyzw]\s*:\s*)(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_RECT_KEYS = ("x", "y", "width", "height")
_POINT_LISTS = ("outline", "physicsShape", "vertices")
_MAX_SIDE = 16384


def _num(text: str, factor: float) -> str:
    value = float(text) * factor
    return str(int(value)) if value == int(value) else f"{value:g}"


def _scale_value(rest: str, factor: float) -> str:
    match = _NUMBER.search(rest)
    if match is None:
        return rest
    return rest[:match.start()] + _num(match.group(0), factor) + rest[match.end():]


def _scale_inline(rest: str, factor: float) -> str:
    return _INLINE.sub(lambda m: m.group(1) + _num(m.group(2), factor), rest)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _ends(line: str, key_indent: int) -> bool:
    """Whether ``line`` leaves the block under a key at ``key_indent`` (Unity writes sequence
    items at their parent key's indent, so ``- ...`` there still belongs to the block)."""
    if not line.strip():
        return False
    indent = _indent_of(line)
    return indent < key_indent or (indent == key_indent and not line.lstrip().startswith("- "))


def scale_meta(text: str, factor: float, *, max_side: int = 0,
               keep_game_size: bool = True) -> tuple[str, list[str]]:
    """``text`` with pixel quantities times ``factor``; ``(text, notes)``. ``max_side`` is the
    new texture's longest side (raises a smaller ``maxTextureSize``). Sprite rects, borders and
    outlines are texture pixels and always scale; ``spritePixelsToUnits`` scales only with
    ``keep_game_size`` (else the sprite grows ``factor`` times in the world)."""
    lines = text.splitlines(keepends=True)
    notes: list[str] = []
    block: tuple[str, int] | None = None  # ("rect" | "points", indent of the key)
    for i, line in enumerate(lines):
        if block is not None and _ends(line, block[1]):
            block = None
        m = _KEY.match(line)
        if block is not None and block[0] == "points":
            lines[i] = _scale_inline(line, factor)
            continue
        if m is None:
            continue
        key, rest = m.group("key"), m.group("rest")
        head = line[:m.start("rest")]
        if block is not None and block[0] == "rect" and key in _RECT_KEYS or key == "spritePixelsToUnits" and keep_game_size:
            lines[i] = head + _scale_value(rest, factor) + m.group("eol")
        elif key in ("spriteBorder", "border"):
            lines[i] = head + _scale_inline(rest, factor) + m.group("eol")
        elif key == "rect" and not rest.strip():
            block = ("rect", _indent_of(line))
        elif key in _POINT_LISTS and not rest.strip().startswith("[]"):
            block = ("points", _indent_of(line))
            if rest.strip():
                lines[i] = head + _scale_inline(rest, factor) + m.group("eol")
        elif key == "maxTextureSize" and max_side:
            current = _NUMBER.search(rest)
            if current is not None and int(float(current.group(0))) < max_side:
                raised = min(_MAX_SIDE, 1 << (max_side - 1).bit_length())
                lines[i] = head + rest.replace(current.group(0), str(raised), 1) + m.group("eol")
                if not notes:
                    notes.append(f"maxTextureSize raised to {raised} so Unity keeps the full "
                                 f"{max_side} px")
    return "".join(lines), notes


def guid_of(text: str) -> str | None:
    """The ``guid:`` of a ``.meta`` file, as written."""
    m = re.search(r"^guid:\s*([0-9a-fA-F]+)\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


def new_meta(text: str, guid: str | None = None) -> str:
    """The same ``.meta`` under a new GUID (for a new file beside the source)."""
    fresh = guid or uuid.uuid4().hex
    return re.sub(r"^(guid:\s*)[0-9a-fA-F]+", lambda m: m.group(1) + fresh, text, count=1,
                  flags=re.MULTILINE)


def sprite_rects(text: str) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of every ``spriteSheet.sprites[].rect`` (Unity: ``y`` from the bottom)."""
    rects: list[tuple[int, int, int, int]] = []
    current: dict[str, float] = {}
    rect_indent: int | None = None
    for line in text.splitlines():
        m = _KEY.match(line)
        if rect_indent is not None and _ends(line, rect_indent):
            if len(current) == 4:
                rects.append(tuple(int(round(current[k])) for k in _RECT_KEYS))  # type: ignore[arg-type]
            current, rect_indent = {}, None
        if m is None:
            continue
        if m.group("key") == "rect" and not m.group("rest").strip():
            rect_indent = _indent_of(line)
        elif rect_indent is not None and m.group("key") in _RECT_KEYS:
            num = _NUMBER.search(m.group("rest"))
            if num:
                current[m.group("key")] = float(num.group(0))
    if rect_indent is not None and len(current) == 4:
        rects.append(tuple(int(round(current[k])) for k in _RECT_KEYS))  # type: ignore[arg-type]
    return rects
