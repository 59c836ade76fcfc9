"""Per-folder presets: ``.aat.toml`` files that say what is made of the images in a folder.

A preset in a watched folder applies to that folder and every subfolder; a preset deeper in the
tree overrides the keys it sets. A folder makes upscale jobs, or, with ``kind = "animate"``,
animate jobs (each sprite becomes a spritesheet with its Aseprite ``.json``, Godot ``.tres``
and ``.webp`` preview beside it, named by :func:`service.core.naming.animation_results`)::

    kind = "animate"                 # default "upscale"
    repo = "game"
    [animate]                        # AnimateParams; deeper presets override single keys
    motion = "walk"                  # idle | walk | run | attack | jump | hit | death | custom
    frames = 8
    facing = "right"
    fps = 10

Upscale keys::

    scale = 2                        # or width / height
    prompt = "mossy stone"
    negative_prompt = "blurry"
    strength = 0.3
    seam_fix = "band"                # none | band | offset
    tileable = true
    loras = ["stone_v2:0.8"]         # or [{name = "stone_v2", weight = 0.8}]
    asset_type = "sprite"            # auto | sprite | texture | ui | illustration | normal | mask | pixel_art
    sheet = "cell=32x32,spacing=1"   # or "8x4", or a [sheet] table (grid, cell, margin, spacing)
    matte = "#ffffff"                # background for transparency in JPEG outputs
    # ...any other UpscaleParams field (steps, seed, output_format, ...)
    repo = "game"                    # target repo, a name from AAT_REPOS
    target_dir = "textures"          # where the watched tree is mirrored inside the repo
    naming = "suffix"                # suffix | replace | mirror
    mirror_dir = "upscaled"          # for naming = "mirror"

A malformed preset raises :class:`ParamsError` naming the file; the files it governs are
recorded as failed with that reason until the preset (or the file) changes.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from service.core.animate import AnimateParams
from service.core.errors import AatError, ParamsError
from service.core.naming import animation_results, animation_tag, size_tag
from service.core.params import UpscaleParams
from watcher.scan import PRESET_NAME

TARGET_KEYS = ("repo", "target_dir", "naming", "mirror_dir")
NAMINGS = ("suffix", "replace", "mirror")
KINDS = ("upscale", "animate")


@dataclass(frozen=True, slots=True)
class Preset:
    """The effective settings for one file: job parameters and where its result goes.
    ``animate`` set: the folder makes animate jobs with those parameters (``params``, the
    upscale keys a parent folder may set, are then not used)."""

    params: UpscaleParams
    repo: str | None = None
    target_dir: str = ""
    naming: str = "suffix"
    mirror_dir: str | None = None
    animate: AnimateParams | None = None

    def fingerprint(self) -> str:
        """Stable hash of everything that changes the result or its place."""
        made = (self.params.canonical_json() if self.animate is None
                else "animate:" + self.animate.model_dump_json())
        blob = json.dumps([made, self.repo, self.target_dir, self.naming, self.mirror_dir],
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def result_tag(self, src_size: tuple[int, int]) -> str:
        """What a result's name adds to its source's in ``suffix`` naming (``_x2``,
        ``_walk``)."""
        if self.animate is not None:
            return animation_tag(self.animate)
        return size_tag(self.params, src_size)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{path} is not valid TOML ({exc}); fix the preset") from exc
    except OSError as exc:
        raise ParamsError(f"cannot read preset {path}: {exc}") from exc


def _loras(value: Any, where: Path) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ParamsError(f"{where}: loras must be a list like [\"name:0.8\"]")
    out: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, dict):
            out.append(item)
        elif isinstance(item, str):
            name, _, weight = item.partition(":")
            try:
                out.append({"name": name.strip(), "weight": float(weight) if weight else 1.0})
            except ValueError as exc:
                raise ParamsError(f"{where}: LoRA weight in {item!r} is not a number") from exc
        else:
            raise ParamsError(f"{where}: each LoRA is \"name:weight\" or {{name, weight}}")
    return out


def _chain(root: Path, folder: Path) -> list[Path]:
    """Folders from ``root`` down to ``folder`` (inclusive)."""
    rel = folder.relative_to(root)
    chain = [root]
    for part in rel.parts:
        chain.append(chain[-1] / part)
    return chain


def merged_raw(root: Path, folder: Path) -> dict[str, Any]:
    """All preset keys that apply in ``folder``; deeper presets win."""
    merged: dict[str, Any] = {}
    for step in _chain(root, folder):
        preset = step / PRESET_NAME
        if preset.is_file():
            data = _read(preset)
            if "loras" in data:
                data["loras"] = _loras(data["loras"], preset)
            if "scale" in data:  # a deeper size choice replaces the inherited one
                merged.pop("width", None)
                merged.pop("height", None)
            if "width" in data or "height" in data:
                merged.pop("scale", None)
            if isinstance(data.get("animate"), dict):  # key by key, like the top level
                data["animate"] = {**merged.get("animate", {}), **data["animate"]}
            merged.update(data)
    return merged


def resolve(root: Path, folder: Path) -> Preset:
    """The preset for files in ``folder`` (below watched ``root``)."""
    raw = merged_raw(root, folder)
    target = {k: raw.pop(k) for k in TARGET_KEYS if k in raw}
    kind, animate_raw = raw.pop("kind", "upscale"), raw.pop("animate", {})
    if kind not in KINDS:
        raise ParamsError(f"preset for {folder}: kind must be one of {', '.join(KINDS)}")
    if not isinstance(animate_raw, dict):
        raise ParamsError(f"preset for {folder}: animate must be a table ([animate])")
    try:
        params = UpscaleParams(**raw)
    except (ValidationError, ValueError) as exc:
        raise ParamsError(f"preset for {folder} is invalid: {_first_error(exc)}") from exc
    animate = _animate(folder, animate_raw) if kind == "animate" else None
    naming = str(target.get("naming", "suffix"))
    if naming not in NAMINGS:
        raise ParamsError(f"preset for {folder}: naming must be one of {', '.join(NAMINGS)}")
    mirror_dir = target.get("mirror_dir")
    if naming == "mirror" and not mirror_dir:
        raise ParamsError(f"preset for {folder}: naming = \"mirror\" needs mirror_dir")
    target_dir = str(target.get("target_dir", ""))
    for value in (target_dir, mirror_dir or ""):
        pure = PurePosixPath(value)
        if pure.is_absolute() or ".." in pure.parts:
            raise ParamsError(f"preset for {folder}: {value!r} must be a relative path")
    repo = target.get("repo")
    preset = Preset(params=params, repo=str(repo) if repo else None, target_dir=target_dir,
                    naming=naming, mirror_dir=str(mirror_dir) if mirror_dir else None,
                    animate=animate)
    if animate is not None:  # the service's naming rule for the set (refuses replace)
        try:
            animation_results("sprite.png", naming, animate, mirror_dir=preset.mirror_dir)
        except AatError as exc:
            raise ParamsError(f"preset for {folder}: {exc.message}") from exc
    return preset


def _animate(folder: Path, raw: dict[str, Any]) -> AnimateParams:
    try:
        return AnimateParams(**raw)
    except ValidationError as exc:
        raise ParamsError(f"preset for {folder} is invalid: animate.{_first_error(exc)}"
                          ) from exc
    except ParamsError as exc:  # an unknown motion
        raise ParamsError(f"preset for {folder}: {exc.message}", code=exc.code) from exc


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))
    return str(exc)


class PresetCache:
    """Resolves presets per folder, re-reading when any ``.aat.toml`` on the chain changes
    (by mtime and size)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Path, Path], tuple[tuple[tuple[int, int], ...], Preset | ParamsError]] = {}

    def get(self, root: Path, folder: Path) -> Preset:
        stamp = tuple(_stamp(step / PRESET_NAME) for step in _chain(root, folder))
        key = (root, folder)
        hit = self._cache.get(key)
        if hit is None or hit[0] != stamp:
            try:
                value: Preset | ParamsError = resolve(root, folder)
            except ParamsError as exc:
                value = exc
            hit = (stamp, value)
            self._cache[key] = hit
        if isinstance(hit[1], ParamsError):
            raise hit[1]
        return hit[1]


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
