"""Atomic file writes: a reader (or a game engine) sees the old file or the new one, never half.

The one writer of files into a repo or a store, used by the service's delivery and artifact
store, the CLI and the watcher. The bytes go to a hidden temp file in the same folder
(``.<name>.<random>.aat-tmp``: a dot-file, which Godot's and Unity's importers and the
watcher's scan ignore), are flushed and fsynced, then ``os.replace`` swaps it in and the folder
is fsynced so the rename survives a crash. A target held open (Windows importers) is retried a
few times with backoff. On any failure the temp file is removed and the target is untouched.
File effects in ``service.core`` because the watcher may import only the core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
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
