"""Chunked LoRA uploads, for browsers and large files: ``/v1/models/uploads``.

``POST /v1/models/uploads`` ``{"filename", "size"}`` opens an upload (name and size are
checked first: ``.safetensors`` only, at most ``AAT_MAX_MODEL_BYTES``); ``PUT
/v1/models/uploads/{id}?offset=N`` appends one chunk (at most :data:`MAX_CHUNK_BYTES`) at
``offset``, which must be the bytes received so far (a chunk sent again is accepted without
writing twice; a gap is ``409 upload_offset``; chunks of one upload are checked and written one
at a time, so two copies of a chunk sent at once are written once); ``POST /v1/models/uploads/{id}/finish`` checks
that every byte arrived and that the file is well-formed safetensors, then hands it to the GPU
backend exactly like ``POST /v1/models``. Partial files live in ``<data_dir>/uploads/`` and are
removed when the upload finishes or is refused at the end; an upload nobody finishes (a closed
tab) is removed once untouched for ``AAT_UPLOAD_MAX_AGE_S`` (:func:`sweep_abandoned`, run at
service start and whenever an upload starts).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import weakref
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import get_backend, get_settings, require_auth
from service.api.intake import MAX_JSON_BYTES, read_capped
from service.api.loras import bad_model, check_safetensors, worker_errors
from service.api.problems import ApiError, problem_responses
from service.backends.base import GpuBackend
from service.core.contracts import ModelInfo
from service.core.errors import NotFound
from service.core.params import LORA_NAME_MAX, LORA_UPLOAD_PATTERN
from service.settings import Settings

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 16 * 1024 * 1024
UPLOAD_ID = r"^[0-9a-f]{32}$"

_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()

router = APIRouter(prefix="/v1/models/uploads", tags=["models"],
                   dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403))


class UploadStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(pattern=LORA_UPLOAD_PATTERN, max_length=LORA_NAME_MAX,
                          description="name.safetensors")
    size: int = Field(ge=10, description="total bytes")


class UploadState(BaseModel):
    id: str
    filename: str
    size: int
    received: int
    chunk_bytes: int = MAX_CHUNK_BYTES


def _dir(settings: Settings) -> Path:
    folder = settings.data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sweep_abandoned(settings: Settings, now: float | None = None) -> int:
    """Remove uploads untouched for ``settings.upload_max_age_s``; returns how many."""
    folder = settings.data_dir / "uploads"
    if not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - settings.upload_max_age_s
    removed = 0
    for meta in folder.glob("*.json"):
        part = meta.with_suffix(".part")
        try:
            touched = max(p.stat().st_mtime for p in (meta, part) if p.exists())
        except (OSError, ValueError):
            continue
        if touched < cutoff:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            removed += 1
    for orphan in folder.glob("*.part"):  # its note is gone: nobody can finish it
        if not orphan.with_suffix(".json").exists() and orphan.stat().st_mtime < cutoff:
            orphan.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d abandoned LoRA upload(s) older than %.0f s", removed,
                 settings.upload_max_age_s)
    return removed


def _load(settings: Settings, upload_id: str) -> tuple[dict[str, Any], Path]:
    meta = _dir(settings) / f"{upload_id}.json"
    part = meta.with_suffix(".part")
    if not meta.is_file() or not part.is_file():
        raise NotFound(f"no LoRA upload {upload_id}; start one with POST /v1/models/uploads")
    return json.loads(meta.read_text()), part


def _state(upload_id: str, meta: dict[str, Any], part: Path) -> UploadState:
    return UploadState(id=upload_id, filename=meta["filename"], size=meta["size"],
                       received=part.stat().st_size)


@router.post("", response_model=UploadState, status_code=201, max_body_size=MAX_JSON_BYTES,
             summary="Start a chunked LoRA upload", responses=problem_responses(413, 422))
def start_upload(body: UploadStart, settings: Annotated[Settings, Depends(get_settings)],
                 ) -> UploadState:
    if not body.filename.lower().endswith(".safetensors") or body.filename.startswith("."):
        raise bad_model(f"{body.filename!r} is not a .safetensors name")
    if body.size > settings.max_model_bytes:
        raise ApiError(413, "payload_too_large",
                       f"{body.filename} is {body.size} bytes; the limit is "
                       f"{settings.max_model_bytes} (AAT_MAX_MODEL_BYTES)")
    sweep_abandoned(settings)
    upload_id = secrets.token_hex(16)
    folder = _dir(settings)
    (folder / f"{upload_id}.part").write_bytes(b"")
    meta = {"filename": body.filename, "size": body.size}
    (folder / f"{upload_id}.json").write_text(json.dumps(meta))
    return UploadState(id=upload_id, filename=body.filename, size=body.size, received=0)


def after_offset_check(upload_id: str) -> None:
    """Called between a chunk's offset check and its write, under the upload's lock; nothing
    by default (tests hold a chunk here to prove a concurrent copy of it waits)."""


def _upload_lock(upload_id: str) -> threading.Lock:
    """The lock of one upload (kept while anyone holds it): a chunk's offset check and its
    write are one step, or two copies of a chunk sent at once would both be appended."""
    with _locks_guard:
        lock = _locks.get(upload_id)
        if lock is None:
            lock = _locks[upload_id] = threading.Lock()
        return lock


def _append(settings: Settings, upload_id: str, offset: int, data: bytes) -> UploadState:
    with _upload_lock(upload_id):
        return _append_locked(settings, upload_id, offset, data)


def _append_locked(settings: Settings, upload_id: str, offset: int, data: bytes
                   ) -> UploadState:
    meta, part = _load(settings, upload_id)
    received = part.stat().st_size
    if offset + len(data) <= received:  # sent again (a retry after a lost reply)
        return _state(upload_id, meta, part)
    if offset != received:
        raise ApiError(409, "upload_offset", f"chunk at byte {offset}, but {received} bytes "
                       f"have arrived; send the chunk that starts at {received}")
    if received + len(data) > meta["size"]:
        raise ApiError(413, "payload_too_large", f"more bytes than the {meta['size']} announced")
    after_offset_check(upload_id)
    with part.open("ab") as out:
        out.write(data)
    return _state(upload_id, meta, part)


@router.put("/{upload_id}", response_model=UploadState, summary="Send one chunk",
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}},
            responses=problem_responses(404, 409, 413, 422))
async def put_chunk(
    request: Request, upload_id: Annotated[str, PathParam(pattern=UPLOAD_ID)],
    offset: Annotated[int, Query(ge=0, le=2**40)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> UploadState:
    data = await read_capped(request, MAX_CHUNK_BYTES)
    return await run_in_threadpool(_append, settings, upload_id, offset, data)


@router.post("/{upload_id}/finish", response_model=ModelInfo, status_code=201,
             summary="Check the uploaded file and put it on the worker's volume",
             responses=problem_responses(404, 409, 413, 422, 502, 503, 504))
async def finish_upload(
    upload_id: Annotated[str, PathParam(pattern=UPLOAD_ID)],
    settings: Annotated[Settings, Depends(get_settings)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> ModelInfo:
    meta, part = _load(settings, upload_id)
    received = part.stat().st_size
    if received != meta["size"]:
        raise ApiError(409, "upload_incomplete", f"{received} of {meta['size']} bytes have "
                       "arrived; send the rest before finishing")
    data = await run_in_threadpool(part.read_bytes)
    try:
        check_safetensors(data)
        async with worker_errors():
            return await backend.upload_model(meta["filename"], data)
    finally:  # finished or refused: either way the partial file has served its purpose
        part.unlink(missing_ok=True)
        part.with_suffix(".json").unlink(missing_ok=True)
