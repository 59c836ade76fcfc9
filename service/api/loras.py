"""LoRA management on the upscale worker's volume: ``GET/POST/DELETE /v1/models``.

Proxied through the GPU backend's ``list_models`` / ``upload_model`` / ``delete_model``.
Uploads are safetensors only: the name must end in ``.safetensors`` and the bytes must parse as
a safetensors file (8-byte header length, JSON header, tensor offsets that cover the file
exactly), so a pickle renamed to ``.safetensors`` never reaches a worker. The body is streamed
and capped at ``AAT_MAX_MODEL_BYTES`` (413).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel

from service.api.deps import get_backend, get_settings, require_auth
from service.api.intake import read_capped
from service.api.problems import ApiError, problem_responses
from service.backends.base import GpuBackend
from service.core.contracts import ModelInfo
from service.core.errors import InputError, WorkerError
from service.core.params import (
    LORA_NAME_MAX,
    LORA_NAME_PATTERN,
    LORA_UPLOAD_PATTERN,
    UpscaleParams,
)
from service.settings import Settings

MAX_HEADER_BYTES = 100 * 1024 * 1024

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403, 502, 503, 504))


class ModelList(BaseModel):
    models: list[ModelInfo]


def bad_model(message: str) -> InputError:
    return InputError(message + "; upload a .safetensors LoRA file", code="model_invalid")


def check_safetensors(data: bytes) -> None:
    """Raise ``model_invalid`` unless ``data`` is a well-formed safetensors file."""
    if len(data) < 10:
        raise bad_model("the file is too small to be safetensors")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len < 2 or header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise bad_model("not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_model("not a safetensors file (header is not JSON)") from exc
    if not isinstance(header, dict):
        raise bad_model("not a safetensors file (header is not an object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets) or offsets[0] > offsets[1]):
            raise bad_model(f"tensor {name!r} has no valid data_offsets")
        end = max(end, offsets[1])
    if end != len(data) - 8 - header_len:
        raise bad_model("the tensor data does not match the file length (truncated?)")


_WORKER_STATUS = {"lora_not_found": 404, "lora_invalid": 422, "lora_too_large": 413,
                  "lora_checksum": 422, "path_forbidden": 422, "invalid_params": 422,
                  "import_url_unsupported": 422, "import_url_insecure": 422,
                  "model_invalid": 422, "lora_incompatible": 422}


@asynccontextmanager
async def worker_errors() -> AsyncIterator[None]:
    """Worker refusals about the user's LoRA are the user's errors (404/413/422), not 502."""
    try:
        yield
    except WorkerError as exc:
        status = _WORKER_STATUS.get(exc.code)
        if status is None:
            raise
        raise ApiError(status, exc.code, exc.message) from exc


# How long the worker's LoRA list is trusted at submit (uploads and deletes here refresh it).
LORA_LIST_TTL_S = 30.0


class LoraCatalog:
    """The upscale worker's LoRA names, cached for ``ttl_s``, so a submit naming LoRAs is
    checked without a RunPod round trip each time. A name missing from the cached list
    refreshes it once before it is refused (it may have been uploaded elsewhere)."""

    def __init__(self, ttl_s: float = LORA_LIST_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._names: frozenset[str] = frozenset()
        self._expires = 0.0

    def invalidate(self) -> None:
        self._expires = 0.0

    def remember(self, models: list[ModelInfo]) -> None:
        self._names = frozenset(m.name for m in models)
        self._expires = time.monotonic() + self.ttl_s

    async def names(self, backend: GpuBackend, *, fresh: bool = False) -> frozenset[str]:
        if fresh or time.monotonic() >= self._expires:
            async with worker_errors():
                self.remember(await backend.list_models())
        return self._names


def lora_catalog(where: Request | FastAPI) -> LoraCatalog:
    """The app's one :class:`LoraCatalog` (made on first use)."""
    app = where.app if isinstance(where, Request) else where
    catalog: LoraCatalog | None = getattr(app.state, "lora_catalog", None)
    if catalog is None:
        catalog = app.state.lora_catalog = LoraCatalog()
    return catalog


async def check_lora_names(request: Request, params: UpscaleParams) -> None:
    """Refuse a job at submit whose LoRAs the upscale worker does not have (422
    ``lora_not_found``), or that names LoRAs where no GPU backend can apply them (422
    ``lora_unavailable``), instead of failing at refine time or succeeding without them."""
    if not params.loras:
        return
    backend: GpuBackend | None = request.app.state.backend
    if backend is None:
        raise ApiError(422, "lora_unavailable",
                       "LoRAs need a GPU backend and this service has none (it upscales on the "
                       "CPU only); set RUNPOD_API_KEY and RUNPOD_UPSCALE_ENDPOINT_ID, or drop "
                       "the loras parameter")
    catalog = lora_catalog(request)
    wanted = [lora.name for lora in params.loras]
    known = await catalog.names(backend)
    if not set(wanted) <= known:
        known = await catalog.names(backend, fresh=True)
    missing = [name for name in wanted if name not in known]
    if missing:
        have = ", ".join(sorted(known)[:10]) or "none"
        raise ApiError(422, "lora_not_found",
                       f"LoRA {missing[0]!r} is not on the upscale worker (available: {have}); "
                       "upload it first with POST /v1/models or `aat models upload`, or "
                       "import it from CivitAI / Hugging Face with `aat models import URL`")


@router.get("", response_model=ModelList, summary="LoRAs on the upscale worker's volume")
async def list_models(request: Request,
                      backend: Annotated[GpuBackend, Depends(get_backend)]) -> ModelList:
    async with worker_errors():
        models = await backend.list_models()
    lora_catalog(request).remember(models)
    return ModelList(models=models)


@router.post("", response_model=ModelInfo, status_code=201,
             summary="Upload a LoRA (raw .safetensors body)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}}}},
             responses=problem_responses(413, 422))
async def upload_model(
    request: Request,
    filename: Annotated[str, Query(pattern=LORA_UPLOAD_PATTERN, max_length=LORA_NAME_MAX,
                                     description="name.safetensors")],
    settings: Annotated[Settings, Depends(get_settings)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> ModelInfo:
    if not filename.lower().endswith(".safetensors") or filename.startswith("."):
        raise bad_model(f"{filename!r} is not a .safetensors name")
    data = await read_capped(request, settings.max_model_bytes)
    check_safetensors(data)
    lora_catalog(request).invalidate()
    async with worker_errors():
        return await backend.upload_model(filename, data)


@router.delete("/{name}", status_code=204, response_class=Response,
               summary="Delete a LoRA", responses=problem_responses(404, 422))
async def delete_model(
    request: Request,
    name: Annotated[str, Path(pattern=LORA_NAME_PATTERN, max_length=LORA_NAME_MAX)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> Response:
    lora_catalog(request).invalidate()
    async with worker_errors():
        await backend.delete_model(name)
    return Response(status_code=204)
