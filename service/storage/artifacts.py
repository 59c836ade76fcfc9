"""The artifact store: content-addressed files, on local disk or in an S3-compatible bucket.

Layout (the same under a local root and under a bucket prefix):
``<root>/<kind>/<key[:2]>/<key><ext>``. Kinds: ``inputs`` and ``outputs`` (key = sha256 of the
bytes), ``refined`` tiles (key = sha256 of tile pixels + refine options + seed + prompt, see
``service.pipeline.refine.tile_key``; stored as ``.npy``), ``captions`` (key = sha256 of tile pixels
+ caption settings; ``.txt``) and ``pre`` (images pre-upscaled by a model upscaler, see
``service.pipeline.pre_cache``; ``.npy``). A key names its bytes forever, so a file once written is
never rewritten, and any host that finds a key finds the same bytes: that is what lets a job
resumed on another host skip the tiles it already paid for.

:class:`ArtifactStore` is the port; :class:`LocalArtifactStore` (here) and
``service.storage.s3_artifacts.S3ArtifactStore`` implement it; ``service.storage.stores
.open_artifacts`` picks one from the settings. Every local write goes to a temp name in the
same directory and is ``os.replace``d, so a reader (or a resumed job) never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from service.core.atomic import atomic_write, temp_path_for

log = logging.getLogger(__name__)

KINDS = ("inputs", "outputs", "refined", "captions", "pre")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_name(kind: str, key: str, ext: str = "") -> str:
    """``<kind>/<key[:2]>/<key><ext>``: where an artifact lives under any store's root."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    return f"{kind}/{key[:2]}/{key}{ext}"


@dataclass(frozen=True)
class Entry:
    """One stored artifact, as garbage collection sees it."""

    name: str  # relative_name(...)
    key: str
    mtime: float  # seconds since the epoch
    size: int


class ArtifactStore(Protocol):
    """Content-addressed artifacts (see module docstring). Thread-safe."""

    def put_bytes(self, kind: str, data: bytes, ext: str) -> str: ...
    def get_bytes(self, kind: str, key: str, ext: str) -> bytes: ...
    def find(self, kind: str, key: str) -> Path | None: ...
    def local_file(self, kind: str, key: str, ext: str) -> Path | None: ...
    def put_array(self, key: str, array: np.ndarray, kind: str = "refined") -> None: ...
    def get_array(self, key: str, kind: str = "refined") -> np.ndarray | None: ...
    def put_text(self, key: str, text: str) -> None: ...
    def get_text(self, key: str) -> str | None: ...
    def entries(self) -> Iterator[Entry]: ...
    def delete_unreferenced(self, keep: set[str], *, dry_run: bool = False
                            ) -> tuple[int, int]: ...
    def probe(self) -> str: ...


class LocalArtifactStore:
    """Content-addressed files under ``root`` (see module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, key: str, ext: str = "") -> Path:
        return self.root / relative_name(kind, key, ext)

    def write_once(self, dest: Path, data: bytes) -> None:
        """Write ``data`` to ``dest`` atomically unless it exists (same key, same bytes)."""
        if dest.exists():
            return  # content-addressed: the same key holds the same bytes
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, data)

    def temp_for(self, dest: Path) -> Path:
        """A hidden temp name next to ``dest`` (for writers that stream into the store)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        return temp_path_for(dest)

    # ---- whole files (inputs, outputs) -------------------------------------------------------
    def put_bytes(self, kind: str, data: bytes, ext: str) -> str:
        key = sha256_bytes(data)
        self.write_once(self.path(kind, key, ext), data)
        return key

    def get_bytes(self, kind: str, key: str, ext: str) -> bytes:
        return self.path(kind, key, ext).read_bytes()

    def find(self, kind: str, key: str) -> Path | None:
        """The stored file with this key, whatever its suffix (None if absent)."""
        folder = self.path(kind, key).parent
        found = sorted(folder.glob(f"{key}.*")) if folder.is_dir() else []
        return found[0] if found else None

    def local_file(self, kind: str, key: str, ext: str) -> Path | None:
        """A file on this host holding the artifact (None if it is not stored)."""
        path = self.path(kind, key, ext)
        return path if path.is_file() else None

    # ---- tile cache --------------------------------------------------------------------------
    def put_array(self, key: str, array: np.ndarray, kind: str = "refined") -> None:
        self.write_once(self.path(kind, key, ".npy"), npy_bytes(array))

    def get_array(self, key: str, kind: str = "refined") -> np.ndarray | None:
        return load_npy(self.path(kind, key, ".npy"))

    def put_text(self, key: str, text: str) -> None:
        self.write_once(self.path("captions", key, ".txt"), text.encode("utf-8"))

    def get_text(self, key: str) -> str | None:
        try:
            return self.path("captions", key, ".txt").read_text("utf-8")
        except FileNotFoundError:
            return None

    # ---- garbage collection and health -------------------------------------------------------
    def files(self) -> list[Path]:
        """Every stored artifact (a writer's temp file, named with a leading dot, is not one)."""
        return [p for kind in KINDS for p in (self.root / kind).rglob("*")
                if p.is_file() and not p.name.startswith(".")]

    def entries(self) -> Iterator[Entry]:
        for path in self.files():
            st = path.stat()
            yield Entry(path.relative_to(self.root).as_posix(), path.name.split(".", 1)[0],
                        st.st_mtime, st.st_size)

    def delete_unreferenced(self, keep: set[str], *, dry_run: bool = False) -> tuple[int, int]:
        """Delete every artifact whose key is not in ``keep``; returns (files, bytes)."""
        count = size = 0
        for entry in list(self.entries()):
            if entry.key in keep:
                continue
            count += 1
            size += entry.size
            if not dry_run:
                (self.root / entry.name).unlink(missing_ok=True)
        return count, size

    def probe(self) -> str:
        """Write, read back and remove a small file; returns what was checked."""
        probe = self.root / f".probe-{secrets.token_hex(4)}"
        token = secrets.token_bytes(16)
        atomic_write(probe, token)
        try:
            if probe.read_bytes() != token:
                raise OSError(f"{probe} read back different bytes")
        finally:
            probe.unlink(missing_ok=True)
        free = os.statvfs(self.root)
        return f"{self.root}: writable, {free.f_bavail * free.f_frsize / 1e9:.1f} GB free"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_npy(path: Path) -> np.ndarray | None:
    """The array in ``path``; None if absent or damaged (a damaged entry is dropped)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (ValueError, OSError):  # damaged cache entry: drop it and recompute
        log.warning("dropping unreadable cached tile %s", path)
        path.unlink(missing_ok=True)
        return None
