"""The FastAPI app factory: ``create_app(settings, job_service=None, backend=None)``.

Assembles the routers (jobs, events, previews, plan, loras, health, metrics), the studio
page at ``/`` (:mod:`service.studio`), the problem+json error handlers, the auth gate
(:class:`~service.api.auth.AuthGate`), request metrics and, only when origins are configured,
CORS. The OpenAPI document (``/openapi.json``) needs the token like the API; its interactive
page (``/docs``) is a studio page. Collaborators live on
``app.state`` (``settings``, ``jobs``, ``backend``, ``metrics``). Without a ``job_service`` the
factory builds one from the settings at start-up and starts its executor (embedded threads or
the Celery dispatcher) and stops it at shutdown; a service passed in is the caller's to run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from service.api import (
    animations,
    events,
    health,
    jobs,
    lora_imports,
    lora_uploads,
    loras,
    metrics,
    plan,
    previews,
    styles,
)
from service.api.auth import AuthGate
from service.api.deps import JobServicePort, require_auth
from service.api.health import package_version
from service.api.metrics import ApiMetrics, MetricsMiddleware
from service.api.problems import add_problem_schema, install_problem_handlers
from service.backends.base import GpuBackend
from service.backends.factory import make_backend
from service.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Upscale game art with tiled SDXL diffusion. Submit an image, follow its progress, fetch "
    "the result; the contract is docs/api/contract.md. Auth: `Authorization: Bearer "
    "<AAT_API_TOKEN>` (or the studio's session cookie) on every route except `/v1/health`; "
    "state-changing requests from another site's page are refused. Errors are "
    "application/problem+json with a stable `code`."
)


def _lifespan(job_service: JobServicePort | None, backend: GpuBackend | None,
              owns_backend: bool) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        lora_uploads.sweep_abandoned(settings)  # uploads a closed tab left behind
        owned = None
        if job_service is None:
            from service.jobs.service import build_job_service

            owned = build_job_service(settings)
            owned.start()
            app.state.jobs = owned
        app.state.metrics.watch_store(app.state.jobs)
        await lora_imports.resume_following(app)
        log.info("API ready (backend %s)", backend.name if backend else "none")
        try:
            yield
        finally:
            await lora_imports.stop_following(app)
            if owned is not None:
                owned.stop()
            if owns_backend and backend is not None:
                await backend.aclose()

    return lifespan


def create_app(settings: Settings, job_service: JobServicePort | None = None,
               backend: GpuBackend | None = None) -> FastAPI:
    """The API for ``settings``; ``job_service``/``backend`` default to ones built from them."""
    owns_backend = backend is None
    if backend is None:
        backend = make_backend(settings)
    app = FastAPI(
        title="AI Assets Toolbox API", version=package_version(), description=DESCRIPTION,
        lifespan=_lifespan(job_service, backend, owns_backend),
        docs_url=None, redoc_url=None, openapi_url=None,  # served below, behind the auth
    )
    app.state.settings = settings
    app.state.jobs = job_service
    app.state.backend = backend
    app.state.metrics = ApiMetrics()
    install_problem_handlers(app)
    add_problem_schema(app)
    for module in (health, jobs, animations, events, previews, plan, styles, lora_uploads,
                   lora_imports, loras, metrics):
        app.include_router(module.router)
    app.add_api_route("/openapi.json", lambda: JSONResponse(app.openapi()),
                      include_in_schema=False, dependencies=[Depends(require_auth)])
    app.add_middleware(AuthGate)  # inside CORS: a preflight is answered without a token
    from service.studio.routes import install as install_studio

    install_studio(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Last-Event-ID"],
                           expose_headers=["Location", "Retry-After"])
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
