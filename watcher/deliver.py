"""Where a watched file's result goes, and the write the watcher does itself (``--download``).

Both come from the service's own rules, so the watcher can never disagree with the service
about a result's name: :mod:`service.core.naming` (suffix / replace / mirror, size tag,
confinement, refused sidecars and ``.git``) and :mod:`service.core.atomic` (temp name the
engines and the scan ignore, fsync, ``os.replace``). The source's path inside the repo is its
path below the watched folder, prefixed by the preset's ``target_dir``, exactly what the
watcher sends the service as the job's target path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from service.core import formats
from service.core.animate import AnimateParams
from service.core.atomic import atomic_write, atomic_write_set
from service.core.errors import DeliveryError
from service.core.naming import animation_results, result_path, size_tag
from service.core.params import UpscaleParams


def source_path(rel: PurePosixPath, target_dir: str = "") -> PurePosixPath:
    """The source's path inside the repo (the job's target path)."""
    return PurePosixPath(target_dir) / rel if target_dir else rel


def relative_target(rel: PurePosixPath, params: UpscaleParams, naming: str,
                    target_dir: str = "", mirror_dir: str | None = None,
                    out_format: str | None = None, src_size: tuple[int, int] = (1, 1), *,
                    input_format: str = "PNG") -> PurePosixPath:
    """The result's path inside the repo for a source at ``rel`` below its watched folder.

    ``out_format`` is the result's format when the service has said it; else it is predicted
    from ``params`` and the input's Pillow format, as the service decides it."""
    fmt = out_format or (formats.auto_output(input_format) if params.output_format == "auto"
                         else params.output_format)
    return result_path(source_path(rel, target_dir).as_posix(), naming,
                       ext=formats.suffix_for(fmt), tag=size_tag(params, src_size),
                       mirror_dir=mirror_dir)


def animation_targets(rel: PurePosixPath, animate: AnimateParams, naming: str,
                      target_dir: str = "", mirror_dir: str | None = None
                      ) -> list[PurePosixPath]:
    """The paths inside the repo of an animate job's files (sheet, .json, .tres, .webp) for a
    sprite at ``rel`` below its watched folder: the service's own rule."""
    return animation_results(source_path(rel, target_dir).as_posix(), naming, animate,
                             mirror_dir=mirror_dir)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Streamed sha256 of a file."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_atomic(target: Path, data: bytes) -> bool:
    """Write ``data`` to ``target`` atomically; False when identical bytes were already there.

    Raises DeliveryError when the folder cannot be written or the target stays locked
    (Windows: another program holds it open) after a few short retries.
    """
    try:
        if target.is_file() and sha256_file(target) == sha256_bytes(data):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    except OSError as exc:
        raise DeliveryError(f"could not write {target}: {exc.strerror or exc}; check "
                            "permissions and free space") from exc
    return True


def write_set(files: list[tuple[Path, bytes]]) -> None:
    """Write files that belong together (an animation's sheet and metadata) staged as one:
    every temp file before the first swap; identical files are left alone."""
    changed = [(t, d) for t, d in files if not (t.is_file() and sha256_file(t) == sha256_bytes(d))]
    try:
        for target, _data in changed:
            target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_set(changed)
    except OSError as exc:
        raise DeliveryError(f"could not write {changed[0][0] if changed else 'the set'}: "
                            f"{exc.strerror or exc}; check permissions and free space") from exc
