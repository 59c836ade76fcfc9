"""The `GpuBackend` port: what the orchestrator asks of a GPU (captions, refined tiles, LoRAs).

Implementations: ``RunPodBackend`` (``service/backends/runpod/``, remote serverless workers)
and ``LocalBackend`` (``service/backends/local.py``, the worker pipelines in-process on a local
GPU); :func:`service.backends.factory.make_backend` builds the configured one. Without a GPU
backend the pipeline skips captioning and refining (backend ``none``).

All calls are async and work on one tile at a time; the pipeline runs up to
``max_concurrency()`` of them at once. Images are ``(H, W, 3) uint8`` RGB numpy arrays.
Failures raise :class:`service.core.errors.BackendError` subclasses with ``code``/``retryable``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import ConfigDict

from service.core.contracts import CivitaiVersion, ImportModelRequest, ImportProgress, ModelInfo
from service.core.errors import AatError
from service.core.params import DiffusionSettings


class RefineOptions(DiffusionSettings):
    """Job-wide diffusion settings plus the decoded style image (per-tile prompt and seed
    travel with the tile)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    ip_adapter_image: np.ndarray | None = None  # (H, W, 3) uint8


@dataclass(frozen=True)
class TileTask:
    tile_id: str
    image: np.ndarray  # (H, W, 3) uint8
    prompt: str = ""  # caption or user prompt for this tile, appended to the global prompt
    seed: int = 0


@dataclass
class CallAccounting:
    """What one remote call cost: RunPod job ids and timings (ms as RunPod reports them)."""

    remote_job_ids: list[str] = field(default_factory=list)
    delay_ms: int = 0
    execution_ms: int = 0
    attempts: int = 0
    cost_usd: float = 0.0
    # ``/run`` attempts that failed after RunPod may have queued the job (a 5xx or a lost
    # reply): possibly billed, with no id to cancel or count (docs/architecture/03-runpod.md)
    possibly_billed: int = 0


@dataclass
class RefineResult:
    tile_id: str
    image: np.ndarray  # (H, W, 3) uint8, same size as the input tile
    seed_used: int
    accounting: CallAccounting = field(default_factory=CallAccounting)


@dataclass
class CaptionResult:
    tile_id: str
    caption: str
    accounting: CallAccounting = field(default_factory=CallAccounting)


@dataclass
class RemoteImport:
    """Where a LoRA import by URL running on the GPU side stands (``import_status``)."""

    state: Literal["queued", "running", "done", "failed", "canceled"]
    progress: ImportProgress | None = None  # while running: what the worker last reported
    model: ModelInfo | None = None  # done
    error: AatError | None = None  # failed
    version: CivitaiVersion | None = None  # done: the CivitAI version imported


# Called with the remote job id as soon as a call is submitted, so a resumed job can re-poll.
# A coroutine it returns is awaited before the job is waited on (:func:`report_submitted`).
OnSubmitted = Callable[[str], Awaitable[None] | None]


async def report_submitted(on_submitted: OnSubmitted | None, remote_id: str) -> None:
    """Hand a just-submitted remote job's id to ``on_submitted`` and wait until it is recorded
    (a coroutine it returns is awaited), before the backend waits on the job. A callback that
    raises (the id could not be recorded: the job was canceled, or the runner lost its lease
    and must not write into the job) makes the backend cancel that remote job: nobody could
    pick it up, so it is not paid for."""
    if on_submitted is None:
        return
    pending = on_submitted(remote_id)
    if pending is not None:
        await pending


class GpuBackend(Protocol):
    name: str

    async def max_concurrency(self) -> int: ...

    async def caption(
        self, tile_id: str, image: np.ndarray, *, instruction: str | None = None,
        max_new_tokens: int = 48, on_submitted: OnSubmitted | None = None,
    ) -> CaptionResult: ...

    async def refine(
        self, tile: TileTask, options: RefineOptions, *, on_submitted: OnSubmitted | None = None,
    ) -> RefineResult: ...

    async def resume(self, remote_id: str, tile: TileTask) -> RefineResult | None:
        """The result of the refine of ``tile`` an earlier, interrupted attempt submitted as
        ``remote_id`` (the id ``on_submitted`` reported), or None when this backend cannot pick
        it up; the pipeline then refines the tile afresh. A backend without remote jobs
        (``local``) always returns None."""
        ...

    async def resume_caption(self, remote_id: str, tile_id: str) -> CaptionResult | None:
        """The caption an earlier, interrupted attempt submitted as ``remote_id``, or None
        (then the tile is captioned afresh); like :meth:`resume`."""
        ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def upload_model(self, filename: str, data: bytes) -> ModelInfo: ...

    async def delete_model(self, name: str) -> None: ...

    async def start_import(self, request: ImportModelRequest) -> str:
        """Start the worker downloading a LoRA by URL onto its volume; returns at once with
        the remote id to ask :meth:`import_status` about (the bytes never pass through here)."""
        ...

    async def import_status(self, remote_id: str) -> RemoteImport: ...

    async def cancel_import(self, remote_id: str) -> None:
        """Stop the import: the worker removes what it had downloaded, nothing is kept."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def describe_health(info: dict[str, Any]) -> str:
    """A backend's ``health()`` in words (`aat doctor`, ``GET /v1/ready``, the studio's System
    page): RunPod endpoints as ``upscale abc123: 2 workers
    idle, 0 running; 0 jobs queued, 0 in progress``, other backends as ``key value`` pairs."""
    endpoints = info.get("endpoints")
    if isinstance(endpoints, dict):
        if not endpoints:
            return "no endpoints configured"
        return "; ".join(describe_endpoint(kind, ep) for kind, ep in endpoints.items()
                         if isinstance(ep, dict))
    flat = [f"{k.replace('_', ' ')} {v}" for k, v in sorted(info.items())
            if k not in ("ok", "backend", "status") and not isinstance(v, dict | list)]
    return ", ".join(flat) or str(info.get("status", "ok"))


def describe_endpoint(kind: str, ep: dict[str, Any]) -> str:
    """One RunPod endpoint's ``/health`` (with its ``id``) in words."""
    workers, jobs = _dict(ep.get("workers")), _dict(ep.get("jobs"))
    parts = [f"{kind} endpoint {ep.get('id', '?')}:"]
    parts.append(f"workers {workers.get('idle', 0)} idle, {workers.get('running', 0)} running;")
    parts.append(f"jobs {jobs.get('inQueue', 0)} queued, {jobs.get('inProgress', 0)} in "
                 f"progress, {jobs.get('failed', 0)} failed")
    return " ".join(parts)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
