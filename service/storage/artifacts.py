"""The artifact store: content-addressed files in the data directory.

Layout: ``<data_dir>/artifacts/<kind>/<key[:2]>/<key><ext>``. Kinds: ``inputs`` and ``outputs``
(key = sha256 of the bytes), ``refined`` tiles (key = sha256 of tile pixels + refine options +
seed + prompt, see ``service.jobs.refine.tile_key``; stored as ``.npy``), ``captions`` (key =
sha256 of tile pixels + caption settings; ``.txt``) and ``pre`` (images pre-upscaled by a model
upscaler, see ``service.jobs.pre_cache``; ``.npy``). Every write goes to a temp name in the same
directory and is ``os.replace``d, so a reader (or a resumed job) never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np

from service.storage.atomic import atomic_write

log = logging.getLogger(__name__)

KINDS = ("inputs", "outputs", "refined", "captions", "pre")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Content-addressed files under ``root`` (see module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, key: str, ext: str = "") -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        return self.root / kind / key[:2] / f"{key}{ext}"

    def _write(self, dest: Path, data: bytes) -> None:
        if dest.exists():
            return  # content-addressed: the same key holds the same bytes
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, data)

    # ---- whole files (inputs, outputs) -------------------------------------------------------
    def put_bytes(self, kind: str, data: bytes, ext: str) -> str:
        key = sha256_bytes(data)
        self._write(self.path(kind, key, ext), data)
        return key

    def get_bytes(self, kind: str, key: str, ext: str) -> bytes:
        return self.path(kind, key, ext).read_bytes()

    def find(self, kind: str, key: str) -> Path | None:
        """The stored file with this key, whatever its suffix (None if absent)."""
        folder = self.path(kind, key).parent
        found = sorted(folder.glob(f"{key}.*")) if folder.is_dir() else []
        return found[0] if found else None

    # ---- tile cache --------------------------------------------------------------------------
    def put_array(self, key: str, array: np.ndarray, kind: str = "refined") -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        self._write(self.path(kind, key, ".npy"), buf.getvalue())

    def get_array(self, key: str, kind: str = "refined") -> np.ndarray | None:
        path = self.path(kind, key, ".npy")
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError):  # damaged cache entry: drop it and recompute
            log.warning("dropping unreadable cached tile %s", path)
            path.unlink(missing_ok=True)
            return None

    def put_text(self, key: str, text: str) -> None:
        self._write(self.path("captions", key, ".txt"), text.encode("utf-8"))

    def get_text(self, key: str) -> str | None:
        try:
            return self.path("captions", key, ".txt").read_text("utf-8")
        except FileNotFoundError:
            return None

    # ---- garbage collection ------------------------------------------------------------------
    def files(self) -> list[Path]:
        return [p for kind in KINDS for p in (self.root / kind).rglob("*") if p.is_file()]

    def delete_unreferenced(self, keep: set[str], *, dry_run: bool = False) -> tuple[int, int]:
        """Delete every artifact whose key is not in ``keep``; returns (files, bytes)."""
        count = size = 0
        for path in self.files():
            key = path.name.split(".", 1)[0]
            if key in keep or path.name.startswith("."):
                continue
            count += 1
            size += path.stat().st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        return count, size
