"""Prometheus metrics: ``GET /metrics``.

Two sources, one page:

* **The job store**, read at scrape time (so the figures are right whichever process ran the
  job, embedded executor or Celery runners on other hosts): jobs by status, tiles by status,
  stage durations of recently finished jobs, failures by error code (RunPod errors among them),
  RunPod jobs, GPU seconds and estimated cost.
* **This API process**: HTTP requests by route and status, request latency, and submissions
  (created vs. deduplicated).

Each app has its own registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import require_auth
from service.api.problems import problem_responses

log = logging.getLogger(__name__)

RECENT_JOBS = 1000  # stage durations are summed over this many most recently finished jobs
_BACKEND_CODES = ("backend_", "worker_")


class ApiMetrics:
    """The registry of one app and the metrics the API process itself records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("aat_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("aat_http_request_seconds", "HTTP request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.submissions = Counter("aat_submissions", "POST /v1/jobs by result",
                                   ["result"], registry=self.registry)
        self.ready_checks = Counter(
            "aat_ready_checks", "readiness checks run (GET /v1/ready requests that arrive "
            "while one runs share it)", registry=self.registry)

    def watch_store(self, jobs: Any) -> None:
        """Add the job-store collector (needs a job service with a SQL ``store``)."""
        engine = getattr(getattr(jobs, "store", None), "engine", None)
        if engine is not None:
            self.registry.register(StoreCollector(engine))


class StoreCollector:
    """Reads aggregates from the job store at scrape time (see module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with self.engine.connect() as conn:
                yield from self._collect(conn)
        except Exception:  # a scrape must not fail because the store hiccuped
            log.warning("metrics: job store not readable", exc_info=True)

    def _collect(self, conn: Any) -> Iterator[Metric]:
        from service.core.jobs import JobStatus
        from service.storage.tables import jobs, tiles

        by_status = GaugeMetricFamily("aat_jobs", "jobs in the store by status", labels=["status"])
        counts = dict(conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())
        for status in JobStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status

        tile_g = GaugeMetricFamily("aat_tiles", "tiles in the store by status", labels=["status"])
        for status, n in conn.execute(select(tiles.c.status, func.count()).group_by(tiles.c.status)):
            tile_g.add_metric([str(status)], n)
        yield tile_g

        runpod_jobs, exec_s, usd = conn.execute(select(
            func.coalesce(func.sum(jobs.c.cost_runpod_jobs), 0),
            func.coalesce(func.sum(jobs.c.cost_execution_s), 0.0),
            func.coalesce(func.sum(jobs.c.cost_usd), 0.0))).one()
        yield _counter("aat_runpod_jobs", "RunPod jobs submitted for all stored jobs", runpod_jobs)
        yield _counter("aat_gpu_execution_seconds", "RunPod execution seconds billed", exec_s)
        yield _counter("aat_cost_usd", "estimated RunPod cost in USD", usd)
        yield from _errors(conn, jobs)
        yield from _stage_durations(conn, jobs)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc)
    fam.add_metric([], float(value))
    return fam


def _errors(conn: Any, jobs: Any) -> Iterator[Metric]:
    failed = GaugeMetricFamily("aat_job_errors", "failed jobs by error code", labels=["code"])
    runpod = GaugeMetricFamily("aat_runpod_errors", "failed jobs whose error came from the GPU "
                               "backend (RunPod), by code", labels=["code"])
    codes: dict[str, int] = {}
    for (error,) in conn.execute(select(jobs.c.error).where(jobs.c.status == "failed")):
        code = str((error or {}).get("code", "unknown")) if isinstance(error, dict) else "unknown"
        codes[code] = codes.get(code, 0) + 1
    for code, n in sorted(codes.items()):
        failed.add_metric([code], n)
        if code.startswith(_BACKEND_CODES):
            runpod.add_metric([code], n)
    yield failed
    yield runpod


def _stage_durations(conn: Any, jobs: Any) -> Iterator[Metric]:
    query = (select(jobs.c.timings).where(jobs.c.finished_at.is_not(None))
             .order_by(jobs.c.finished_at.desc()).limit(RECENT_JOBS))
    sums: dict[str, list[float]] = {}
    for (timings,) in conn.execute(query):
        for stage, seconds in (timings or {}).items():
            if isinstance(seconds, int | float):
                acc = sums.setdefault(str(stage), [0.0, 0.0])
                acc[0] += float(seconds)
                acc[1] += 1
    fam = GaugeMetricFamily("aat_stage_seconds_recent", "seconds spent per stage, summed over "
                            f"the {RECENT_JOBS} most recently finished jobs",
                            labels=["stage", "stat"])
    for stage, (total, count) in sorted(sums.items()):
        fam.add_metric([stage, "sum"], total)
        fam.add_metric([stage, "count"], count)
    yield fam


class MetricsMiddleware:
    """Counts requests and their latency by route template (pure ASGI, cheap)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            if not route.endswith("/events"):
                self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def count_submission(request: Request, created: bool) -> None:
    metrics: ApiMetrics = request.app.state.metrics
    metrics.submissions.labels("created" if created else "duplicate").inc()


router = APIRouter(tags=["service"])


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(require_auth)],
            response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"},
                       **problem_responses(401, 403)})
def metrics_page(request: Request) -> Response:
    metrics: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
