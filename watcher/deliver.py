"""Where a watched file's result goes, and the atomic write the watcher does itself.

Naming (relative to the repo root; ``rel`` is the source's path below the watched folder,
prefixed by the preset's ``target_dir``)::

    suffix   props/crate.png  -> props/crate_x2.png   (``_x<scale>`` or ``_<W>x<H>``)
    replace  props/crate.png  -> props/crate.png
    mirror   props/crate.png  -> <mirror_dir>/props/crate.png

The extension is the output format's (``.png``, ``.webp``, ``.jpg``, ``.tga``). Paths are confined
to the repo root. :func:`write_atomic` is the recipe of reference §4: temp file with a name the
engines ignore (``.<name>.<random>.tmp``) in the target folder, fsync, ``os.replace``, fsync of
the folder; identical bytes are not rewritten; ``.import``/``.meta`` sidecars are never touched.
It lives here rather than in ``service.storage`` because the watcher imports ``service.core``
only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path, PurePosixPath

from service.core.errors import DeliveryError, PathError
from service.core.params import UpscaleParams

log = logging.getLogger(__name__)

_EXT = {"png": ".png", "webp": ".webp", "jpeg": ".jpg", "tga": ".tga"}
_AUTO = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg", ".tga": "tga"}
SIDECARS = (".import", ".meta")


def size_tag(params: UpscaleParams, src_size: tuple[int, int]) -> str:
    """The ``_x2`` / ``_1024x512`` part of a suffix-named result (as the service names it)."""
    if params.scale is not None:
        return f"_x{params.scale:g}"
    out_w, out_h = params.target_size(*src_size)
    return f"_{out_w}x{out_h}"


def output_format(source_suffix: str, params: UpscaleParams) -> str:
    """The result's format: the requested one, else the source's (BMP and others become PNG)."""
    if params.output_format != "auto":
        return params.output_format
    return _AUTO.get(source_suffix.lower(), "png")


def relative_target(rel: PurePosixPath, params: UpscaleParams, naming: str,
                    target_dir: str = "", mirror_dir: str | None = None,
                    out_format: str | None = None,
                    src_size: tuple[int, int] = (1, 1)) -> PurePosixPath:
    """The result's path inside the repo for a source at ``rel`` below its watched folder."""
    source = PurePosixPath(target_dir) / rel if target_dir else rel
    fmt = (out_format or output_format(source.suffix, params)).lower()
    suffix = _EXT.get(fmt, source.suffix)
    if naming == "suffix":
        return source.with_name(f"{source.stem}{size_tag(params, src_size)}{suffix}")
    if naming == "replace":
        return source.with_suffix(suffix)
    if naming == "mirror":
        if not mirror_dir:
            raise PathError("naming 'mirror' needs mirror_dir in the preset", code="path_forbidden")
        return PurePosixPath(mirror_dir) / source.with_suffix(suffix)
    raise PathError(f"unknown naming {naming!r}; use suffix, replace or mirror",
                    code="path_forbidden")


def confined(repo_root: Path, rel: PurePosixPath) -> Path:
    """``repo_root / rel``, refusing anything that escapes the root or names a sidecar."""
    if rel.is_absolute() or ".." in rel.parts:
        raise PathError(f"{rel} escapes the repo; use a relative path", code="path_escape")
    if rel.suffix.lower() in SIDECARS:
        raise PathError(f"{rel} is an engine sidecar and is never written",
                        code="path_forbidden")
    root = repo_root.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise PathError(f"{rel} escapes the repo through a link", code="path_escape")
    return target


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Streamed sha256 of a file."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_atomic(target: Path, data: bytes, attempts: int = 5) -> bool:
    """Write ``data`` to ``target`` atomically; False when identical bytes were already there.

    Raises DeliveryError when the folder cannot be written or the target stays locked
    (Windows: another program holds it open) after a few short retries.
    """
    try:
        if target.is_file() and sha256_file(target) == sha256_bytes(data):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeliveryError(f"cannot write into {target.parent}: {exc}") from exc
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, target, attempts)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DeliveryError(f"could not write {target}: {exc}; check permissions") from exc
    _fsync_dir(target.parent)
    return True


def _replace(tmp: Path, target: Path, attempts: int) -> None:
    for attempt in range(attempts):
        try:
            os.replace(tmp, target)
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
