"""`RunPodBackend`: the :class:`GpuBackend` port on RunPod serverless endpoints.

Tiles go to RunPod jobs submitted with ``/run`` (inline lossless WebP or PNG, size checked
before sending, ``policy.executionTimeout`` and ``policy.ttl`` always set, our ``request_key``
inside ``input`` so a duplicate submission is recognisable), at most as many jobs in flight per
endpoint as it has slots, results fetched by :meth:`RunPodClient.wait` as soon as they are
ready. Tiles of one job waiting for a slot share a RunPod job, up to ``runpod_tiles_per_job``
and what fits one request (:mod:`~service.backends.runpod.groups`); a group that fails
retryably is retried tile by tile.

Retries, second layer (the HTTP layer is in :mod:`service.backends.runpod.client`): a job that
ends FAILED with a retryable error, TIMED_OUT, COMPLETED without output, or whose result is
gone (404) is resubmitted, up to ``runpod_tile_attempts`` RunPod jobs; then the last error is
raised with ``retryable=False`` and the RunPod job ids in ``detail``. Cancelling a call (asyncio
cancellation) cancels its RunPod job. Every call's RunPod job ids, queue and execution times
and estimated cost are kept in :class:`CallAccounting`; :meth:`totals` sums them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, SecretStr, ValidationError

from service.backends.base import (
    CallAccounting,
    CaptionResult,
    OnSubmitted,
    RefineOptions,
    RefineResult,
    RemoteImport,
    TileTask,
    report_submitted,
)
from service.backends.runpod.client import (
    TERMINAL,
    PollPolicy,
    RetryPolicy,
    RunPodClient,
    cancel_quietly,
    outcome,
    submit_or_cancel,
)
from service.backends.runpod.groups import TileGroups, Waiting, wait_shared
from service.backends.runpod.limits import EndpointLimit, Slots, tiles_per_request
from service.backends.runpod.resume import repoll, repoll_caption
from service.core.contracts import (
    CaptionRequest,
    CaptionResponse,
    CaptionTileIn,
    DeleteModelRequest,
    DeleteModelResponse,
    ImportModelRequest,
    ImportModelResponse,
    ImportProgress,
    ListModelsRequest,
    ListModelsResponse,
    ModelInfo,
    TileIn,
    UploadModelRequest,
    UploadModelResponse,
    UpscaleRequest,
    UpscaleResponse,
)
from service.core.errors import (
    AatError,
    BackendAuthError,
    ConfigError,
    ParamsError,
    WorkerError,
)
from service.core.imageref import decode_to_array, encode_smallest
from service.settings import Settings

log = logging.getLogger(__name__)

UPLOAD_CHUNK_BYTES = 6 * 1024 * 1024  # base64 grows it to 8 MB: under the /run limit
RUNSYNC_WAIT_MS = 30_000  # /runsync holds the request this long, then we poll /status
M = TypeVar("M", bound=BaseModel)


@dataclass
class Totals:
    """Sums over every call of this backend."""

    calls: int = 0
    runpod_jobs: int = 0
    delay_ms: int = 0
    execution_ms: int = 0
    cost_usd: float = 0.0
    possibly_billed: int = 0


class RunPodBackend:
    """GPU calls on the upscale (and optional caption) RunPod endpoints."""

    name = "runpod"

    def __init__(self, settings: Settings) -> None:
        if settings.runpod_api_key is None or not settings.runpod_upscale_endpoint_id:
            raise ConfigError(
                "the runpod backend needs RUNPOD_API_KEY and RUNPOD_UPSCALE_ENDPOINT_ID; set "
                "both (or choose another backend with AAT_BACKEND)"
            )
        self._s = settings
        self._key: SecretStr = settings.runpod_api_key
        self._endpoints = {"upscale": settings.runpod_upscale_endpoint_id,
                           "caption": settings.runpod_caption_endpoint_id}
        self._clients: dict[str, RunPodClient] = {}
        self._limits: dict[str, EndpointLimit] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._totals = Totals()
        self._policy = {"executionTimeout": settings.runpod_execution_timeout_s * 1000,
                        "ttl": settings.runpod_ttl_s * 1000}
        self._groups = self._new_groups()

    # ---- GpuBackend -------------------------------------------------------------------------

    async def max_concurrency(self) -> int:
        """Tiles to keep in flight: every slot of the endpoint with a full group of tiles."""
        slots = (await self._limit("upscale")).slots.limit
        return slots * self._s.runpod_tiles_per_job

    async def refine(
        self, tile: TileTask, options: RefineOptions, *, on_submitted: OnSubmitted | None = None,
    ) -> RefineResult:
        if self._s.runpod_tiles_per_job == 1:
            return await self._refine_alone(tile, options, on_submitted)
        self._same_loop()
        return await self._groups.refine(tile, options, on_submitted)

    async def _refine_alone(
        self, tile: TileTask, options: RefineOptions, on_submitted: OnSubmitted | None, *,
        attempts: int | None = None, earlier: CallAccounting | None = None,
        held: bool = False,
    ) -> RefineResult:
        """One tile in its own RunPod job(s); ``earlier``: its share of a failed group job."""
        async def build() -> UpscaleRequest:  # encoded only once a RunPod slot is free
            return await _upscale_request([tile], options)

        label = f"tile {tile.tile_id}"
        out, acct = await self._call("upscale", build, label, on_submitted=on_submitted,
                                     attempts=attempts, held=held)
        resp = _parse(UpscaleResponse, out, label)
        if len(resp.tiles) != 1:
            raise _bad_output(label, f"{len(resp.tiles)} tiles instead of 1")
        image = await _decode_tile(resp.tiles[0].image, tile, label)
        if earlier is not None:
            acct = _merged(earlier, acct)
        return RefineResult(tile.tile_id, image, resp.tiles[0].seed_used, acct)

    # ---- several tiles per RunPod job -------------------------------------------------------

    def _new_groups(self) -> TileGroups:
        async def slots() -> Slots:
            return (await self._limit("upscale")).slots

        def fit(tile: TileTask, options: RefineOptions) -> int:
            style = options.ip_adapter_image
            return tiles_per_request(tile.image.shape, self._s.runpod_tiles_per_job,
                                     style.shape if style is not None else None)

        return TileGroups(self._s.runpod_tiles_per_job, slots, self._run_group, fit)

    async def _run_group(self, group: list[Waiting], options: RefineOptions,
                         slots: Slots) -> None:
        """Refine ``group`` on the slot it was handed: one RunPod job for all its tiles; a
        retryable failure sends each tile again alone (each then takes a slot of its own).
        Every tile's caller gets its result or an error, whatever happens here."""
        try:
            await self._run_group_settled(group, options, slots)
        except BaseException as exc:
            for w in group:
                if not w.future.done():
                    w.future.set_exception(exc if isinstance(exc, Exception)
                                           else asyncio.CancelledError())
            raise

    async def _run_group_settled(self, group: list[Waiting], options: RefineOptions,
                                 slots: Slots) -> None:
        if len(group) == 1:  # nobody to share with: today's path on this slot
            try:
                [w] = group
                await _settle(w, self._refine_alone(w.tile, options, w.on_submitted,
                                                    held=True))
            finally:
                await slots.__aexit__(None, None, None)
            return
        task = asyncio.ensure_future(self._group_job(group, options))
        try:
            await wait_shared(task, group)
        finally:
            await slots.__aexit__(None, None, None)
        if task.cancelled():
            return  # every tile's caller gave up; the RunPod job was cancelled
        exc = task.exception()
        if exc is None:
            for w, result in zip(group, task.result(), strict=True):
                if not w.future.done():
                    w.future.set_result(result)
            return
        if isinstance(exc, _GroupFailed) and exc.retry_alone:
            log.warning("%s: RunPod job %s failed (%s); sending each tile alone", exc.label,
                        exc.accounting.remote_job_ids[-1:], exc.error.code)
            attempts = max(1, self._s.runpod_tile_attempts - 1)
            shares = _shares(exc.accounting, len(group))
            await asyncio.gather(*(
                _settle(w, self._refine_alone(w.tile, options, w.on_submitted,
                                              attempts=attempts, earlier=share))
                for w, share in zip(group, shares, strict=True)))
            return
        error = exc.final() if isinstance(exc, _GroupFailed) else exc
        for w in group:
            if not w.future.done():
                w.future.set_exception(error)

    async def _group_job(self, group: list[Waiting], options: RefineOptions
                         ) -> list[RefineResult]:
        """One RunPod job for every tile of ``group`` (one attempt); their results in order."""
        client = self._client("upscale")
        tiles = [w.tile for w in group]
        label = "tiles " + ", ".join(t.tile_id for t in tiles)
        self._totals.calls += 1
        built = await _upscale_request(tiles, options)
        payload = built.model_dump(mode="json", exclude_none=True)
        payload["request_key"] = await asyncio.to_thread(request_key, payload)

        async def submitted(job_id: str) -> None:  # every tile's progress names the shared job
            await asyncio.gather(*(report_submitted(w.on_submitted, job_id) for w in group))

        acct = CallAccounting()
        try:
            body = await self._attempt(client, payload, acct, False, label, submitted)
        except BackendAuthError:
            raise
        except AatError as exc:  # the HTTP layer gave up: as for one tile, no resubmission
            if exc.code == "payload_too_large":  # unless the pair was too big: one by one
                raise _GroupFailed(label, exc, acct) from exc
            raise type(exc)(f"{label}: {exc.message}", code=exc.code,
                            retryable=exc.retryable, retry_after=exc.retry_after,
                            detail=exc.detail) from exc
        try:
            out = outcome(body)
        except AatError as exc:
            raise _GroupFailed(label, exc, acct) from exc
        resp = _parse(UpscaleResponse, out, label)
        by_id = {t.tile_id: t for t in resp.tiles}
        if sorted(by_id) != sorted(t.tile_id for t in tiles):
            raise _bad_output(label, f"tiles {sorted(by_id)} instead of {label}")
        shares = _shares(acct, len(tiles))
        results = []
        for tile, share in zip(tiles, shares, strict=True):
            got = by_id[tile.tile_id]
            image = await _decode_tile(got.image, tile, f"tile {tile.tile_id}")
            results.append(RefineResult(tile.tile_id, image, got.seed_used, share))
        return results

    async def resume(self, remote_id: str, tile: TileTask) -> RefineResult | None:
        """The refined ``tile`` of RunPod job ``remote_id``, which an earlier (killed) attempt
        submitted and paid for; None when RunPod no longer has a usable result (see
        :mod:`~service.backends.runpod.resume`): the caller then refines the tile afresh."""
        found = await repoll(self._client("upscale"), remote_id, tile.image.shape,
                             tile.tile_id)
        if found is None:
            return None
        image, body, n_tiles = found
        acct = CallAccounting(remote_job_ids=[remote_id], attempts=1)
        self._account(acct, body, share=n_tiles)  # the group's other tiles resume their part
        return RefineResult(tile.tile_id, image, tile.seed, acct)

    async def resume_caption(self, remote_id: str, tile_id: str) -> CaptionResult | None:
        """The caption of RunPod job ``remote_id``, which an earlier (killed) attempt submitted
        and paid for; None when RunPod no longer has it (the caller captions afresh)."""
        found = await repoll_caption(self._client("caption"), remote_id)
        if found is None:
            return None
        text, body = found
        acct = CallAccounting(remote_job_ids=[remote_id], attempts=1)
        self._account(acct, body)
        return CaptionResult(tile_id, text, acct)

    async def caption(
        self, tile_id: str, image: np.ndarray, *, instruction: str | None = None,
        max_new_tokens: int = 48, on_submitted: OnSubmitted | None = None,
    ) -> CaptionResult:
        async def build() -> CaptionRequest:
            return CaptionRequest(
                tiles=[CaptionTileIn(tile_id=tile_id, image=await _encode(image))],
                instruction=instruction, max_new_tokens=max_new_tokens)

        label = f"caption of tile {tile_id}"
        out, acct = await self._call("caption", build, label, on_submitted=on_submitted)
        resp = _parse(CaptionResponse, out, label)
        if len(resp.captions) != 1:
            raise _bad_output(label, f"{len(resp.captions)} captions instead of 1")
        return CaptionResult(tile_id, resp.captions[0].caption, acct)

    async def list_models(self) -> list[ModelInfo]:
        out, _ = await self._call("upscale", ListModelsRequest(), "list_models", sync=True)
        return _parse(ListModelsResponse, out, "list_models").models

    async def upload_model(self, filename: str, data: bytes) -> ModelInfo:
        if not filename.endswith(".safetensors"):
            raise ParamsError(f"{filename!r} is not a .safetensors file; only safetensors "
                              "LoRAs can be uploaded", code="lora_invalid")
        digest = hashlib.sha256(data).hexdigest()
        chunks = [data[i:i + UPLOAD_CHUNK_BYTES]
                  for i in range(0, len(data), UPLOAD_CHUNK_BYTES)] or [b""]
        resp: UploadModelResponse | None = None
        for index, chunk in enumerate(chunks):
            req = UploadModelRequest(filename=filename, file_b64=base64.b64encode(chunk).decode(),
                                     chunk_index=index, total_chunks=len(chunks), sha256=digest)
            label = f"upload of {filename} chunk {index + 1}/{len(chunks)}"
            out, _ = await self._call("upscale", req, label, attempts=1)
            resp = _parse(UploadModelResponse, out, label)
        assert resp is not None
        return resp.model or ModelInfo(name=resp.name, size_bytes=resp.size_bytes, sha256=digest)

    async def delete_model(self, name: str) -> None:
        out, _ = await self._call("upscale", DeleteModelRequest(name=name), f"delete {name}")
        _parse(DeleteModelResponse, out, f"delete {name}")

    async def start_import(self, request: ImportModelRequest) -> str:
        """``/run`` the worker's ``import_model`` with its own execution timeout (a large file
        takes longer than a tile); nothing waits for it here."""
        timeout_s = self._s.lora_import_timeout_s
        policy = {"executionTimeout": timeout_s * 1000,
                  "ttl": max(self._s.runpod_ttl_s, timeout_s + 600) * 1000}
        payload = request.model_dump(mode="json", exclude_none=True)
        job_id = await self._client("upscale").run(payload, policy)
        self._totals.runpod_jobs += 1
        log.info("LoRA import from %s started as RunPod job %s", request.url, job_id)
        return job_id

    async def import_status(self, remote_id: str) -> RemoteImport:
        """One ``/status`` of the import's RunPod job, read as a :class:`RemoteImport`."""
        try:
            body = await self._client("upscale").status(remote_id)
        except AatError as exc:
            if exc.code != "runpod_job_gone":
                raise
            return RemoteImport("failed", error=WorkerError(
                f"the import's RunPod job {remote_id} is gone (its result expired); look for "
                "the LoRA in the list, else import it again", code="import_lost"))
        status = body.get("status")
        if status not in TERMINAL:
            try:
                progress = ImportProgress.model_validate(body.get("output"))
            except ValidationError:
                progress = None
            return RemoteImport("queued" if status == "IN_QUEUE" else "running", progress)
        if status == "CANCELLED":
            return RemoteImport("canceled")
        try:
            out = outcome(body)
        except AatError as exc:
            return RemoteImport("failed", error=exc)
        done = _parse(ImportModelResponse, out, "LoRA import")
        return RemoteImport("done", model=done.model, version=done.version)

    async def cancel_import(self, remote_id: str) -> None:
        """``/cancel`` the import's RunPod job: the worker stops between chunks and removes
        its temp file (:mod:`workers.common.cancel`)."""
        await self._client("upscale").cancel(remote_id)

    async def health(self) -> dict[str, Any]:
        endpoints = {}
        for kind, endpoint_id in self._endpoints.items():
            if endpoint_id:
                endpoints[kind] = {"id": endpoint_id, **await self._client(kind).health()}
        return {"backend": self.name, "endpoints": endpoints, "totals": self.totals()}

    async def aclose(self) -> None:
        await self._groups.aclose()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def totals(self) -> dict[str, Any]:
        t = self._totals
        return {"calls": t.calls, "runpod_jobs": t.runpod_jobs, "delay_ms": t.delay_ms,
                "execution_ms": t.execution_ms, "cost_usd": round(t.cost_usd, 6),
                "possibly_billed": t.possibly_billed}

    # ---- one call, tile-level retries -------------------------------------------------------

    async def _call(
        self, kind: str, request: BaseModel | Callable[[], Awaitable[BaseModel]], label: str, *,
        sync: bool = False, attempts: int | None = None, on_submitted: OnSubmitted | None = None,
        held: bool = False,
    ) -> tuple[Any, CallAccounting]:
        """Run ``request`` (or what ``request()`` builds) on endpoint ``kind``, holding one of
        its in-flight slots throughout (``held``: the caller already holds one); resubmit
        retryable failures (bounded)."""
        client, sem = self._client(kind), (await self._limit(kind)).slots
        self._totals.calls += 1
        async with contextlib.nullcontext() if held else sem:
            built = request if isinstance(request, BaseModel) else await request()
            payload = built.model_dump(mode="json", exclude_none=True)
            if "request_key" in type(built).model_fields:
                payload["request_key"] = await asyncio.to_thread(request_key, payload)
            return await self._attempts(client, payload, label, sync=sync,
                                        attempts=attempts or self._s.runpod_tile_attempts,
                                        on_submitted=on_submitted)

    async def _attempts(
        self, client: RunPodClient, payload: dict[str, Any], label: str, *, sync: bool,
        attempts: int, on_submitted: OnSubmitted | None,
    ) -> tuple[Any, CallAccounting]:
        acct = CallAccounting()
        last: AatError | None = None
        for attempt in range(1, attempts + 1):
            try:
                body = await self._attempt(client, payload, acct, sync, label, on_submitted)
            except BackendAuthError:
                raise  # already the one clear message
            except AatError as exc:  # the HTTP layer gave up, or the tile is too large
                raise type(exc)(f"{label}: {exc.message}", code=exc.code,
                                retryable=exc.retryable, retry_after=exc.retry_after,
                                detail=exc.detail) from exc
            try:
                return outcome(body), acct
            except AatError as exc:
                last = exc
                log.warning("%s: RunPod job %s attempt %d/%d: %s (%s)", label, body.get("id"),
                            attempt, attempts, exc.message, exc.code)
                if not exc.retryable:
                    break
        assert last is not None
        raise type(last)(
            f"{label} failed after {acct.attempts} RunPod job(s): {last.message}",
            code=last.code, retryable=False,
            detail={**last.detail, "remote_job_ids": acct.remote_job_ids},
        )

    async def _attempt(
        self, client: RunPodClient, payload: dict[str, Any], acct: CallAccounting, sync: bool,
        label: str, on_submitted: OnSubmitted | None,
    ) -> dict[str, Any]:
        """Submit once and wait for a terminal status (a vanished job reads as a failure)."""
        submitted_at = time.monotonic()
        if sync:
            first = await client.runsync(payload, wait_ms=RUNSYNC_WAIT_MS)
            job_id = str(first["id"])
        else:
            first, job_id = None, await self._submit(client, payload, acct)
        acct.remote_job_ids.append(job_id)
        acct.attempts += 1
        self._totals.runpod_jobs += 1
        try:
            await report_submitted(on_submitted, job_id)
            body = await client.wait(job_id, first, submitted_at)
        except asyncio.CancelledError:
            await cancel_quietly(client, job_id)
            raise
        except AatError as exc:
            if exc.code != "runpod_job_gone":
                await cancel_quietly(client, job_id)
                raise
            body = {"id": job_id, "status": "FAILED", "error": json.dumps(exc.to_dict())}
        except Exception:  # e.g. on_submitted could not record the id: stop paying for it
            await cancel_quietly(client, job_id)
            raise
        self._account(acct, body)
        return body

    async def _submit(self, client: RunPodClient, payload: dict[str, Any],
                      acct: CallAccounting) -> str:
        """``POST /run``, cancelling a job RunPod created after its tile was cancelled
        (:func:`~service.backends.runpod.client.submit_or_cancel`)."""
        def ambiguous() -> None:
            acct.possibly_billed += 1
            self._totals.possibly_billed += 1

        def late() -> None:  # it was created: count it (cancelled before it ran)
            self._totals.runpod_jobs += 1

        return await submit_or_cancel(client, payload, self._policy, on_ambiguous=ambiguous,
                                      on_late=late)

    def _account(self, acct: CallAccounting, body: dict[str, Any], share: int = 1) -> None:
        """Add RunPod job ``body``'s times and cost (``1/share`` of them: one tile's part of a
        job shared by ``share`` tiles) to ``acct`` and the totals."""
        delay, whole = int(body.get("delayTime") or 0), int(body.get("executionTime") or 0)
        execution = whole // share
        cost = whole / share / 1000.0 * self._s.runpod_price_per_gpu_second
        acct.delay_ms += delay
        acct.execution_ms += execution
        acct.cost_usd += cost
        self._totals.delay_ms += delay
        self._totals.execution_ms += execution
        self._totals.cost_usd += cost

    # ---- per-endpoint clients and limits ------------------------------------------------------

    def _client(self, kind: str) -> RunPodClient:
        self._same_loop()
        endpoint_id = self._endpoints.get(kind)
        if not endpoint_id:
            raise ConfigError(f"no RunPod {kind} endpoint configured; set "
                              f"RUNPOD_{kind.upper()}_ENDPOINT_ID (or turn {kind} off)")
        if kind not in self._clients:
            s = self._s
            self._clients[kind] = RunPodClient(
                s.runpod_base_url, endpoint_id, self._key,
                retry=RetryPolicy(s.runpod_http_attempts, s.runpod_backoff_base_s,
                                  s.runpod_backoff_max_s),
                poll=PollPolicy(s.runpod_poll_min_s, s.runpod_poll_max_s, s.runpod_ttl_s + 60.0),
                http=httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)),
                setting=f"RUNPOD_{kind.upper()}_ENDPOINT_ID",
            )
        return self._clients[kind]

    async def _limit(self, kind: str) -> EndpointLimit:
        """The in-flight limit of endpoint ``kind`` (see :mod:`~service.backends.runpod.limits`), up to date."""
        client = self._client(kind)
        if kind not in self._limits:
            self._limits[kind] = EndpointLimit(self._s.runpod_max_concurrency, client.health)
        limit = self._limits[kind]
        await limit.size()
        return limit

    def _same_loop(self) -> None:
        """httpx clients and slot pools belong to one event loop; start afresh on a new one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._clients, self._limits = loop, {}, {}
            self._groups = self._new_groups()


def request_key(payload: dict[str, Any]) -> str:
    """Stable idempotency key of a request: the same work always gets the same key."""
    canonical = json.dumps({k: v for k, v in payload.items() if k != "request_key"},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


async def _encode(image: np.ndarray) -> Any:
    """Encode off the event loop (a 1024² tile takes a while): lossless WebP or PNG, smaller."""
    return await asyncio.to_thread(encode_smallest, image)


async def _upscale_request(tiles: list[TileTask], options: RefineOptions) -> UpscaleRequest:
    style = options.ip_adapter_image
    return UpscaleRequest(
        tiles=[TileIn(tile_id=t.tile_id, image=await _encode(t.image), prompt=t.prompt,
                      seed=t.seed) for t in tiles],
        **options.diffusion_kwargs(),
        ip_adapter_image=await _encode(style) if style is not None else None,
        output_format="webp",  # lossless, smaller than PNG: results have a limit too
    )


async def _decode_tile(ref: Any, tile: TileTask, label: str) -> np.ndarray:
    image = await asyncio.to_thread(decode_to_array, ref)
    if image.shape != tile.image.shape:
        raise WorkerError(
            f"worker returned {image.shape} for {label} of shape {tile.image.shape}; "
            "the upscale worker is out of date, redeploy it",
            code="bad_worker_output",
        )
    return image


class _GroupFailed(Exception):
    """A shared RunPod job failed: the error, what the job cost, and whether to send each
    tile again alone (a retryable failure, or a request over the size limit)."""

    def __init__(self, label: str, error: AatError, accounting: CallAccounting) -> None:
        super().__init__(error.message)
        self.label, self.error, self.accounting = label, error, accounting
        self.retry_alone = error.retryable or error.code == "payload_too_large"

    def final(self) -> AatError:
        """The error every tile of the group gets (as one tile's final failure reads)."""
        e, ids = self.error, self.accounting.remote_job_ids
        return type(e)(f"{self.label} failed after {len(ids)} RunPod job(s): {e.message}",
                       code=e.code, retryable=False, detail={**e.detail, "remote_job_ids": ids})


def _shares(acct: CallAccounting, n: int) -> list[CallAccounting]:
    """Each of ``n`` tiles' part of one shared job: the same ids, attempts and wait, 1/n of
    the execution time and cost (the first tile takes the rounding and any possible bill)."""
    execution = acct.execution_ms // n
    return [CallAccounting(remote_job_ids=list(acct.remote_job_ids), delay_ms=acct.delay_ms,
                           execution_ms=execution + (acct.execution_ms - n * execution if i == 0
                                                     else 0),
                           attempts=acct.attempts, cost_usd=acct.cost_usd / n,
                           possibly_billed=acct.possibly_billed if i == 0 else 0)
            for i in range(n)]


def _merged(earlier: CallAccounting, later: CallAccounting) -> CallAccounting:
    return CallAccounting(remote_job_ids=earlier.remote_job_ids + later.remote_job_ids,
                          delay_ms=earlier.delay_ms + later.delay_ms,
                          execution_ms=earlier.execution_ms + later.execution_ms,
                          attempts=earlier.attempts + later.attempts,
                          cost_usd=earlier.cost_usd + later.cost_usd,
                          possibly_billed=earlier.possibly_billed + later.possibly_billed)


async def _settle(waiting: Waiting, work: Awaitable[RefineResult]) -> None:
    """Run ``work`` for one tile and hand its result or error to the tile's caller; the caller
    giving up cancels the work (and so its RunPod job)."""
    task = asyncio.ensure_future(work)
    await wait_shared(task, [waiting])
    if waiting.future.done() or task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        waiting.future.set_exception(exc)
    else:
        waiting.future.set_result(task.result())


def _bad_output(label: str, what: str) -> WorkerError:
    return WorkerError(
        f"{label}: the worker's output does not match the contract ({what}); "
        "redeploy a worker matching this service version",
        code="bad_worker_output",
    )


def _parse(model: type[M], output: Any, label: str) -> M:
    try:
        return model.model_validate(output)
    except ValidationError as exc:
        raise _bad_output(label, str(exc.errors()[0]["msg"])) from exc
