"""Executors hand job ids to runners. Two implementations behind one small protocol:

* :class:`EmbeddedExecutor` — threads inside the ``aat up`` process, no broker. At start (and
  every half lease) it re-claims queued jobs and running jobs whose lease expired, so a crash
  loses nothing.
* :class:`CeleryDispatcher` — sends the job id to the Celery queue on Redis; ``aat runner``
  processes run it (``service/jobs/celery_app.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Protocol

from service.core.errors import ConfigError
from service.jobs.runner import RunContext, run_one
from service.settings import Settings
from service.storage.artifacts import ArtifactStore
from service.storage.job_store import SqlJobStore
from service.storage.records import Queue

log = logging.getLogger(__name__)


class Executor(Protocol):
    queue: Queue  # the jobs this executor runs: those submitted through it

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, job_id: str) -> None: ...

    def cancel(self, job_id: str) -> None: ...

    def ready(self) -> bool: ...

    def runners(self) -> tuple[bool, str]:
        """Whether the job runners are alive, in words."""
        ...


class EmbeddedExecutor:
    """Runs jobs in ``settings.job_threads`` threads of this process (see module docstring)."""

    queue: Queue = "embedded"

    def __init__(self, settings: Settings, store: SqlJobStore, artifacts: ArtifactStore) -> None:
        self.ctx = RunContext(settings, store, artifacts)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        refuse_celery_store(self.ctx.settings, self.ctx.store)
        self.ctx.stopping.clear()
        n = self.ctx.settings.job_threads
        self._threads = [threading.Thread(target=self._work, name=f"aat-job-{i}", daemon=True)
                         for i in range(n)]
        self._threads.append(threading.Thread(target=self._reclaim_loop, name="aat-reclaim",
                                              daemon=True))
        for t in self._threads:
            t.start()
        log.info("embedded executor started with %d job threads", n)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running jobs stop at the next tile and go back to the queue."""
        self.ctx.stopping.set()
        for _ in range(self.ctx.settings.job_threads):
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads = []

    def submit(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        """Nothing to do here: the runner sees the cancel flag in the job row."""

    def ready(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def runners(self) -> tuple[bool, str]:
        n = self.ctx.settings.job_threads
        if not self.ready():
            return False, "the job threads of this process stopped; restart `aat up`"
        return True, f"{n} job thread{'s' if n != 1 else ''} in this process (`aat up`)"

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self.ctx.stopping.is_set():
                return
            try:
                run_one(self.ctx, job_id)
            except Exception:
                log.exception("job %s: runner error", job_id)
            finally:
                with self._lock:
                    self._pending.discard(job_id)

    def _reclaim_loop(self) -> None:
        period = max(0.5, self.ctx.settings.lease_s / 2)
        while not self.ctx.stopping.is_set():
            try:
                for job_id in self.ctx.store.reclaimable(queue=self.queue):
                    self.submit(job_id)
            except Exception:
                log.warning("re-claim scan failed", exc_info=True)
            self.ctx.stopping.wait(period)


class CeleryDispatcher:
    """Queues job ids on the Celery broker; `aat runner` processes execute them."""

    queue: Queue = "celery"

    def __init__(self, settings: Settings) -> None:
        from service.jobs.celery_app import make_celery

        self.settings = settings
        self.app = make_celery(settings)

    def start(self) -> None:
        """Nothing runs in this process; start runners with `aat runner`."""

    def stop(self) -> None:
        self.app.close()

    def submit(self, job_id: str) -> None:
        from service.jobs.celery_app import TASK_NAME

        self.app.send_task(TASK_NAME, args=[job_id], queue=self.settings.celery_queue)

    def cancel(self, job_id: str) -> None:
        """The runner sees the cancel flag in the job row; a queued message claims nothing."""

    def ready(self) -> bool:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            log.warning("broker not reachable", exc_info=True)
            return False

    def runners(self) -> tuple[bool, str]:
        from service.jobs.celery_app import describe_runners, runners_on_queue

        queue = self.settings.celery_queue
        if not self.ready():  # asking would wait on the broker's connection retries
            return False, "not known: the broker is not reachable"
        try:
            names = runners_on_queue(self.app, queue)
        except Exception as exc:  # report, do not crash
            return False, f"could not ask the broker: {exc}"
        return describe_runners(names, queue)


def refuse_celery_store(settings: Settings, store: SqlJobStore) -> None:
    """Refuse to run an embedded executor on a job store whose unfinished jobs were sent to
    Celery runners: it would take work meant for the fleet (and, with another data directory,
    fail it). Jobs sent to Celery later are never taken either (``reclaimable(queue=...)``)."""
    waiting = store.unfinished_on("celery")
    if waiting:
        raise ConfigError(
            f"the job store {store.shown_url} holds {waiting} unfinished job(s) sent to Celery "
            "runners; an embedded executor would take them: set AAT_BROKER_URL to that fleet's "
            "broker to submit through it, or use a job store of your own (AAT_DATABASE_URL, "
            "AAT_DATA_DIR)", code="store_in_use")


def make_executor(settings: Settings, store: SqlJobStore, artifacts: ArtifactStore) -> Executor:
    if settings.broker_url:
        return CeleryDispatcher(settings)
    return EmbeddedExecutor(settings, store, artifacts)
