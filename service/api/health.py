"""Liveness and readiness: ``GET /v1/health`` (no auth) and ``GET /v1/ready``.

Liveness says only that the process answers. Readiness checks each dependency a job needs:
the job store, the broker or embedded executor, the job runners (alive, their jobs' last
heartbeat), the artifact store (a write read back) and the GPU endpoints (through the backend's
``health()``); it answers 503 when any of them is down, naming it. Requests that arrive while a
check runs get that check's answer: asking Celery runners waits up to 3 s for their replies,
and every open System page asks every 3 s after its last answer.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, require_auth
from service.api.problems import problem_responses
from service.backends.base import describe_health

log = logging.getLogger(__name__)
GPU_CHECK_TIMEOUT_S = 10.0

router = APIRouter(prefix="/v1", tags=["service"])


def package_version() -> str:
    try:
        return version("ai-assets-toolbox")
    except PackageNotFoundError:
        return "0+unknown"


class Health(BaseModel):
    status: str = "ok"
    version: str


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Ready(BaseModel):
    ready: bool
    checks: dict[str, Check]


@router.get("/health", response_model=Health, summary="Liveness (no auth)")
async def health() -> Health:
    return Health(version=package_version())


async def _gpu_check(app: FastAPI) -> Check:
    backend = app.state.backend
    if backend is None:
        return Check(ok=True, detail="no GPU backend configured: base upscale only")
    try:
        info: dict[str, Any] = await asyncio.wait_for(backend.health(), GPU_CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready"; say which
        log.warning("GPU backend health check failed: %s", exc)
        return Check(ok=False, detail=f"{backend.name}: {exc}")
    ok = bool(info.get("ok", True))
    return Check(ok=ok, detail=f"{backend.name}: {describe_health(info)}"[:500])


async def _parts_checks(jobs: JobServicePort) -> dict[str, Check]:
    """The job runners and the artifact store, as `aat doctor` words them."""
    try:
        found = await run_in_threadpool(jobs.checks)
    except Exception as exc:  # the store is down; the store check says so
        log.warning("runner and artifact checks failed: %s", exc)
        return {"runners": Check(ok=False, detail=f"not known: {str(exc)[:200]}")}
    return {name: Check(ok=ok, detail=detail[:500]) for name, (ok, detail) in found.items()}


async def _check_all(app: FastAPI, jobs: JobServicePort) -> Ready:
    app.state.metrics.ready_checks.inc()
    checks: dict[str, Check] = {}
    try:
        found = await run_in_threadpool(jobs.ready)
        for name, ok in found.items():
            checks[name] = Check(ok=bool(ok), detail="" if ok else f"{name} not reachable")
    except Exception as exc:
        checks["store"] = Check(ok=False, detail=str(exc)[:300])
    # asking Celery runners waits for their answers (seconds): alongside the GPU check
    parts, gpu = await asyncio.gather(_parts_checks(jobs), _gpu_check(app))
    checks.update(parts, gpu=gpu)
    return Ready(ready=all(c.ok for c in checks.values()), checks=checks)


@router.get("/ready", response_model=Ready,
            summary="Readiness of store, broker, runners, artifacts and GPU",
            dependencies=[Depends(require_auth)],
            responses={503: {"model": Ready, "description": "a dependency is down"},
                       **problem_responses(401, 403)})
async def ready(request: Request, response: Response,
                jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> Ready:
    app = request.app
    running: asyncio.Task[Ready] | None = getattr(app.state, "ready_check", None)
    if running is None or running.done():  # else share the check under way
        running = asyncio.ensure_future(_check_all(app, jobs))
        app.state.ready_check = running
    answer = await asyncio.shield(running)  # a caller going away does not stop the others'
    if not answer.ready:
        response.status_code = 503
    return answer
