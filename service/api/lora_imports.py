"""LoRA import by URL: ``/v1/models/imports``.

``POST /v1/models/imports`` ``{"url", "name"?}`` checks the URL at once (a CivitAI model, whose
newest published version is taken, or model version, or a Hugging Face ``.safetensors`` file,
:mod:`service.core.lora_sources`; ``https`` unless the host is on
``AAT_LORA_IMPORT_HTTP_HOSTS``), starts the upscale worker's ``import_model`` (the worker
downloads onto its volume: the bytes never pass through this service) and answers ``202``
with the import. ``GET /v1/models/imports/{id}`` asks the worker where it stands (state
``queued`` → ``downloading`` → ``checking`` → ``done`` | ``failed`` | ``canceled``, bytes done
and total, the CivitAI version taken, the stored LoRA or the error with what to do next);
``GET /v1/models/imports`` lists the recent ones. ``POST /v1/models/imports/{id}/cancel``
(like a job's cancel: ``202``, or ``200`` with the import unchanged once it has ended) cancels
the worker's job; the worker stops between chunks and removes its temp file, so nothing is
kept. A cancel that arrives after the worker renamed the file into place is too late: the
import is answered ``done`` if the worker says so right after the cancel. Each import is a small JSON record in ``<data_dir>/imports/`` (the newest
:data:`KEEP_RECORDS` are kept), so progress survives a page reload and a service restart.
The service follows every import it started in the background (:func:`follow`, resumed for
unfinished records at start-up) until it ends, so an import nobody watches still gets its
result before RunPod forgets the job (30 minutes after it ends).
The configured CivitAI / Hugging Face token goes to the worker for that site only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import get_backend, get_settings, require_auth
from service.api.intake import MAX_JSON_BYTES
from service.api.loras import lora_catalog, worker_errors
from service.api.problems import problem_responses
from service.backends.base import GpuBackend, RemoteImport
from service.core.atomic import atomic_write
from service.core.contracts import CivitaiVersion, ImportModelRequest, ModelInfo
from service.core.errors import AatError, NotFound
from service.core.lora_sources import LoraSource, check_transport, resolve_source
from service.core.params import LORA_NAME_MAX, LORA_UPLOAD_PATTERN
from service.settings import Settings

log = logging.getLogger(__name__)

IMPORT_ID = r"^[0-9a-f]{32}$"
KEEP_RECORDS = 50

router = APIRouter(prefix="/v1/models/imports", tags=["models"],
                   dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403, 502, 503, 504))

ImportState = Literal["queued", "downloading", "checking", "done", "failed", "canceled"]
TERMINAL = ("done", "failed", "canceled")
_records = threading.Lock()  # one writer of the records at a time (cancel vs the follower)


class ImportStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2000,
                     description="a CivitAI model or model-version URL (civitai.com/models/<id> "
                                 "takes the model's newest published version; civitai.com/"
                                 "models/<id>?modelVersionId=<v>, civitai.com/api/download/"
                                 "models/<v>) or a Hugging Face file URL (huggingface.co/<owner>/"
                                 "<repo>/resolve/<rev>/<file>.safetensors; /blob/ works too)")
    name: str | None = Field(default=None, pattern=LORA_UPLOAD_PATTERN, max_length=LORA_NAME_MAX,
                             description="name.safetensors on the volume; default: the file's")


class ImportFailure(BaseModel):
    code: str
    message: str
    retryable: bool = False


class LoraImport(BaseModel):
    id: str
    url: str = Field(description="the URL given, without any secrets in it")
    source: Literal["civitai", "huggingface"]
    name: str | None = Field(description="the LoRA's file name once known")
    state: ImportState
    bytes_done: int = 0
    bytes_total: int | None = None
    version: CivitaiVersion | None = Field(
        default=None, description="CivitAI: the model version being imported, once the worker "
        "has resolved it (for a model page URL: its newest published version)")
    model: ModelInfo | None = Field(default=None, description="the stored LoRA, once done")
    error: ImportFailure | None = None
    created_at: float = Field(description="Unix time")
    updated_at: float


class ImportList(BaseModel):
    imports: list[LoraImport]


def _dir(settings: Settings) -> Path:
    folder = settings.data_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _save(settings: Settings, item: LoraImport, remote_id: str) -> LoraImport:
    """Write the record, unless it has ended meanwhile (a cancel won the race against the
    follower's update): then the ended record stays, and is returned."""
    with _records:
        try:
            current, _ = _load(settings, item.id)
        except NotFound:
            current = None
        if current is not None and current.state in TERMINAL:
            return current
        record = {"import": item.model_dump(mode="json"), "remote_id": remote_id}
        atomic_write(_dir(settings) / f"{item.id}.json", json.dumps(record).encode())
        return item


def _load(settings: Settings, import_id: str) -> tuple[LoraImport, str]:
    path = _dir(settings) / f"{import_id}.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NotFound(f"no LoRA import {import_id}; start one with POST "
                       "/v1/models/imports") from exc
    return LoraImport.model_validate(record["import"]), str(record["remote_id"])


def _recent_ids(settings: Settings) -> list[str]:
    """Import ids, newest first; records past :data:`KEEP_RECORDS` are removed."""
    paths = sorted(_dir(settings).glob("*.json"), key=lambda p: p.stat().st_mtime_ns,
                   reverse=True)
    for old in paths[KEEP_RECORDS:]:
        old.unlink(missing_ok=True)
    return [p.stem for p in paths[:KEEP_RECORDS]]


def worker_request(settings: Settings, source: LoraSource, name: str | None
                   ) -> ImportModelRequest:
    """What the worker is asked to do; only the token of the source's own site goes along."""
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    return ImportModelRequest(
        source=source.kind, url=source.url, download_url=source.download_url,
        metadata_url=source.metadata_url, name=name, max_bytes=settings.max_model_bytes,
        http_hosts=settings.lora_import_http_hosts,
        max_redirects=settings.lora_import_max_redirects,
        civitai_token=secret(settings.civitai_token) if source.kind == "civitai" else None,
        hf_token=secret(settings.hf_token) if source.kind == "huggingface" else None,
    )


def _apply(item: LoraImport, remote: RemoteImport) -> LoraImport:
    """``item`` updated with what the worker says."""
    now = time.time()
    if remote.state == "done" and remote.model is not None:
        size = remote.model.size_bytes
        return item.model_copy(update={"state": "done", "model": remote.model, "bytes_done": size,
                                       "bytes_total": size, "name": remote.model.name,
                                       "version": remote.version or item.version,
                                       "updated_at": now})
    if remote.state == "canceled":  # canceled on RunPod's side (its console, another client)
        return item.model_copy(update={"state": "canceled", "updated_at": now})
    if remote.state == "failed":
        err = remote.error
        failure = ImportFailure(code=err.code if err else "import_failed",
                                message=err.message if err else "the import failed",
                                retryable=bool(err and err.retryable))
        return item.model_copy(update={"state": "failed", "error": failure, "updated_at": now})
    update: dict[str, Any] = {"state": "queued" if remote.state == "queued" else "downloading"}
    if remote.progress is not None:
        p = remote.progress
        update.update(bytes_done=p.bytes_done, bytes_total=p.bytes_total,
                      state="checking" if p.stage == "checking" else update["state"])
        if p.name:
            update["name"] = p.name
        if p.version is not None:
            update["version"] = p.version
    changed = {k: v for k, v in update.items() if getattr(item, k) != v}
    return item.model_copy(update={**changed, "updated_at": now}) if changed else item


async def _refresh(app: FastAPI, settings: Settings, backend: GpuBackend,
                   import_id: str) -> LoraImport:
    item, remote_id = await run_in_threadpool(_load, settings, import_id)
    if item.state in TERMINAL:
        return item
    async with worker_errors():
        remote = await backend.import_status(remote_id)
    fresh = _apply(item, remote)
    if fresh is not item:
        fresh = await run_in_threadpool(_save, settings, fresh, remote_id)
        if fresh.state == "done":
            lora_catalog(app).invalidate()  # submits may now name it
    return fresh


FOLLOW_MAX_DELAY_S = 5.0


async def follow(app: FastAPI, import_id: str) -> None:
    """Poll one import until it ends (backing off to every :data:`FOLLOW_MAX_DELAY_S`)."""
    settings: Settings = app.state.settings
    backend: GpuBackend = app.state.backend
    delay = 0.5
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, FOLLOW_MAX_DELAY_S)
        try:
            item = await _refresh(app, settings, backend, import_id)
        except NotFound:
            return
        except Exception as exc:  # RunPod unreachable for now: keep trying, quietly
            log.warning("LoRA import %s: could not read its state: %s", import_id,
                        exc.message if isinstance(exc, AatError) else type(exc).__name__)
            continue
        if item.state in TERMINAL:
            return


def _followers(app: FastAPI) -> set[asyncio.Task[None]]:
    tasks: set[asyncio.Task[None]] | None = getattr(app.state, "import_followers", None)
    if tasks is None:
        tasks = app.state.import_followers = set()
    return tasks


def _start_following(app: FastAPI, import_id: str) -> None:
    tasks = _followers(app)
    task = asyncio.ensure_future(follow(app, import_id))
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def resume_following(app: FastAPI) -> None:
    """At start-up: follow the unfinished imports of an earlier run of the service."""
    if app.state.backend is None:
        return
    settings: Settings = app.state.settings
    for import_id in await run_in_threadpool(_recent_ids, settings):
        try:
            item, _ = await run_in_threadpool(_load, settings, import_id)
        except (NotFound, ValueError, KeyError):
            continue
        if item.state not in TERMINAL:
            _start_following(app, import_id)


async def stop_following(app: FastAPI) -> None:
    tasks = list(_followers(app))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@router.post("", response_model=LoraImport, status_code=202, max_body_size=MAX_JSON_BYTES,
             summary="Import a LoRA from a CivitAI or Hugging Face URL",
             responses=problem_responses(422))
async def start_import(
    body: ImportStart, request: Request, response: Response,
    settings: Annotated[Settings, Depends(get_settings)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> LoraImport:
    source = resolve_source(body.url, civitai_base=settings.civitai_base_url,
                            huggingface_base=settings.huggingface_base_url)
    for url in (source.download_url, source.metadata_url):
        if url is not None:
            check_transport(url, settings.lora_import_http_hosts)
    async with worker_errors():
        remote_id = await backend.start_import(worker_request(settings, source, body.name))
    now = time.time()
    item = LoraImport(id=secrets.token_hex(16), url=source.url, source=source.kind,
                      name=body.name or source.filename, state="queued", created_at=now,
                      updated_at=now)
    await run_in_threadpool(_save, settings, item, remote_id)
    _start_following(request.app, item.id)
    response.headers["Location"] = f"/v1/models/imports/{item.id}"
    return item


@router.get("", response_model=ImportList, summary="Recent LoRA imports, newest first")
async def list_imports(
    request: Request, settings: Annotated[Settings, Depends(get_settings)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> ImportList:
    ids = await run_in_threadpool(_recent_ids, settings)
    return ImportList(imports=[await _refresh(request.app, settings, backend, i) for i in ids])


@router.get("/{import_id}", response_model=LoraImport, summary="Where an import stands",
            responses=problem_responses(404, 422))
async def get_import(
    request: Request, import_id: Annotated[str, PathParam(pattern=IMPORT_ID)],
    settings: Annotated[Settings, Depends(get_settings)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> LoraImport:
    return await _refresh(request.app, settings, backend, import_id)


@router.post("/{import_id}/cancel", response_model=LoraImport, status_code=202,
             summary="Cancel an import (one that has ended comes back unchanged with 200)",
             responses={200: {"description": "the import had already ended",
                              "model": LoraImport},
                        **problem_responses(404, 422)})
async def cancel_import(
    request: Request, response: Response,
    import_id: Annotated[str, PathParam(pattern=IMPORT_ID)],
    settings: Annotated[Settings, Depends(get_settings)],
    backend: Annotated[GpuBackend, Depends(get_backend)],
) -> LoraImport:
    item = await _refresh(request.app, settings, backend, import_id)
    if item.state in TERMINAL:
        response.status_code = 200
        return item
    _, remote_id = await run_in_threadpool(_load, settings, import_id)
    async with worker_errors():
        await backend.cancel_import(remote_id)
        after = await backend.import_status(remote_id)
    if after.state == "done":  # it finished just before the cancel arrived: the LoRA is kept
        canceled = _apply(item, after)
    else:
        canceled = item.model_copy(update={"state": "canceled", "updated_at": time.time()})
    saved = await run_in_threadpool(_save, settings, canceled, remote_id)  # unless it ended first
    if saved.state != "canceled":
        response.status_code = 200
    if saved.state == "done":
        lora_catalog(request.app).invalidate()
    log.info("LoRA import %s: %s", import_id, saved.state)
    return saved

