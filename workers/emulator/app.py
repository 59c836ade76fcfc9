"""The HTTP face of the RunPod emulator: RunPod's job API under ``/v2/{endpoint_id}/...``.

Routes (as on ``https://api.runpod.ai/v2``): ``POST /run``, ``POST /runsync?wait=ms``,
``GET /status/{id}``, ``POST /cancel/{id}``, ``POST /retry/{id}``, ``POST /purge-queue``,
``GET /health``; bearer auth (constant-time compare; 401 otherwise), 10 MB ``/run`` and 20 MB
``/runsync`` body limits (413), per-route rate limits and injected 429/5xx, unknown or
expired ids 404.
Provisioning (RunPod's management REST API: templates, serverless endpoints) is in
:mod:`workers.emulator.provision`, mounted on the same app.
Test hooks outside the RunPod surface: ``GET /_emulator/stats`` (every endpoint's counters),
``GET /_emulator/stats/{endpoint_id}``, ``GET /_emulator/files/{name}`` (images the
public-endpoint stand-in answers with) and ``POST /_emulator/scale/{endpoint_id}?workers=N``
(autoscaling by hand; an endpoint may start at zero workers, like an idle one).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from workers.emulator.files import SHELF
from workers.emulator.provision import add_provisioning_routes
from workers.emulator.state import RUN_LIMIT, RUNSYNC_LIMIT, Endpoint, EndpointConfig, Job


class _Reject(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def create_app(configs: dict[str, EndpointConfig], api_key: str) -> FastAPI:
    """A FastAPI app serving every endpoint in ``configs`` (keyed by endpoint id)."""
    endpoints: dict[str, Endpoint] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for eid, cfg in configs.items():
            endpoints[eid] = Endpoint(eid, cfg)
            endpoints[eid].start()
        yield
        await asyncio.gather(*(ep.stop() for ep in endpoints.values()))

    app = FastAPI(title="RunPod emulator", lifespan=lifespan, docs_url=None, redoc_url=None)
    expected = f"Bearer {api_key}".encode()

    async def provisioned(endpoint_id: str) -> None:
        """An endpoint created through the REST routes serves jobs with the echo worker."""
        from workers.emulator.echo import handler

        endpoints[endpoint_id] = Endpoint(endpoint_id, EndpointConfig(handler=handler))
        endpoints[endpoint_id].start()

    async def deprovisioned(endpoint_id: str) -> None:
        ep = endpoints.pop(endpoint_id, None)
        if ep is not None:
            await ep.stop()

    add_provisioning_routes(app, api_key, on_create=provisioned, on_delete=deprovisioned)

    @app.exception_handler(_Reject)
    async def _reject(_: Request, exc: _Reject) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    def gate(request: Request, endpoint_id: str, route: str) -> Endpoint:
        """Auth, endpoint lookup, rate limits and injected HTTP faults, in that order."""
        given = request.headers.get("authorization", "").encode()
        ep = endpoints.get(endpoint_id)
        if not hmac.compare_digest(given, expected):
            if ep is not None:
                ep.counts["rej_401"] += 1
            raise _Reject(401, "Unauthorized")
        if ep is None:
            raise _Reject(404, f"endpoint {endpoint_id} not found")
        if not ep.rates.allow(route):
            ep.counts["rej_429"] += 1
            raise _Reject(429, "Too Many Requests",
                          {"Retry-After": str(max(1, math.ceil(ep.rates.retry_after(route))))})
        fault = ep.faults.draw_http()
        if fault == "429":
            ep.counts["rej_429"] += 1
            after = ep.faults.retry_after_s
            headers = {"Retry-After": f"{after:g}"} if after is not None else {}
            raise _Reject(429, "Too Many Requests", headers)
        if fault == "5xx":
            ep.counts["rej_5xx"] += 1
            code = (500, 502, 503)[ep.counts["rej_5xx"] % 3]
            raise _Reject(code, "injected server error")
        return ep

    async def read_body(request: Request, ep: Endpoint, limit: int) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > limit:
            ep.counts["rej_413"] += 1
            raise _Reject(413, f"request body of {len(raw)} bytes exceeds the {limit} byte limit")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            ep.counts["rej_400"] += 1
            raise _Reject(400, "request body is not valid JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            ep.counts["rej_400"] += 1
            raise _Reject(400, "request body needs an 'input' object")
        return body

    def job_or_404(ep: Endpoint, job_id: str) -> Job:
        job = ep.get(job_id)
        if job is None:
            raise _Reject(404, f"job {job_id} not found")
        return job

    @app.post("/v2/{endpoint_id}/run")
    async def run(endpoint_id: str, request: Request) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "run")
        job = ep.submit(await read_body(request, ep, RUN_LIMIT), sync=False)
        if ep.config.run_reply_delay_s:  # a slow network: the job exists before its id arrives
            await asyncio.sleep(ep.config.run_reply_delay_s)
        if ep.faults.draw("ghost"):  # queued, but the client is told otherwise
            ep.counts["rej_5xx"] += 1
            raise _Reject(502, "Bad Gateway")
        return {"id": job.id, "status": "IN_QUEUE"}

    @app.post("/v2/{endpoint_id}/runsync")
    async def runsync(endpoint_id: str, request: Request, wait: int = 90_000) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "runsync")
        job = ep.submit(await read_body(request, ep, RUNSYNC_LIMIT), sync=True)
        wait_s = min(max(wait, 1000), 300_000) / 1000.0
        with suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), wait_s)
        return job.public()

    @app.get("/v2/{endpoint_id}/status/{job_id}")
    async def status(endpoint_id: str, job_id: str, request: Request) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "status")
        ep.counts["status_polls"] += 1
        return job_or_404(ep, job_id).public()

    @app.post("/v2/{endpoint_id}/cancel/{job_id}")
    async def cancel(endpoint_id: str, job_id: str, request: Request) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "cancel")
        job = job_or_404(ep, job_id)
        was_terminal = job.status in ("COMPLETED", "FAILED", "TIMED_OUT")
        ep.cancel(job)
        return {"id": job.id, "status": job.status if was_terminal else "CANCELLED"}

    @app.post("/v2/{endpoint_id}/retry/{job_id}")
    async def retry(endpoint_id: str, job_id: str, request: Request) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "retry")
        job = job_or_404(ep, job_id)
        if not ep.retry(job):
            raise _Reject(400, f"job {job_id} is {job.status}; only FAILED or TIMED_OUT retry")
        return {"id": job.id, "status": "IN_QUEUE"}

    @app.post("/v2/{endpoint_id}/purge-queue")
    async def purge(endpoint_id: str, request: Request) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "purge-queue")
        return {"removed": ep.purge(), "status": "completed"}

    @app.get("/v2/{endpoint_id}/health")
    async def health(endpoint_id: str, request: Request) -> dict[str, Any]:
        ep = gate(request, endpoint_id, "health")
        ep.counts["health_calls"] += 1
        return ep.health()

    @app.post("/_emulator/scale/{endpoint_id}")
    async def scale(endpoint_id: str, workers: int) -> dict[str, Any]:
        if endpoint_id not in endpoints or not 0 <= workers <= 1024:
            raise _Reject(404 if endpoint_id not in endpoints else 400,
                          f"endpoint {endpoint_id} unknown or workers out of 0..1024")
        endpoints[endpoint_id].scale(workers)
        return endpoints[endpoint_id].health()

    @app.get("/_emulator/files/{name}")
    async def file(name: str) -> Response:  # the public-endpoint stand-in's output images
        data = SHELF.get(name)
        if data is None:
            raise _Reject(404, f"file {name} not found")
        return Response(data, media_type="image/png")

    @app.get("/_emulator/stats")
    async def all_stats() -> dict[str, Any]:
        return {eid: ep.stats() for eid, ep in endpoints.items()}

    @app.get("/_emulator/stats/{endpoint_id}")
    async def one_stats(endpoint_id: str) -> dict[str, Any]:
        if endpoint_id not in endpoints:
            raise _Reject(404, f"endpoint {endpoint_id} not found")
        return endpoints[endpoint_id].stats()

    return app
