"""Atomic file writes: a reader (or a game engine) sees the old file or the new one, never half.

The one writer of files into a repo or a store, used by the service's delivery and artifact
store, the CLI and the watcher. The bytes go to a hidden temp file in the same folder
(``.<name>.<random>.aat-tmp``: a dot-file, which Godot's and Unity's importers and the
watcher's scan ignore), are flushed and fsynced, then ``os.replace`` swaps it in and the folder
is fsynced so the rename survives a crash. A target held open (Windows importers) is retried a
few times with backoff. On any failure the temp file is removed and the target is untouched.
:func:`atomic_write_set` writes several files that belong together (a spritesheet and its
metadata): every temp file is written and fsynced before the first swap, so a full disk or an
unwritable folder leaves all targets as they were.
File effects in ``service.core`` because the watcher may import only the core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".aat-tmp"
RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # a target held open (Windows importers)


def temp_path_for(target: Path) -> Path:
    """A fresh hidden temp name next to ``target``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of our temp files (never an input, never a result)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def atomic_write(target: Path | str, data: bytes, *, mode: int = 0o644,
                 retry_delays: tuple[float, ...] | None = None) -> Path:
    """Write ``data`` to ``target`` atomically; returns the target path.

    A swap refused with ``PermissionError`` (the target held open or locked) is retried after
    each of ``retry_delays`` (default :data:`RETRY_DELAYS_S`); any other ``OSError`` is raised
    at once."""
    target = Path(target)
    tmp = temp_path_for(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, target, RETRY_DELAYS_S if retry_delays is None else retry_delays)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_set(files: Sequence[tuple[Path, bytes]], *, mode: int = 0o644,
                     retry_delays: tuple[float, ...] | None = None) -> None:
    """Write each ``(target, data)`` atomically, staged together: all temp files first (any
    failure removes them and raises with no target touched), then the swaps in order."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files:
            tmp = temp_path_for(Path(target))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            staged.append((tmp, Path(target)))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, target in staged:
            _replace(tmp, target, RETRY_DELAYS_S if retry_delays is None else retry_delays)
    except BaseException:
        for tmp, _target in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    for folder in dict.fromkeys(target.parent for _tmp, target in staged):
        _fsync_dir(folder)


def _replace(tmp: Path, target: Path, retry_delays: tuple[float, ...]) -> None:
    for delay in (*retry_delays, None):
        try:
            os.replace(tmp, target)
            return
        except PermissionError:
            if delay is None:
                raise
            log.info("%s is held open; retrying in %.2f s", target, delay)
            time.sleep(delay)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename; some filesystems refuse to fsync a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
