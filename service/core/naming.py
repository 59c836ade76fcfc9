"""Where a job's result goes inside a game repository: the one naming and confinement rule.

The service delivers with it (``service.storage.game_repo``) and the watcher predicts the same
path with it (``watcher.jobs``: it must recognise the service's results, or it would take them
as new inputs and feed on its own output). Relative to the repo root, for a source at
``props/crate.png``::

    suffix   props/crate_x2.png                 (``_x<scale>``, or ``_<W>x<H>`` for a fixed size)
    replace  props/crate.png
    mirror   <mirror_dir>/props/crate.png

The suffix is the output format's (``service.core.formats``). An ``animate`` job's files
(:data:`ANIMATION_SUFFIXES`: the sheet, its Aseprite ``.json``, Godot ``.tres`` and ``.webp``
preview) take :func:`animation_tag` as their tag (``props/hero_walk.png``, ...); ``replace``
naming is refused for them (the sheet would overwrite its own sprite). Refused, with a
:class:`~service.core.errors.PathError`: control characters and NUL (``path_forbidden``),
absolute paths, ``..``, drive letters (``path_escape``), a result that would be an engine
sidecar (``.import``, ``.meta``) or anything under ``.git`` in any letter case
(``path_forbidden``), and, in :func:`confine`, a path that leaves the repo through a link.
A file named by an absolute path (``POST /v1/jobs`` with ``{"path"}``) must lie inside an
intake root or a repo: :func:`confine_file`. Pure but for :func:`confine` and
:func:`confine_file`, which resolve links on the disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import get_args

from service.core import formats
from service.core.animate import AnimateParams
from service.core.errors import ParamsError, PathError
from service.core.params import NamingMode, UpscaleParams

NAMING_MODES: tuple[str, ...] = get_args(NamingMode)
SIDECARS = (".import", ".meta")
ANIMATION_SUFFIXES = (".png", ".json", ".tres", ".webp")  # an animation's files, sheet first


def relative(value: str, what: str = "target path") -> PurePosixPath:
    """``value`` as a relative posix path inside a repo (``\\`` read as ``/``), or PathError."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PathError(f"{what} {value!r} contains control characters; give a plain path",
                        code="path_forbidden")
    rel = PurePosixPath(value.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0].endswith(":"):
        raise PathError(f"{what} {value!r} must be a relative path inside the repo without '..'",
                        code="path_escape")
    return rel


def size_tag(params: UpscaleParams, src_size: tuple[int, int]) -> str:
    """``_x2`` for a scale, ``_<W>x<H>`` for an explicit size (``src_size`` as decoded,
    after EXIF orientation)."""
    if params.scale is not None:
        return f"_x{params.scale:g}"
    out_w, out_h = params.target_size(*src_size)
    return f"_{out_w}x{out_h}"


def result_path(source: str, naming: str, *, ext: str, tag: str,
                mirror_dir: str | None = None) -> PurePosixPath:
    """The result's path relative to the repo root for a source at ``source`` (repo-relative).

    ``ext`` is the output format's suffix (``.png``), ``tag`` the :func:`size_tag`."""
    rel = relative(source, "target path")
    if naming == "suffix":
        dest = rel.with_name(f"{rel.stem}{tag}{ext}")
    elif naming == "replace":
        dest = rel.with_suffix(ext)
    elif naming == "mirror":
        if not mirror_dir:
            raise ParamsError("naming 'mirror' needs mirror_dir (the output folder in the repo)")
        dest = relative(mirror_dir, "mirror_dir") / rel.with_suffix(ext)
    else:
        raise ParamsError(f"unknown naming {naming!r}; use {', '.join(NAMING_MODES)}")
    if dest.suffix.lower() in SIDECARS or ".git" in (p.lower() for p in dest.parts):
        raise PathError(f"refusing to write {dest}: engine sidecars and .git are never touched",
                        code="path_forbidden")
    return dest


def result_for(source: str, naming: str, params: UpscaleParams, *, input_format: str,
               src_size: tuple[int, int], mirror_dir: str | None = None) -> PurePosixPath:
    """:func:`result_path` for an input of Pillow format ``input_format`` and decoded size
    ``src_size``, with ``params`` deciding the output format and the size tag."""
    fmt = params.output_format
    name = formats.auto_output(input_format) if fmt == "auto" else fmt
    return result_path(source, naming, ext=formats.suffix_for(name),
                       tag=size_tag(params, src_size), mirror_dir=mirror_dir)


def animation_tag(params: AnimateParams) -> str:
    """What an animation's files add to the source's name: ``hero.png`` -> ``hero_walk.png``."""
    return f"_{params.animation_name()}"


def animation_results(source: str, naming: str, params: AnimateParams, *,
                      mirror_dir: str | None = None) -> list[PurePosixPath]:
    """Where an animate job's files go (:data:`ANIMATION_SUFFIXES` order, the sheet first) for
    a sprite at ``source`` (repo-relative); ``replace`` naming is refused."""
    if naming == "replace":
        raise ParamsError("naming 'replace' would write the spritesheet over its own sprite; "
                          "use suffix (beside the sprite) or mirror", code="invalid_params")
    return [result_path(source, naming, ext=ext, tag=animation_tag(params),
                        mirror_dir=mirror_dir) for ext in ANIMATION_SUFFIXES]


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` lies inside ``root``, both with their links followed."""
    return path.resolve().is_relative_to(root.resolve())


def confine(root: Path, rel: PurePosixPath, *, repo: str = "") -> Path:
    """``root / rel`` (root resolved), refused with ``path_escape`` when a link takes it
    outside ``root``. ``rel`` must come from :func:`relative` / :func:`result_path`."""
    root = root.resolve()
    dest = root / rel
    if not is_inside(root, dest):
        where = f"the repo {repo!r}" if repo else "the repo"
        raise PathError(f"{rel} leads outside {where} (through a symlink); choose a path "
                        "inside it", code="path_escape")
    return dest


def confine_file(raw: str | Path, roots: Iterable[Path]) -> Path:
    """The file ``raw`` names (absolute, ``~`` expanded), resolved with its links followed,
    if it lies inside one of ``roots`` (intake roots and repos). Refused with ``path_forbidden``
    (NUL, a relative path), ``path_escape`` (outside every root, also through a link or ``..``)
    or ``path_not_found`` (no such file, or it cannot be read)."""
    text = str(raw)
    if "\x00" in text:
        raise PathError("the path contains a NUL byte", code="path_forbidden")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise PathError(f"give an absolute path, not {text!r}", code="path_forbidden")
    try:
        resolved = path.resolve()
        if not any(is_inside(Path(r).expanduser(), resolved) for r in roots):
            raise PathError(f"{text} is outside every intake root and repo; put it under one "
                            "of AAT_INTAKE_ROOTS / AAT_REPOS or upload the file instead",
                            code="path_escape")
        if not resolved.is_file():
            raise PathError(f"no such file: {text}", code="path_not_found")
    except OSError as exc:  # a name too long for the disk, a folder we may not read, ...
        raise PathError(f"cannot read {text} ({exc.strerror or exc}); check the path",
                        code="path_not_found") from exc
    return resolved
