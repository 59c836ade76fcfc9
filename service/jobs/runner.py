"""Run one job under a lease: claim it, keep the lease alive, call the orchestrator, record the
outcome. Shared by the Celery task and the embedded executor.

Outcomes: the job ends ``succeeded``/``failed``/``canceled``; or, when this runner is stopping,
goes back to ``queued`` for the next start; or, when the lease was lost to another runner (this
one stalled), this runner stops writing and leaves the job to the new owner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid

from service.core.errors import AatError, JobCanceled, JobError
from service.core.jobs import JobStatus
from service.core.logs import job_context
from service.jobs.context import Interrupted, RunContext
from service.jobs.orchestrator import run_job
from service.storage.job_store import LeaseLost
from service.storage.records import StoredError

log = logging.getLogger(__name__)

__all__ = ["Heartbeat", "Interrupted", "RunContext", "new_owner", "run_one"]


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Extends the lease every third of its length; records whether it was lost."""

    def __init__(self, ctx: RunContext, job_id: str, owner: str) -> None:
        self.ctx, self.job_id, self.owner = ctx, job_id, owner
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        period = self.ctx.settings.lease_s / 3
        while not self._stop.wait(period):
            try:
                self.ctx.store.heartbeat(self.job_id, self.owner, self.ctx.settings.lease_s)
            except LeaseLost:
                self.lost.set()
                return
            except Exception:  # a database hiccup: try again next period
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)


def run_one(ctx: RunContext, job_id: str) -> str:
    """Claim and run ``job_id``; returns the outcome (a status value, ``skipped``, ``lost``).
    Every record logged meanwhile carries the job id."""
    with job_context(job_id):
        return _run_one(ctx, job_id)


def _run_one(ctx: RunContext, job_id: str) -> str:
    owner = new_owner()
    row = ctx.store.claim(job_id, owner, ctx.settings.lease_s)
    if row is None:
        return "skipped"
    log.info("job %s claimed by %s (attempt %d)", job_id, owner, row.attempts)
    store = ctx.store
    with Heartbeat(ctx, job_id, owner) as hb:
        try:
            if row.attempts > ctx.settings.job_max_attempts:
                raise JobError(f"the job was interrupted {row.attempts - 1} times (runner "
                               "crashes); it will not be retried; check the runner logs",
                               code="too_many_attempts")
            run_job(ctx, job_id, owner, lost=hb.lost)
            return JobStatus.succeeded.value
        except LeaseLost:
            log.warning("job %s: lease lost; another runner owns it now", job_id)
            return "lost"
        except (Interrupted, asyncio.CancelledError) as exc:
            # A CancelledError that escapes the GPU loop is not the user's cancel (that is
            # JobCanceled): the loop was torn down under the job. Put it back in the queue at
            # once instead of leaving it `running` until its lease runs out; the attempt
            # count (job_max_attempts) bounds a job that keeps ending this way.
            if isinstance(exc, asyncio.CancelledError):
                log.warning("job %s: its GPU loop was cancelled; back in the queue", job_id)
            store.transition(job_id, JobStatus.queued, owner=owner, stage="queued",
                             lease_until=None)
            return JobStatus.queued.value
        except JobCanceled:
            store.transition(job_id, JobStatus.canceled, owner=owner, stage="done")
            log.info("job %s canceled", job_id)
            return JobStatus.canceled.value
        except AatError as exc:
            return _fail(ctx, job_id, owner, exc.to_dict())
        except Exception as exc:
            log.exception("job %s failed with an unexpected error", job_id)
            return _fail(ctx, job_id, owner, {
                "code": "internal_error", "retryable": False,
                "message": f"internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                           "see the runner log"})


def _fail(ctx: RunContext, job_id: str, owner: str, found: dict[str, object]) -> str:
    error: StoredError = {
        "code": str(found.get("code", "internal_error")),
        "message": " ".join(str(found.get("message", "")).split())[:500],  # one line
        "retryable": bool(found.get("retryable", False))}
    try:
        ctx.store.transition(job_id, JobStatus.failed, owner=owner, error=error)
    except LeaseLost:
        return "lost"
    log.info("job %s failed: %s", job_id, error.get("message"))
    return JobStatus.failed.value
