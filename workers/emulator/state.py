"""One emulated RunPod serverless endpoint: its jobs, queue, workers, retention and counters.

Behaviour follows RunPod's documented job API and job states: jobs go
IN_QUEUE → IN_PROGRESS → COMPLETED | FAILED | CANCELLED | TIMED_OUT; ``N`` workers take jobs
from one FIFO queue; a handler (sync handlers run in a thread, async ones on the loop) gets
``{"id", "input"}`` plus any ``s3Config``; its return value becomes ``output`` the way the
runpod SDK does it (``"error"`` → FAILED, ``{}`` → no output, a non-string error or an output
over the size limit → COMPLETED without output, an exception → FAILED with the SDK's JSON
error string; ``workers.common.progress.report`` inside a handler shows on ``/status`` as
an IN_PROGRESS job's ``output``, like RunPod's ``progress_update``).
``policy.executionTimeout`` ends a run TIMED_OUT; ``policy.ttl`` deletes a job; results are
deleted after the retention time. Everything lives on one asyncio loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.core.contracts import WorkerErrorData
from workers.common import progress
from workers.emulator.faults import Faults, RateLimits

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RUN_LIMIT = 10 * 1024 * 1024
RUNSYNC_LIMIT = 20 * 1024 * 1024


@dataclass
class EndpointConfig:
    """How one emulated endpoint behaves."""

    handler: Handler
    workers: int = 2  # 0 = scaled to zero: jobs wait until scale() adds workers
    latency_s: float = 0.0  # simulated GPU time per tile (per job without tiles), before the handler
    faults: Faults = field(default_factory=Faults)
    retention_s: float = 1800.0  # /run results
    sync_retention_s: float = 60.0  # /runsync results
    execution_timeout_s: float = 600.0  # endpoint default when the policy sets none
    ttl_s: float = 86400.0
    sweep_s: float = 5.0  # how often results past retention/TTL are dropped unasked
    rate_limits: dict[str, int] | None = None  # requests per route per window; None = no limit
    rate_window_s: float = 10.0
    run_reply_delay_s: float = 0.0  # /run creates the job at once, then answers this much later
    clock: Callable[[], float] = time.monotonic  # seconds; retention and TTL are measured in it


@dataclass
class Job:
    id: str
    input: dict[str, Any]
    policy: dict[str, Any]
    sync: bool
    extra: dict[str, Any]  # other top-level request fields passed to the worker (s3Config)
    submitted_at: float = field(default_factory=time.monotonic)
    status: str = "IN_QUEUE"
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    has_output: bool = False
    error: str | None = None
    worker_id: str | None = None
    delay_ms: int = 0
    execution_ms: int = 0
    cancel_requested: bool = False
    progress: Any = None  # the handler's latest progress update (workers.common.progress)
    task: asyncio.Task[Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def public(self) -> dict[str, Any]:
        """The ``/status`` body."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None:
            body["delayTime"] = self.delay_ms
            body["workerId"] = self.worker_id
        if self.status in TERMINAL:
            body["executionTime"] = self.execution_ms
        if self.has_output:
            body["output"] = self.output
        elif self.status == "IN_PROGRESS" and self.progress is not None:
            body["output"] = self.progress  # as RunPod shows a progress_update
        if self.error is not None:
            body["error"] = self.error
        return body


def sdk_error(exc: BaseException, worker_id: str) -> str:
    """The JSON error string runpod-python stores for an uncaught handler exception."""
    return json.dumps({
        "error_type": str(type(exc)),
        "error_message": str(exc),
        "error_traceback": "".join(traceback.format_exception(exc)),
        "hostname": socket.gethostname(),
        "worker_id": worker_id,
        "runpod_version": "emulator",
    })


class Endpoint:
    """Queue, workers and job table of one endpoint id."""

    def __init__(self, endpoint_id: str, config: EndpointConfig) -> None:
        self.id = endpoint_id
        self.config = config
        self.faults = config.faults
        self.rates = RateLimits(config.rate_limits, config.rate_window_s)
        self.jobs: dict[str, Job] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.running = 0
        self.counts: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.request_keys: Counter[str] = Counter()
        self.tiles_per_job: Counter[int] = Counter()  # jobs by how many tiles they carried
        self.max_running = 0
        self.last_policy: dict[str, Any] = {}
        self._pool: dict[str, asyncio.Task[None]] = {}  # worker id -> its task
        self._busy: set[str] = set()
        self._retire = 0  # busy workers to remove once their job ends
        self._spawned = 0
        self._sweeper: asyncio.Task[None] | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.scale(self.config.workers)
        self._sweeper = asyncio.create_task(self._sweep())

    def scale(self, workers: int) -> None:
        """Autoscaling by hand: grow or shrink to ``workers`` (busy ones finish their job)."""
        while len(self._pool) < workers:
            worker_id = f"{self.id}-w{self._spawned}"
            self._spawned += 1
            self._pool[worker_id] = asyncio.create_task(self._work(worker_id))
        extra = len(self._pool) - workers
        for worker_id in [w for w in self._pool if w not in self._busy][:extra]:
            self._pool.pop(worker_id).cancel()
            extra -= 1
        self._retire = extra

    async def _sweep(self) -> None:
        """Drop results past retention or TTL even if nobody asks for them again."""
        while True:
            await asyncio.sleep(self.config.sweep_s)
            for job_id in list(self.jobs):
                self.get(job_id)

    async def stop(self) -> None:
        tasks = [*self._pool.values(), *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- API operations ---------------------------------------------------------------------

    def submit(self, body: dict[str, Any], *, sync: bool) -> Job:
        prefix = "sync-" if sync else ""
        job = Job(
            id=f"{prefix}{uuid.uuid4()}-e1",
            input=body["input"],
            policy=body.get("policy") or {},
            sync=sync,
            extra={k: body[k] for k in ("s3Config",) if k in body},
            submitted_at=self.config.clock(),
        )
        self.jobs[job.id] = job
        self.last_policy = job.policy
        self.counts["submitted"] += 1
        key = job.input.get("request_key")
        if isinstance(key, str):
            self.request_keys[key] += 1
        if isinstance(job.input.get("tiles"), list):
            self.tiles_per_job[len(job.input["tiles"])] += 1
        self.queue.put_nowait(job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None once it is unknown, past its retention or past its TTL."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        now = self.config.clock()
        ttl = _ms(job.policy.get("ttl")) or self.config.ttl_s
        retention = self.config.sync_retention_s if job.sync else self.config.retention_s
        if now - job.submitted_at > ttl or (
            job.finished_at is not None and now - job.finished_at > retention
        ):
            self._delete(job)
            return None
        return job

    def cancel(self, job: Job) -> None:
        if job.status in TERMINAL:
            return
        job.cancel_requested = True
        self.counts["canceled"] += 1
        if job.status == "IN_QUEUE":
            self._finish(job, "CANCELLED")
        elif job.task is not None:
            job.task.cancel()

    def retry(self, job: Job) -> bool:
        if job.status not in ("FAILED", "TIMED_OUT"):
            return False
        job.status, job.error, job.output, job.has_output = "IN_QUEUE", None, None, False
        job.progress = None
        job.started_at = job.finished_at = None
        job.done = asyncio.Event()
        self.counts["retried"] += 1
        self.queue.put_nowait(job.id)
        return True

    def purge(self) -> int:
        queued = [j for j in self.jobs.values() if j.status == "IN_QUEUE"]
        for job in queued:
            self._delete(job)
        self.counts["purged"] += len(queued)
        return len(queued)

    def health(self) -> dict[str, Any]:
        statuses = Counter(j.status for j in self.jobs.values())
        return {
            "jobs": {
                "completed": self.by_status["COMPLETED"],
                "failed": self.by_status["FAILED"] + self.by_status["TIMED_OUT"],
                "inProgress": statuses["IN_PROGRESS"],
                "inQueue": statuses["IN_QUEUE"],
                "retried": self.counts["retried"],
            },
            "workers": {"idle": len(self._pool) - self.running, "running": self.running},
        }

    def stats(self) -> dict[str, Any]:
        return {
            "submitted": self.counts["submitted"],
            "started": self.counts["started"],
            "status_polls": self.counts["status_polls"],
            "health_calls": self.counts["health_calls"],
            "execution_ms": self.counts["execution_ms"],  # summed executionTime: GPU time billed
            "canceled": self.counts["canceled"],
            "retried": self.counts["retried"],
            "purged": self.counts["purged"],
            "rejected": {k[4:]: v for k, v in self.counts.items() if k.startswith("rej_")},
            "by_status": dict(self.by_status),
            "faults": self.faults.fired(),
            "request_keys": dict(self.request_keys),
            "tiles_per_job": {str(k): v for k, v in sorted(self.tiles_per_job.items())},
            "max_running": self.max_running,
            "jobs_held": len(self.jobs),
            "last_policy": self.last_policy,
            "workers": len(self._pool),
        }

    # ---- workers ----------------------------------------------------------------------------

    async def _work(self, worker_id: str) -> None:
        while True:
            job = self.jobs.get(await self.queue.get())
            if job is None or job.status != "IN_QUEUE" or self.get(job.id) is None:
                continue
            self.running += 1
            self._busy.add(worker_id)
            self.max_running = max(self.max_running, self.running)
            try:
                await self._execute(job, worker_id)
            finally:
                self.running -= 1
                self._busy.discard(worker_id)
            if self._retire > 0:  # scaled down while busy
                self._retire -= 1
                self._pool.pop(worker_id, None)
                return

    async def _execute(self, job: Job, worker_id: str) -> None:
        job.status, job.worker_id = "IN_PROGRESS", worker_id
        job.started_at = self.config.clock()
        job.delay_ms = int((job.started_at - job.submitted_at) * 1000)
        self.counts["started"] += 1
        fault = self.faults.draw_job()
        timeout = _ms(job.policy.get("executionTimeout")) or self.config.execution_timeout_s
        job.task = asyncio.create_task(self._produce(job, fault))
        try:
            result = await asyncio.wait_for(job.task, timeout)
        except TimeoutError:
            self._finish(job, "TIMED_OUT")
            return
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the emulator is shutting down
            if job.cancel_requested:  # else the job was deleted (TTL) while running
                self._finish(job, "CANCELLED")
            return
        except Exception as exc:  # the handler raised: FAILED like the SDK does it
            self._finish(job, "FAILED", error=sdk_error(exc, worker_id))
            return
        self._apply(job, fault, result)

    async def _produce(self, job: Job, fault: str | None) -> Any:
        tiles = job.input.get("tiles")  # GPU time grows with the tiles a job carries
        n_tiles = len(tiles) if isinstance(tiles, list) and tiles else 1
        latency = (self.config.latency_s * n_tiles
                   * (self.faults.slow_factor if fault == "slow" else 1.0))
        if latency > 0:
            await asyncio.sleep(latency)
        if fault == "crash":
            raise RuntimeError("injected crash")
        if fault in ("failed", "fatal", "timeout"):
            return None
        payload = {"id": job.id, "input": job.input, **job.extra}
        handler = self.config.handler

        def progressed(value: Any) -> None:
            job.progress = value

        with progress.listen(job.id, progressed):
            if inspect.iscoroutinefunction(handler):
                return await handler(payload)
            return await asyncio.to_thread(handler, payload)

    def _apply(self, job: Job, fault: str | None, result: Any) -> None:
        """Turn a handler result (or an injected fault) into the job's terminal state."""
        if fault == "failed":
            err = WorkerErrorData(code="worker_transient", message="injected transient failure",
                                  retryable=True)
            self._finish(job, "FAILED", error=err.to_output()["error"])
        elif fault == "fatal":
            err = WorkerErrorData(code="worker_fatal", message="injected permanent failure")
            self._finish(job, "FAILED", error=err.to_output()["error"])
        elif fault == "timeout":
            self._finish(job, "TIMED_OUT")
        elif fault == "no_output":
            self._finish(job, "COMPLETED")
        else:
            self._complete(job, result)
            if fault == "expire":
                self._delete(job)

    def _complete(self, job: Job, result: Any) -> None:
        if isinstance(result, dict):
            result = dict(result)
            result.pop("refresh_worker", None)
            if "error" in result:
                err = result["error"]
                if isinstance(err, str):
                    self._finish(job, "FAILED", error=err)
                else:  # runpod-python#299: a dict error is lost
                    self._finish(job, "COMPLETED")
                return
            if not result:
                self._finish(job, "COMPLETED")
                return
        limit = RUNSYNC_LIMIT if job.sync else RUN_LIMIT
        if result is None or len(json.dumps(result)) > limit:  # the result POST is rejected
            self._finish(job, "COMPLETED")
            return
        job.output, job.has_output = result, True
        self._finish(job, "COMPLETED")

    def _finish(self, job: Job, status: str, *, error: str | None = None) -> None:
        job.status, job.error = status, error
        job.finished_at = self.config.clock()
        if job.started_at is not None:
            job.execution_ms = int((job.finished_at - job.started_at) * 1000)
            self.counts["execution_ms"] += job.execution_ms
        self.by_status[status] += 1
        job.done.set()

    def _delete(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.task is not None and not job.task.done():
            job.task.cancel()
        job.done.set()


def _ms(value: Any) -> float | None:
    """A policy value in ms as seconds (None when absent or not a positive number)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value) / 1000.0
    return None
