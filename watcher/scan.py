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

from service.core import formats
from service.core.errors import upload_too_large

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = formats.INPUT_SUFFIXES  # exactly what the service takes (GIF too, no TIFF)
TEMP_SUFFIXES = (".part", ".tmp", ".temp", ".crdownload", ".partial", ".download", "~")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
PRESET_NAME = ".aat.toml"


@dataclass(frozen=True, slots=True)
class FileStat:
    """What a scan knows about one file: size in bytes and mtime in nanoseconds, and whether
    the name is a symbolic link (whose own size and mtime these are; the target is never
    read)."""

    size: int
    mtime_ns: int
    link: bool = False


class LinkRefused(OSError):
    """A watched name is a symbolic link: the watcher never follows it (code ``path_escape``)."""

    code = "path_escape"


class TooLarge(OSError):
    """A watched file is larger than the service takes (``AAT_MAX_UPLOAD_BYTES``, code
    ``payload_too_large``): it is refused without being read whole."""

    code = "payload_too_large"


def link_message(path: Path) -> str:
    """The one line a user reads for a refused link (status, log, ledger)."""
    return (f"{path.name} is a symbolic link; the watcher never follows links out of the watch "
            "folder: copy the file in instead")


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing a symbolic link even if one replaced the file since the
    scan (``O_NOFOLLOW``: no window between the check and the read), and a file of more than
    ``max_bytes`` (:class:`TooLarge`; at most ``max_bytes + 1`` bytes are ever read, even if
    the file grows while it is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if path.is_symlink():
            raise LinkRefused(link_message(path)) from exc
        raise
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = b"" if size > max_bytes else fh.read(max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:  # the second: it grew while it was read
        raise TooLarge(f"{path.name} is {max(size, len(data))} bytes: "
                       f"{upload_too_large(max_bytes)}")
    return data


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
        # A link to a file is returned (as a link) so the daemon can refuse it out loud; a
        # link to a folder is never walked.
        link = entry.is_symlink()
        if link and entry.is_dir():
            return
        if not (link or entry.is_file()) or not is_candidate_name(entry.name):
            return
        path = Path(entry.path)
        if is_excluded(path, excluded):
            return
        st = entry.stat(follow_symlinks=False)
    except OSError:  # vanished between listing and stat
        return
    found[path] = FileStat(st.st_size, st.st_mtime_ns, link)


def stat_file(path: Path) -> FileStat | None:
    """The current signature of one file (of the link itself for a symbolic link), or None
    when it is gone or neither a regular file nor a link."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return FileStat(st.st_size, st.st_mtime_ns, True)
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileStat(st.st_size, st.st_mtime_ns)
