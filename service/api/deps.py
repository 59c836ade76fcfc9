"""Request dependencies: the app's settings, job service and GPU backend, and the auth guard.

The app factory stores its collaborators on ``app.state``; routers reach them only through
these functions, so a router never builds anything itself.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from service.api.auth import AUTHORIZED, authorize, bearer_scheme
from service.backends.base import GpuBackend
from service.core.animate import AnimateParams
from service.core.errors import BackendUnavailable
from service.core.jobs import JobPublic, JobStatus, TargetSpec
from service.core.params import UpscaleParams
from service.settings import Settings


class JobServicePort(Protocol):
    """What the API asks of ``service.jobs.service.JobService``."""

    def submit(self, data: bytes, *, filename: str, params: UpscaleParams,
               target: TargetSpec | None = None, idempotency_key: str | None = None,
               ) -> tuple[JobPublic, bool]: ...

    def submit_path(self, path: Path, *, filename: str | None = None,
                    params: UpscaleParams, target: TargetSpec | None = None,
                    idempotency_key: str | None = None) -> tuple[JobPublic, bool]: ...

    def submit_animation(self, data: bytes, *, filename: str, params: AnimateParams,
                         target: TargetSpec | None = None, idempotency_key: str | None = None,
                         ) -> tuple[JobPublic, bool]: ...

    def get(self, job_id: str) -> JobPublic: ...

    def list(self, *, status: JobStatus | None, limit: int, cursor: str | None,
             ) -> tuple[builtins.list[JobPublic], str | None]: ...

    def cancel(self, job_id: str) -> JobPublic: ...

    def result(self, job_id: str) -> tuple[Path, str]: ...

    def input_path(self, job_id: str) -> Path: ...

    def companion(self, job_id: str, name: str) -> Path: ...

    def add_style_image(self, data: bytes) -> str: ...

    def tiles(self, job_id: str) -> builtins.list[dict[str, Any]]: ...

    def set_tile_prompt(self, job_id: str, n: int, prompt: str) -> dict[str, Any]: ...

    def rerun(self, job_id: str, tiles: builtins.list[int]) -> JobPublic: ...

    def retry(self, job_id: str, *, idempotency_key: str | None = None
              ) -> tuple[JobPublic, bool]: ...

    def wait_for_change(self, job_id: str, version: int | None, timeout: float,
                        ) -> tuple[JobPublic, int]: ...

    def ready(self) -> dict[str, bool]: ...

    def checks(self) -> dict[str, tuple[bool, str]]: ...


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_jobs(request: Request) -> JobServicePort:
    jobs: JobServicePort = request.app.state.jobs
    return jobs


async def get_backend(request: Request) -> GpuBackend:
    backend: GpuBackend | None = request.app.state.backend
    if backend is None:
        raise BackendUnavailable(
            "no GPU backend configured; set RUNPOD_API_KEY and RUNPOD_UPSCALE_ENDPOINT_ID",
            retryable=False,
        )
    return backend


async def require_auth(
    request: Request,
    _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> None:
    """Guard for every route but ``/v1/health`` (401/403 problem+json); a request the
    :class:`~service.api.auth.AuthGate` already let through is not checked twice."""
    if not getattr(request.state, AUTHORIZED, False):
        authorize(request, request.app.state.settings)
