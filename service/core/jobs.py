"""Job vocabulary: status lifecycle, stages, delivery target and the public job view.

The lowest layer every job-aware module shares: the job store (``service.storage``), the job
runner (``service.jobs``), the API and the CLI all speak these names, so none of them has to
import another to agree on what a job is.

Lifecycle (one function, :func:`check_transition`, refuses illegal moves)::

    queued ──► running ──► succeeded
      │          │ ├─────► failed
      │          │ └─────► canceled
      │          └──► queued        (a runner died: the job is re-claimed)
      └──► canceled

Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from service.core.animate import AnimateParams
from service.core.errors import IllegalTransition
from service.core.params import NamingMode, UpscaleParams

PIPELINE_VERSION = "1"
# What ``service.jobs.service.new_job_id`` makes: "j_" + 12 hex of ms + 12 random hex.
JOB_ID_PATTERN = re.compile(r"^j_[0-9a-f]{24}$")


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of a job id (a paging cursor is one)."""
    return bool(JOB_ID_PATTERN.match(value))


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.canceled}),
    JobStatus.running: frozenset(
        {JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.queued}
    ),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.canceled: frozenset(),
}


def check_transition(current: JobStatus, new: JobStatus) -> None:
    """Raise :class:`IllegalTransition` unless ``current → new`` is in the lifecycle."""
    if new not in _ALLOWED[current]:
        raise IllegalTransition(f"a {current.value} job cannot become {new.value}")


Stage = Literal[
    "queued", "load", "pre_upscale", "plan", "caption", "refine", "blend", "seam_fix",
    "encode", "deliver", "done", "animate",
]

STAGES: tuple[Stage, ...] = get_args(Stage)


def stage_name(name: str) -> Stage:
    """``name`` as a :data:`Stage`; a name outside the list is a programming error."""
    for stage in STAGES:
        if stage == name:
            return stage
    raise ValueError(f"unknown job stage {name!r}; stages are {', '.join(STAGES)}")


class TargetSpec(BaseModel):
    """Where the result lands: a named repo from settings and a path inside it."""

    model_config = ConfigDict(extra="forbid")
    repo: str = Field(min_length=1, max_length=100)
    path: str = Field(min_length=1, max_length=1000)  # the source's place, relative to the repo
    naming: NamingMode = "suffix"
    mirror_dir: str | None = Field(default=None, max_length=1000)  # for naming="mirror"
    overwrite: bool = Field(default=False, description=(
        "Replace a file at the result path that this service did not deliver (or that was "
        "edited since); without it such a file is kept and the job fails with "
        "delivery_conflict."))


class StageProgress(BaseModel):
    done: int = 0
    total: int = 0


class JobInput(BaseModel):
    filename: str
    sha256: str
    width: int
    height: int
    format: str


class JobOutput(BaseModel):
    width: int
    height: int
    format: str
    sha256: str
    upscaler: str
    backend: str
    delivered_path: str | None = None
    warnings: list[str] = Field(default_factory=list, description=(
        "What the user should know about the result, e.g. transparency composited onto a "
        "matte for a format without alpha."))
    notes: list[str] = Field(default_factory=list, description=(
        "Engine write-back: Unity .meta kept/scaled, Godot .import left alone, sheet JSON "
        "written, Git LFS routing."))
    sidecars: list[str] = Field(default_factory=list, description=(
        "Engine metadata files written beside the delivered image (repo-relative)."))
    lfs: bool = Field(default=False, description=(
        "The delivered path is routed to Git LFS by the repo's .gitattributes."))
    frames: int | None = Field(default=None, description=(
        "An animate job: the number of frames in the sheet."))
    files: dict[str, str] = Field(default_factory=dict, description=(
        "An animate job: the sheet's companion files (Aseprite .json, Godot .tres, .webp "
        "preview) by file name -> sha256, downloadable from /v1/jobs/{id}/files/{name}."))


class JobErrorView(BaseModel):
    code: str
    message: str
    retryable: bool = False


class JobCost(BaseModel):
    runpod_jobs: int = Field(default=0, description="RunPod jobs this job caused, counted the "
                             "moment each was submitted (re-sent and resumed ones included)")
    possibly_billed: int = Field(default=0, description="/run submissions that failed after "
                                 "RunPod may have queued them anyway (a 5xx or a lost reply): "
                                 "possibly billed, not in runpod_jobs")
    execution_s: float = 0.0
    usd: float = 0.0


JobKind = Literal["upscale", "animate"]


class JobPublic(BaseModel):
    """The job as the REST API, CLI, watcher and plugins see it (docs/api/contract.md)."""

    id: str
    status: JobStatus
    stage: Stage = "queued"
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    stages: dict[str, StageProgress] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    kind: JobKind = Field(default="upscale", description=(
        "upscale (params) or animate (animation: a sprite into a spritesheet)"))
    params: UpscaleParams | None = Field(default=None, description=(
        "An upscale job's parameters, every `auto` resolved and the seed it runs with filled "
        "in; null for an animate job (its parameters are in `animation`)."))
    animation: AnimateParams | None = Field(default=None, description=(
        "An animate job's parameters (null for upscale jobs)."))
    backend: str | None = Field(default=None, description=(
        "The GPU backend the job runs on (none, runpod, local), resolved when it was submitted "
        "like every `auto` in params; null for jobs stored by an older version."))
    input: JobInput
    target: TargetSpec | None = None
    output: JobOutput | None = None
    error: JobErrorView | None = None
    cost: JobCost = Field(default_factory=JobCost)
    attempts: int = 0
    cancel_requested: bool = False  # a running job asked to stop: it ends canceled soon
    rerun_of: str | None = Field(default=None, description=(
        "The id of the job this one re-runs (made by POST /v1/jobs/{id}/rerun); null "
        "otherwise."))
    retry_of: str | None = Field(default=None, description=(
        "The id of the failed or canceled job this one submits again (made by "
        "POST /v1/jobs/{id}/retry); null otherwise."))
    urls: dict[str, str] = Field(default_factory=dict)

    @staticmethod
    def urls_for(job_id: str) -> dict[str, Any]:
        base = f"/v1/jobs/{job_id}"
        return {"self": base, "result": f"{base}/result", "events": f"{base}/events",
                "cancel": f"{base}/cancel"}


# A tile's state as clients see it (tile rows store pending/captioning/refining/refined/cached).
TILE_STATES = ("queued", "captioning", "refining", "done", "cached", "failed", "canceled")
_TILE_STATE = {"pending": "queued", "captioning": "captioning", "refining": "refining",
               "refined": "done", "cached": "cached"}


def tile_state(status: str | None, job_status: str) -> str:
    """``queued | captioning | refining | done | cached | failed | canceled`` for one tile of a
    job in ``job_status``: the unfinished tiles of a failed job are ``failed``, of a canceled
    job ``canceled`` (whether they were being refined or waiting: none of them will run)."""
    state = _TILE_STATE.get(status or "pending", "queued")
    if state in ("done", "cached"):
        return state
    if job_status in ("failed", "canceled"):
        return job_status
    if job_status == "succeeded":  # succeeded without a GPU: nothing to refine
        return "done"
    return state


class JobList(BaseModel):
    """One page of jobs, newest first; ``next_cursor`` asks for the next page."""

    items: list[JobPublic]
    next_cursor: str | None = None
