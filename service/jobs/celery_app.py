"""The Celery app and its one thin task: the message carries only the job id.

Settings follow the job-table-is-truth design: ``acks_late`` + ``reject_on_worker_lost`` (a
crashed pool child re-queues its job), prefetch 1, a visibility timeout longer than the longest
job, a soft shutdown that lets running jobs reach a tile boundary. The task body claims the job
through its lease and runs the shared orchestrator; a duplicate message claims nothing.
Each runner also re-queues jobs whose lease expired (a runner host died), so recovery does not
wait for the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Celery, signals

from service.jobs.runner import RunContext, run_one
from service.settings import Settings, load_settings
from service.storage.job_store import SqlJobStore
from service.storage.stores import open_artifacts

log = logging.getLogger(__name__)

TASK_NAME = "aat.run_job"
_ctx: dict[int, RunContext] = {}  # per process (prefork children build their own)


def make_celery(settings: Settings) -> Celery:
    app = Celery("aat", broker=settings.broker_url, set_as_current=False)
    transport = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        visibility_timeout=settings.visibility_timeout_s,
        worker_soft_shutdown_timeout=60.0,
        worker_enable_soft_shutdown_on_idle=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=settings.celery_queue,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_max_memory_per_child=2_000_000,
    )
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)(_run_task)
    return app


def context() -> RunContext:
    pid = os.getpid()
    if pid not in _ctx:
        settings = load_settings()
        _ctx[pid] = RunContext(settings, SqlJobStore(settings.effective_database_url),
                               open_artifacts(settings))
    return _ctx[pid]


def _run_task(self: Any, job_id: str) -> str:
    outcome = run_one(context(), job_id)
    log.info("task %s job %s: %s", self.request.id, job_id, outcome)
    return outcome


class Reaper:
    """Keeps the queue in step with the job table, from inside each runner:

    * a running job whose lease expired (its runner died) is put back to queued and its id sent
      again; the running → queued compare-and-set has one winner among the runners;
    * a queued job whose message may be lost (sending failed while the broker was down, or the
      broker lost its data) is sent again at start and once it has waited longer than the
      visibility timeout. A duplicate message is harmless: it claims nothing.
    """

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="aat-reaper", daemon=True).start()

    def _send(self, job_id: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], queue=self.settings.celery_queue)

    def _loop(self) -> None:
        store = SqlJobStore(self.settings.effective_database_url)
        period = max(0.5, self.settings.lease_s / 2)
        self._resend_queued(store, older_than_s=0.0)
        last_sweep = time.monotonic()
        while not self.stop.wait(period):
            try:
                for job_id in store.reclaimable(queue="celery"):
                    if store.requeue(job_id):
                        log.warning("job %s: its runner stopped heart-beating; re-queued", job_id)
                        self._send(job_id)
                if time.monotonic() - last_sweep > self.settings.visibility_timeout_s / 4:
                    self._resend_queued(store, self.settings.visibility_timeout_s)
                    last_sweep = time.monotonic()
            except Exception:
                log.warning("reaper scan failed", exc_info=True)

    def _resend_queued(self, store: SqlJobStore, older_than_s: float) -> None:
        try:
            for job_id in store.queued_since(older_than_s, queue="celery"):
                self._send(job_id)
        except Exception:
            log.warning("could not re-send queued jobs", exc_info=True)


RUNNER_PING_S = 3.0


def runners_on_queue(app: Celery, queue: str, *, host: str | None = None) -> list[str]:
    """Names of the job runners consuming ``queue`` that answer within :data:`RUNNER_PING_S`
    (Celery's remote control, through the broker); with ``host``, only those on that host."""
    answers = app.control.inspect(timeout=RUNNER_PING_S).active_queues() or {}
    names = sorted(worker for worker, consumed in answers.items()
                   if any(q.get("name") == queue for q in consumed or []))
    return [n for n in names if host is None or n.rpartition("@")[2] == host]


def describe_runners(names: list[str], queue: str, where: str = "") -> tuple[bool, str]:
    """``runners_on_queue``'s answer in words (`aat doctor`, ``GET /v1/ready``)."""
    if not names:
        return False, (f"no job runner on queue {queue} answered{where} within "
                       f"{RUNNER_PING_S:g} s; start one with `aat runner`")
    return True, f"{len(names)} alive: {', '.join(names)}"[:300]


def run_worker(settings: Settings, *, concurrency: int, loglevel: str = "INFO",
               pool: str = "prefork") -> None:
    """Block running a Celery worker on ``settings.celery_queue`` (the `aat runner` command)."""
    app = make_celery(settings)
    reaper = Reaper(app, settings)
    signals.worker_ready.connect(lambda **_: reaper.start(), weak=False)
    signals.worker_shutting_down.connect(lambda **_: reaper.stop.set(), weak=False)
    # `aat runner` already called service.core.logs.configure_logging: a receiver here tells
    # Celery not to install its own handlers and format
    signals.setup_logging.connect(lambda **_: None, weak=False)
    app.worker_main(argv=["worker", "-Q", settings.celery_queue, "-c", str(concurrency),
                          "-P", pool, f"--loglevel={loglevel}", "-n", f"aat-runner-{os.getpid()}@%h",
                          "--without-gossip", "--without-mingle"])
