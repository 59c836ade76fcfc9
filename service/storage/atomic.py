"""Atomic file writes: a reader (or a game engine) sees the old file or the new one, never half.

The bytes go to a hidden temp file in the same folder (``.<name>.<random>.aat-tmp``, a name the
engines' importers ignore), are flushed and fsynced, then ``os.replace`` swaps it in and the
folder is fsynced so the rename survives a crash. On any failure the temp file is removed and
the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMP_SUFFIX = ".aat-tmp"


def temp_path_for(target: Path) -> Path:
    """A fresh hidden temp name next to ``target``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def atomic_write(target: Path | str, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``target`` atomically; returns the target path."""
    target = Path(target)
    tmp = temp_path_for(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    return target


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
