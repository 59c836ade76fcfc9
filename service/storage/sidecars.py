"""Engine-aware write-back: the files beside a delivered image that the engines read with it.

After a result lands in a game repo (``service.storage.game_repo.deliver``), the metadata that
describes the *source* image is carried over to the result, scaled by the upscale factor:

* **Unity** ``<image>.meta``: with ``replace`` naming the source's own ``.meta`` is edited in
  place (GUID kept, so every scene and prefab reference survives); sprite rects, borders and
  outlines times the factor, and with ``keep_game_size`` (the default) ``spritePixelsToUnits``
  too, so the sprite keeps its size in the game. A result under a new name gets its own
  ``.meta``: the source's import settings, scaled the same way, under a new GUID (or the GUID
  of the ``.meta`` already there from an earlier delivery). See :mod:`service.core.unity_meta`.
* **Godot** ``<image>.import`` is never written: in ``replace`` mode its ``uid`` and import
  settings stay, and Godot re-imports the changed image by its checksum; a new file gets its
  ``.import`` from Godot itself.
* **Godot** ``SpriteFrames``/``AtlasTexture`` resources (``.tres`` beside the image, inside the
  project that ``project.godot`` marks) that cut the image: with ``replace`` naming their
  ``region``/``margin`` rectangles for this image are scaled (regions of other atlases and every
  uid untouched); a new file leaves them alone (they still point at the source).
* **Spritesheet JSON** (Aseprite / TexturePacker) ``<stem>.json`` beside the source: written
  beside the result (``<result stem>.json``) with every rectangle scaled and ``meta.image``
  naming the result; in ``replace`` mode the source's JSON is updated in place.
* **Git LFS**: when the repo's ``.gitattributes`` route the result to LFS
  (``git check-attr filter`` says ``lfs``), the job says so, and warns when the LFS filter is
  not installed here (a commit would then store the whole file in git).

Sidecars are only written when the image itself was (identical bytes: nothing is touched), each
atomically, after the image. Every path stays inside the repo root.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from service.core.atomic import atomic_write
from service.core.naming import is_inside
from service.core.sheets import (
    SheetParams,
    detect_format,
    godot_cells,
    read_cells,
    scale_godot_regions,
    scale_metadata,
)
from service.core.unity_meta import guid_of, new_meta, scale_meta

log = logging.getLogger(__name__)


@dataclass
class Writeback:
    """What the write-back did: sidecar files written (repo-relative) and notes for the job."""

    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lfs: bool = False


def plan_sidecars(root: Path, source_rel: str, dest_rel: str, *, factor: float,
                  max_side: int, keep_game_size: bool = True) -> tuple[list[tuple[str, str]],
                                                                        list[str]]:
    """``([(repo-relative path, new text)], notes)`` for the result at ``dest_rel``."""
    source, dest = root / source_rel, root / dest_rel
    same = source.resolve() == dest.resolve()
    out: list[tuple[str, str]] = []
    notes: list[str] = []
    meta = source.with_name(source.name + ".meta")
    if meta.is_file():
        text, extra = scale_meta(_read(meta), factor, max_side=max_side,
                                 keep_game_size=keep_game_size)
        notes += extra
        if same:
            notes.append(f"Unity {meta.name}: GUID kept, sprite rects and borders scaled x{factor:g}"
                         + (", pixels-per-unit too (same size in game)" if keep_game_size else ""))
        else:
            dest_meta = dest.with_name(dest.name + ".meta")
            old = _read(dest_meta) if dest_meta.is_file() else ""
            text = new_meta(text, guid_of(old) if old else None)
            notes.append(f"Unity {dest_meta.name}: the source's import settings scaled "
                         f"x{factor:g}, {'its GUID kept' if old else 'a new GUID'}")
        out.append((_rel(root, dest.with_name(dest.name + ".meta")), text))
    if source.with_name(source.name + ".import").is_file() and same:
        notes.append("Godot .import left as it was (uid kept); Godot re-imports the new pixels")
    out += _godot_resources(root, source, factor, same, notes)
    sheet = source.with_suffix(".json")
    if sheet.is_file():
        raw = _read(sheet)
        fmt = detect_format(sheet.name, raw)
        if fmt in ("aseprite", "texturepacker") and float(factor).is_integer():
            text, _ = scale_metadata(fmt, raw, int(factor), image_name=dest.name)
            out.append((_rel(root, dest.with_suffix(".json")), text))
            notes.append(f"{fmt} sheet {dest.with_suffix('.json').name}: frames scaled "
                         f"x{factor:g}")
        elif fmt is not None:
            notes.append(f"{sheet.name} was not rewritten: sheet metadata needs an integer scale")
    return out, notes


def sheet_beside(root: Path, source_rel: str) -> SheetParams | None:
    """The cells of a spritesheet whose metadata sits beside ``source_rel`` in the repo: an
    Aseprite/TexturePacker ``<stem>.json`` or a Unity ``<image>.meta`` with two or more sprite
    rects; ``None`` when there is none (or it cannot be read)."""
    from PIL import Image  # noqa: PLC0415 - only the header is read

    source = root / source_rel.replace("\\", "/")
    try:
        if not is_inside(root, source) or not source.is_file():
            return None
        with Image.open(source) as im:
            height = im.size[1]
        for meta in (source.with_suffix(".json"), source.with_name(source.name + ".meta")):
            if not meta.is_file() or detect_format(meta.name, text := _read(meta)) is None:
                continue
            _, cells = read_cells(meta.name, text, height)
            if len(cells) >= 2:
                return SheetParams(cells=cells)
        for _, text, res in _resources_cutting(root.resolve(), source.resolve()):
            cells = list(dict.fromkeys(godot_cells(text, res)))
            if len(cells) >= 2:
                return SheetParams(cells=cells)
    except (OSError, ValueError):
        return None
    return None


_MAX_RESOURCE_BYTES = 4 << 20


def godot_res_path(root: Path, source: Path) -> str | None:
    """``res://...`` of ``source`` in the Godot project (``project.godot``) that holds it."""
    folder = source.parent
    while folder.is_relative_to(root):
        if (folder / "project.godot").is_file():
            return "res://" + source.relative_to(folder).as_posix()
        if folder == root:
            break
        folder = folder.parent
    return None


def _resources_cutting(root: Path, source: Path) -> list[tuple[Path, str, str]]:
    """``(file, text, res path)`` of the ``.tres`` beside ``source`` whose AtlasTextures cut it."""
    res = godot_res_path(root, source)
    if res is None:
        return []
    found = []
    for tres in sorted(source.parent.glob("*.tres"))[:200]:
        if not tres.is_file() or tres.stat().st_size > _MAX_RESOURCE_BYTES:
            continue
        text = _read(tres)
        if godot_cells(text, res):
            found.append((tres, text, res))
    return found


def _godot_resources(root: Path, source: Path, factor: float, same: bool,
                     notes: list[str]) -> list[tuple[str, str]]:
    """SpriteFrames/AtlasTexture resources beside the source: their regions scaled when the
    image is replaced (uids kept), a note when the result is a new file."""
    out = []
    for tres, text, res in _resources_cutting(root, source):
        if not same:
            notes.append(f"Godot {tres.name} cuts {source.name}, not the new file; it was left "
                         "as it was")
        elif not float(factor).is_integer():
            notes.append(f"Godot {tres.name} was not rewritten: regions need an integer scale")
        else:
            scaled, n = scale_godot_regions(text, res, int(factor))
            out.append((_rel(root, tres), scaled))
            notes.append(f"Godot {tres.name}: {n} atlas regions scaled x{factor:g} (uids kept)")
    return out


def write_sidecars(root: Path, source_rel: str, dest_rel: str, *, factor: float,
                   max_side: int, keep_game_size: bool = True) -> Writeback:
    """Write the planned sidecars atomically; report what was written and LFS routing."""
    planned, notes = plan_sidecars(root, source_rel, dest_rel, factor=factor,
                                   max_side=max_side, keep_game_size=keep_game_size)
    done = Writeback(notes=notes)
    for rel, text in planned:
        path = root / rel
        if not is_inside(root, path):
            continue  # a symlinked sidecar leading out of the repo is never followed
        current = _read(path) if path.is_file() else None
        if current == text:
            continue
        atomic_write(path, text.encode("utf-8"))
        done.written.append(rel)
    lfs, note = lfs_status(root, dest_rel)
    done.lfs = lfs
    if note:
        done.notes.append(note)
    return done


def lfs_status(root: Path, rel: str) -> tuple[bool, str | None]:
    """Whether ``.gitattributes`` route ``rel`` to Git LFS, and a note for the job."""
    attr = _git(root, "check-attr", "filter", "--", rel)
    if attr is None or not attr.stdout.strip().endswith(": lfs"):
        return False, None
    clean = _git(root, "config", "--get", "filter.lfs.clean")
    if clean is None or not clean.stdout.strip():
        return True, (f"{rel} is routed to Git LFS by .gitattributes, but the LFS filter is not "
                      "installed here (run `git lfs install`); a commit would store the whole "
                      "file in git")
    return True, f"{rel} is routed to Git LFS by .gitattributes; git add stores an LFS pointer"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc if proc.returncode == 0 else None


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as fh:  # keep \r\n exactly
        return fh.read()


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
