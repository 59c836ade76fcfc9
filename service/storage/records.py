"""Typed records of the job store: what a row holds (``JobRecord``, ``TileRecord``,
``DeliveryRecord``) and what a caller may change (``JobUpdate``, ``TileUpdate``).

Every column of ``tables.py`` is a typed field here (a test compares the two), so mypy sees a
column typo in a read (``row.stauts``) or in a write (``store.update(id, stgae=...)``). Records
are frozen: a change goes through the store, which returns the new record.

``JobUpdate`` has no ``status``: only :meth:`SqlJobStore.transition` (and the claim/cancel
functions beside it) changes a job's status, through ``check_transition``.

JSON columns keep their JSON shape (``params`` is an ``UpscaleParams`` dump, or an
``AnimateParams`` dump for ``kind='animate'``, ``target`` a
``TargetSpec`` dump, ``output``/``error`` the public view's); ``service.jobs.view`` turns them
into the public models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

from service.core.jobs import JobKind, JobStatus, Stage

TileStatus = Literal["pending", "captioning", "refining", "refined", "cached"]
Queue = Literal["embedded", "celery"]


class StageCount(TypedDict):
    """Per-stage progress as stored in ``jobs.stages``."""

    done: int
    total: int


class RemoteJob(TypedDict):
    """A RunPod job this job caused, as stored in ``jobs.remote_jobs``."""

    tile: int
    kind: str  # "caption" | "refine" | "seam_fix"
    id: str
    key: NotRequired[str]  # the request key (a resumed attempt only picks up the same request)
    ambiguous: NotRequired[bool]  # a /run that failed after RunPod may have queued it (no id)
    costed: NotRequired[list[int]]  # the tiles whose share of its cost is in the job's cost


class StoredError(TypedDict, total=False):
    """``jobs.error``: the structured error a failed job ends with."""

    code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a submission writes; the store fills in status, times, counters and version."""

    id: str
    filename: str
    input_sha256: str
    input_ext: str
    input_width: int
    input_height: int
    input_format: str
    params: dict[str, Any]
    seed: int | None = None
    target: dict[str, Any] | None = None
    dedupe_key: str | None = None
    idempotency_key: str | None = None
    backend: str | None = None
    queue: Queue | None = None
    kind: JobKind = "upscale"
    rerun_of: str | None = None  # the job a rerun was made from
    retry_of: str | None = None  # the failed or canceled job a retry submitted again


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One ``jobs`` row (module docstring)."""

    id: str
    status: JobStatus
    stage: Stage
    progress: float
    stages: dict[str, StageCount]
    version: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    filename: str
    input_sha256: str
    input_ext: str
    input_width: int
    input_height: int
    input_format: str
    params: dict[str, Any]
    seed: int | None
    target: dict[str, Any] | None
    dedupe_key: str | None
    idempotency_key: str | None
    attempts: int
    owner: str | None
    lease_until: float | None
    cancel_requested: bool
    remote_jobs: list[RemoteJob]
    timings: dict[str, float]
    cost_runpod_jobs: int
    cost_execution_s: float
    cost_usd: float
    output: dict[str, Any] | None
    output_sha256: str | None
    output_ext: str | None
    error: StoredError | None
    backend: str | None  # the GPU backend resolved at submit ("none", "runpod", "local")
    queue: Queue | None  # which executor runs it; None for jobs older than revision 0003
    kind: JobKind  # "upscale" (params: UpscaleParams) or "animate" (params: AnimateParams)
    rerun_of: str | None  # the job a rerun was made from (revision 0006)
    retry_of: str | None  # the failed or canceled job a retry submitted again (0006)

    @classmethod
    def from_row(cls, mapping: Mapping[Any, Any]) -> JobRecord:
        """From a SQL row: status as the enum, naive datetimes (SQLite) as UTC, JSON nulls as
        empty containers."""
        values = {f.name: mapping[f.name] for f in dataclasses.fields(cls)}
        values["status"] = JobStatus(values["status"])
        for key in ("created_at", "updated_at", "started_at", "finished_at"):
            values[key] = _utc(values[key])
        values["stages"] = values["stages"] or {}
        values["timings"] = values["timings"] or {}
        values["remote_jobs"] = values["remote_jobs"] or []
        return cls(**values)

    def changed(self, changes: Mapping[str, Any]) -> JobRecord:
        """This record with ``changes`` (already written) applied."""
        values = dict(changes)
        if "status" in values:
            values["status"] = JobStatus(values["status"])
        return dataclasses.replace(self, **values)


class JobUpdate(TypedDict, total=False):
    """The columns a caller may change, every one optional: ``store.update(job_id,
    stage="refine")``, or returned by a ``mutate`` function. Status, owner, attempts, start time
    and the cancel flag are the store's own (claim, transition, request_cancel)."""

    stage: Stage
    progress: float
    stages: dict[str, StageCount]
    finished_at: datetime | None
    lease_until: float | None
    remote_jobs: list[RemoteJob]
    timings: dict[str, float]
    cost_runpod_jobs: int
    cost_execution_s: float
    cost_usd: float
    output: dict[str, Any] | None
    output_sha256: str | None
    output_ext: str | None
    error: StoredError | None


@dataclass(frozen=True, slots=True)
class NewTile:
    """One tile of a job's plan: its box in the pre-upscaled image (half-open), and what a
    re-run carries over (caption, prompt, how often it was re-run; a kept animate frame also
    its result: done, with the seed and cache key of its cached cell)."""

    idx: int
    x: int
    y: int
    w: int
    h: int
    caption: str | None = None
    prompt: str | None = None
    rerun: int = 0
    status: TileStatus = "pending"
    seed: int | None = None
    cache_key: str | None = None


@dataclass(frozen=True, slots=True)
class TileRecord:
    """One ``tiles`` row."""

    job_id: str
    idx: int
    x: int
    y: int
    w: int
    h: int
    status: TileStatus
    caption: str | None
    prompt: str | None
    seed: int | None
    cache_key: str | None
    remote_job_id: str | None
    rerun: int
    timings: dict[str, float] | None = None  # see TileUpdate.timings

    @classmethod
    def from_row(cls, mapping: Mapping[Any, Any]) -> TileRecord:
        return cls(**{f.name: mapping[f.name] for f in dataclasses.fields(cls)})


def held_result(tile: NewTile | TileRecord) -> tuple[str, int] | None:
    """``(cache key, seed)`` of the result a tile or frame row holds (``refined``, or
    ``cached``: taken from the cache), else None. The row keeps that result until the tile is
    chosen for a rerun, whatever its prompt says now: a prompt edited since waits for that
    rerun. A rerun writes its kept rows with it (``service.jobs.service.rerun``) and the
    runners take it from the cache while it is there (the upscale refine loop, the animate
    runner's ``cached_cells``)."""
    if tile.status in ("refined", "cached") and tile.cache_key and tile.seed is not None:
        return tile.cache_key, tile.seed
    return None


class TileUpdate(TypedDict, total=False):
    """The tile columns the runner and the API change."""

    status: TileStatus
    caption: str | None
    prompt: str | None
    seed: int | None
    cache_key: str | None
    remote_job_id: str | None
    # seconds by stage (``caption``, ``refine``: wall time; ``caption_gpu``, ``refine_gpu``:
    # billed GPU time); merged key by key into the stored ones, so stages set theirs apart
    timings: dict[str, float]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """The last file this service wrote to ``repo``/``path`` (one ``deliveries`` row)."""

    repo: str
    path: str
    sha256: str
    job_id: str
    delivered_at: datetime

    @classmethod
    def from_row(cls, mapping: Mapping[Any, Any]) -> DeliveryRecord:
        values = {f.name: mapping[f.name] for f in dataclasses.fields(cls)}
        values["delivered_at"] = _utc(values["delivered_at"])
        return cls(**values)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone columns; every time here is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
