"""Turn a job row into the public job view (``JobPublic``) that every client sees."""

from __future__ import annotations

from service.core.animate import AnimateParams
from service.core.jobs import (
    JobCost,
    JobErrorView,
    JobInput,
    JobOutput,
    JobPublic,
    StageProgress,
    TargetSpec,
)
from service.core.params import UpscaleParams
from service.storage.records import JobRecord, StageCount

# Share of the whole job each stage stands for (progress is 0..1 over the job).
STAGE_WEIGHTS: dict[str, float] = {
    "load": 0.02, "pre_upscale": 0.08, "plan": 0.01, "caption": 0.14, "refine": 0.6,
    "blend": 0.05, "seam_fix": 0.04, "encode": 0.04, "deliver": 0.02,
    "animate": 0.9,  # an animate job: load, animate (one unit per frame), encode, deliver
}


def overall_progress(stages: dict[str, StageCount], finished: bool) -> float:
    if finished:
        return 1.0
    total = 0.0
    for name, weight in STAGE_WEIGHTS.items():
        st = stages.get(name)
        if st and st["total"]:
            total += weight * min(1.0, st["done"] / st["total"])
    return round(min(total, 0.99), 4)


def job_params(row: JobRecord) -> UpscaleParams:
    """An upscale job's parameters with its concrete seed filled in (an animate job's are
    :func:`animate_params`)."""
    if row.kind != "upscale":
        raise ValueError(f"job {row.id} is an {row.kind} job; it has no upscale parameters")
    params = UpscaleParams.model_validate(row.params)
    if params.seed is None and row.seed is not None:
        params = params.model_copy(update={"seed": row.seed})
    return params


def animate_params(row: JobRecord) -> AnimateParams | None:
    """An animate job's parameters; None for an upscale job."""
    return AnimateParams.model_validate(row.params) if row.kind == "animate" else None


def to_public(row: JobRecord) -> JobPublic:
    return JobPublic(
        id=row.id,
        status=row.status,
        stage=row.stage,
        progress=1.0 if row.status.value == "succeeded" else float(row.progress),
        stages={k: StageProgress(**v) for k, v in row.stages.items()},
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        kind=row.kind,
        params=job_params(row) if row.kind == "upscale" else None,
        animation=animate_params(row),
        backend=row.backend,
        input=JobInput(filename=row.filename, sha256=row.input_sha256, width=row.input_width,
                       height=row.input_height, format=row.input_format),
        target=TargetSpec.model_validate(row.target) if row.target else None,
        output=JobOutput.model_validate(row.output) if row.output else None,
        error=JobErrorView.model_validate(row.error) if row.error else None,
        cost=JobCost(runpod_jobs=row.cost_runpod_jobs, execution_s=row.cost_execution_s,
                     usd=row.cost_usd,
                     possibly_billed=sum(1 for r in row.remote_jobs if r.get("ambiguous"))),
        attempts=row.attempts,
        cancel_requested=bool(row.cancel_requested) and not row.status.terminal,
        rerun_of=row.rerun_of,
        retry_of=row.retry_of,
        urls=JobPublic.urls_for(row.id),
    )

