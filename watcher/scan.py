"""Directory scanning: the watcher's source of truth about which files exist.

A scan walks a folder tree with ``os.scandir`` and returns the stat signature of every file that
could be a job input. Names that editors, browsers and copiers use for partial or temporary
files, dot-files, dot-folders and unknown extensions are never returned, and neither is anything
under an excluded path (the watcher's own outputs). Pure of settings; only reads the disk.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tga", ".bmp", ".tif", ".tiff"})
TEMP_SUFFIXES = (".part", ".tmp", ".temp", ".crdownload", ".partial", ".download", "~")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
PRESET_NAME = ".aat.toml"


@dataclass(frozen=True, slots=True)
class FileStat:
    """What a scan knows about one file: size in bytes and mtime in nanoseconds."""

    size: int
    mtime_ns: int


def is_candidate_name(name: str) -> bool:
    """True when a file name may be an input (not temporary, hidden or of unknown type)."""
    lower = name.lower()
    if not name or name.startswith(".") or name.startswith("~$") or lower in IGNORED_NAMES:
        return False
    if lower.endswith(TEMP_SUFFIXES):
        return False
    return os.path.splitext(lower)[1] in IMAGE_EXTENSIONS


def is_excluded(path: Path, excluded: tuple[Path, ...]) -> bool:
    """True when ``path`` is one of ``excluded`` or lies below one of them."""
    return any(path == ex or ex in path.parents for ex in excluded)


def scan_tree(root: Path, excluded: tuple[Path, ...] = ()) -> dict[Path, FileStat]:
    """Every candidate file below ``root`` (recursively) with its stat signature.

    Folders that vanish or cannot be read during the walk are skipped with a log line: the
    next scan sees the tree as it is then.
    """
    found: dict[Path, FileStat] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        if is_excluded(folder, excluded):
            continue
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc)
            continue
        for entry in entries:
            _visit(entry, stack, found, excluded)
    return found


def _visit(
    entry: os.DirEntry[str], stack: list[Path], found: dict[Path, FileStat],
    excluded: tuple[Path, ...],
) -> None:
    try:
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                stack.append(Path(entry.path))
            return
        if not entry.is_file() or not is_candidate_name(entry.name):
            return
        path = Path(entry.path)
        if is_excluded(path, excluded):
            return
        st = entry.stat()
    except OSError:  # vanished between listing and stat
        return
    found[path] = FileStat(st.st_size, st.st_mtime_ns)


def stat_file(path: Path) -> FileStat | None:
    """The current signature of one file, or None when it is gone or not a regular file."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileStat(st.st_size, st.st_mtime_ns)
