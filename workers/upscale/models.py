"""LoRA files on the worker's network volume: list, upload (chunked), delete, resolve by name.

The folder is ``$AAT_LORA_DIR`` (default ``/runpod-volume/models/loras``). Only safetensors files
are accepted: a name is reduced to its basename, must match a conservative character set and
end in ``.safetensors``; an upload must parse as safetensors (8-byte little-endian header
length, then a JSON header whose tensor offsets fit the file) and stay under
``$AAT_LORA_MAX_BYTES`` (default 2 GiB). Chunks are staged in a hidden ``.partial`` file inside
the folder (with a ``.partial.json`` note of the chunk sizes so far: chunks must arrive in
order, a resent chunk replaces its earlier copy) and only renamed into place (``os.replace``) once the last chunk arrived and the
file checked out, so a failed upload never leaves a half-written LoRA behind. Nothing is ever
written outside the folder. Each LoRA gets a ``<name>.meta.json`` sidecar when it arrives (its
sha256, computed here for every upload, whichever backend sent it; for imports also trigger
words and where it came from: :mod:`workers.upscale.lora_meta`), and :func:`info` is the one
description of a stored LoRA (the list, a finished upload and a finished import all answer
with it). Imports by URL are :mod:`workers.upscale.lora_import`. Leftovers of uploads and
imports that never finished (a ``.partial`` whose sender went away, an import's temp file
after a cancelled or killed job) are removed by :func:`sweep_stale` once
:data:`STALE_S` old, whenever an upload or an import starts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import struct
import time
from pathlib import Path

from service.core.atomic import is_temp_name
from service.core.contracts import (
    DeleteModelResponse,
    ListModelsResponse,
    ModelInfo,
    UploadModelRequest,
    UploadModelResponse,
)
from service.core.errors import NotFound, ParamsError, PathError
from service.core.params import LORA_NAME_MAX, LORA_NAME_PATTERN
from workers.upscale import lora_meta

log = logging.getLogger(__name__)
DEFAULT_LORA_DIR = "/runpod-volume/models/loras"
DEFAULT_MAX_BYTES = 2 * 1024**3
SUFFIX = ".safetensors"
_SAFE_NAME = re.compile(LORA_NAME_PATTERN)
_MAX_HEADER = 100 * 1024 * 1024
_REFUSED_EXT = {"ckpt", "pt", "pth", "bin", "pkl", "pickle", "zip", "gguf"}
# A leftover this old belongs to an upload or import that will never finish: no import runs
# longer than a day (RunPod's execution timeout) and the chunks of one upload follow each other.
STALE_S = 24 * 3600.0
PARTIAL_SUFFIX = ".partial"


def lora_dir() -> Path:
    return Path(os.environ.get("AAT_LORA_DIR", DEFAULT_LORA_DIR))


def max_bytes() -> int:
    return int(os.environ.get("AAT_LORA_MAX_BYTES", DEFAULT_MAX_BYTES))


def safe_filename(name: str) -> str:
    """``name`` as a plain ``<stem>.safetensors`` file name, or :class:`PathError`.

    A bare stem gets the suffix added; any directory part, ``..``, other extension or odd
    character is refused (never silently rewritten into something else).
    """
    if "/" in name or "\\" in name or "\x00" in name or ".." in name:
        raise PathError(
            f"LoRA name {name[:80]!r} contains a path; give a plain file name like 'style.safetensors'",
            code="path_forbidden",
        )
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in _REFUSED_EXT:
        raise PathError(
            f"LoRA {name!r} is not a .safetensors file; convert it to safetensors first",
            code="path_forbidden",
        )
    if not name.endswith(SUFFIX):
        name = name + SUFFIX
    if not _SAFE_NAME.match(name) or len(name) > LORA_NAME_MAX + len(SUFFIX):
        raise PathError(
            f"LoRA name {name[:80]!r} has characters outside A-Z a-z 0-9 . _ - and space; rename it",
            code="path_forbidden",
        )
    return name


def suggest_name(raw: str) -> str:
    """A file name someone else chose (a CivitAI file, a URL's last part) made to fit the name
    rule: odd characters become ``_``; the result still goes through :func:`safe_filename`."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base[: -len(SUFFIX)] if base.lower().endswith(SUFFIX) else base
    stem = re.sub(r"[^A-Za-z0-9_ .-]", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip(" .-_")[:LORA_NAME_MAX - len(SUFFIX)]
    return (stem or "lora") + SUFFIX


def resolve(name: str, folder: Path | None = None) -> Path:
    """The path of an existing LoRA, or :class:`NotFound` naming what is available."""
    folder = folder or lora_dir()
    path = folder / safe_filename(name)
    if not path.is_file():
        known = ", ".join(m.name for m in list_models(folder).models[:10]) or "none"
        raise NotFound(
            f"LoRA {name!r} is not on the worker volume (available: {known}); upload it first",
            code="lora_not_found",
        )
    return path


def info(path: Path) -> ModelInfo:
    """What is known about the stored LoRA at ``path``: name, size, sha256, trigger words."""
    sha256, words = lora_meta.describe(path)
    return ModelInfo(name=path.name, size_bytes=path.stat().st_size, sha256=sha256,
                     trigger_words=words)


def list_models(folder: Path | None = None) -> ListModelsResponse:
    folder = folder or lora_dir()
    if not folder.is_dir():
        return ListModelsResponse(models=[])
    return ListModelsResponse(models=[
        info(p) for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith(SUFFIX) and not p.name.startswith(".")])


def _leftover(name: str) -> bool:
    """An import's temp file, or an upload's ``.partial`` / ``.partial.json``."""
    return is_temp_name(name) or (name.startswith(".") and (
        name.endswith(PARTIAL_SUFFIX) or name.endswith(PARTIAL_SUFFIX + ".json")))


def sweep_stale(folder: Path, now: float | None = None) -> int:
    """Remove leftovers (see :func:`_leftover`) untouched for :data:`STALE_S`; returns how
    many. Safe with other workers on the volume: what they are writing is fresh."""
    cutoff = (time.time() if now is None else now) - STALE_S
    removed = 0
    for path in folder.iterdir() if folder.is_dir() else []:
        try:
            if _leftover(path.name) and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
                log.info("removed %s, left by an upload or import that never finished",
                         path.name)
        except OSError:
            continue  # another worker on the volume got there first
    return removed


def check_safetensors(path: Path) -> None:
    """Raise :class:`ParamsError` unless ``path`` really is a safetensors file."""
    size = path.stat().st_size
    bad = ParamsError(
        "uploaded LoRA is not a valid safetensors file (pickle/.ckpt files are refused); "
        "convert it with safetensors and upload again",
        code="lora_invalid",
    )
    if size < 8:
        raise bad
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len <= 1 or header_len > min(_MAX_HEADER, size - 8):
            raise bad
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad from exc
    if not isinstance(header, dict):
        raise bad
    data_len = size - 8 - header_len
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise bad


def upload(req: UploadModelRequest, folder: Path | None = None) -> UploadModelResponse:
    """Store one chunk; on the last chunk verify and move the file into place."""
    folder = folder or lora_dir()
    name = safe_filename(req.filename)
    if req.chunk_index >= req.total_chunks:
        raise ParamsError(
            f"chunk_index {req.chunk_index} is not below total_chunks {req.total_chunks}",
            code="invalid_params",
        )
    try:
        data = base64.b64decode(req.file_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParamsError("file_b64 is not valid base64; re-encode the file", code="invalid_params") from exc
    folder.mkdir(parents=True, exist_ok=True)
    if req.chunk_index == 0:
        sweep_stale(folder)
    partial = folder / f".{name}{PARTIAL_SUFFIX}"
    state = folder / f".{name}{PARTIAL_SUFFIX}.json"
    sizes = _received(req, name, partial, state)
    current = sum(sizes)
    if current + len(data) > max_bytes():
        _discard(partial, state)
        raise ParamsError(
            f"LoRA {name} is larger than the {max_bytes()} byte limit", code="lora_too_large"
        )
    with partial.open("r+b" if partial.exists() else "wb") as fh:
        fh.truncate(current)  # a resent chunk replaces what it sent before
        fh.seek(current)
        fh.write(data)
    if req.chunk_index + 1 < req.total_chunks:
        state.write_text(json.dumps({"total": req.total_chunks, "sizes": [*sizes, len(data)]}))
        return UploadModelResponse(status="partial", name=name, size_bytes=current + len(data))
    state.unlink(missing_ok=True)
    return _finish(partial, folder / name, req.sha256)


def _received(req: UploadModelRequest, name: str, partial: Path, state: Path) -> list[int]:
    """Sizes of the chunks before ``req.chunk_index`` already in ``partial``; chunks must come
    in order, a resent chunk (index already received) replaces that chunk and the ones after."""
    if req.chunk_index == 0:
        _discard(partial, state)
        return []
    try:
        known = json.loads(state.read_text())
        total, sizes = int(known["total"]), [int(n) for n in known["sizes"]]
    except (OSError, ValueError, KeyError, TypeError):
        total, sizes = 0, []
    if total != req.total_chunks or not partial.exists() or not sizes:
        raise ParamsError(
            f"chunk {req.chunk_index} of {name} does not belong to an upload in progress "
            "(chunk 0 missing or total_chunks changed); restart the upload",
            code="invalid_params",
        )
    if req.chunk_index > len(sizes):
        raise ParamsError(
            f"chunk {req.chunk_index} of {name} arrived before chunk {len(sizes)}; send the "
            "chunks in order",
            code="invalid_params",
        )
    return sizes[: req.chunk_index]


def _discard(partial: Path, state: Path) -> None:
    partial.unlink(missing_ok=True)
    state.unlink(missing_ok=True)


def _finish(partial: Path, final: Path, sha256: str | None) -> UploadModelResponse:
    """Check the whole file, record its facts (the sidecar: its own sha256, whether or not the
    sender sent one to compare with) and move it into place."""
    try:
        check_safetensors(partial)
        lora_meta.check_base_model(lora_meta.file_base_model(lora_meta.read_metadata(partial)),
                                   f"LoRA {final.name} (so its own metadata says)")
        digest = _sha256(partial)
        if sha256 is not None and digest != sha256:
            raise ParamsError(
                f"LoRA {final.name} does not match the sha256 sent with it; upload it again",
                code="lora_checksum",
            )
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        lora_meta.write_sidecar(final, size_bytes=partial.stat().st_size, sha256=digest)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    model = info(final)
    return UploadModelResponse(status="complete", name=model.name, size_bytes=model.size_bytes,
                               model=model)


def delete(name: str, folder: Path | None = None) -> DeleteModelResponse:
    path = resolve(name, folder)
    path.unlink()
    lora_meta.remove_sidecar(path)
    return DeleteModelResponse(status="deleted", name=path.name)


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
