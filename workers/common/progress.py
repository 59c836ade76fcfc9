"""Progress updates from a running job, wherever the handler runs.

An action calls :func:`report` with a JSON-able value; it reaches whoever polls the job:

- on RunPod, ``runpod.serverless.progress_update(job, value)`` (the job's ``/status`` then
  shows ``IN_PROGRESS`` with ``output`` = the value); the worker's ``__main__`` turns this on
  with :func:`use_runpod`;
- in the RunPod emulator, the sink it registered for that job id (:func:`listen`), with the
  same effect on its ``/status``;
- anywhere else (a direct handler call, ``--test_input``), nowhere.

The current job is known from :func:`running` (``run_action`` wraps every action in it), so an
action does not need the job passed down. Updates are throttled by the caller: RunPod's SDK
starts a thread per update.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)

Sink = Callable[[Any], None]
_job: ContextVar[Mapping[str, Any] | None] = ContextVar("aat_progress_job", default=None)
_sinks: dict[str, Sink] = {}
_lock = threading.Lock()
_runpod: Callable[[Any, Any], None] | None = None


def use_runpod() -> None:
    """Send updates with the runpod SDK (the worker runs under ``runpod.serverless.start``)."""
    global _runpod
    from runpod.serverless import progress_update

    _runpod = progress_update


@contextmanager
def running(job: Mapping[str, Any]) -> Iterator[None]:
    """Updates reported inside this block belong to ``job``."""
    token = _job.set(job)
    try:
        yield
    finally:
        _job.reset(token)


@contextmanager
def listen(job_id: str, sink: Sink) -> Iterator[None]:
    """Deliver the updates of job ``job_id`` to ``sink`` (the emulator's hook)."""
    with _lock:
        _sinks[job_id] = sink
    try:
        yield
    finally:
        with _lock:
            _sinks.pop(job_id, None)


def report(value: Any) -> None:
    """Report ``value`` (JSON-able) as the current job's progress; never raises."""
    job = _job.get()
    if job is None:
        return
    with _lock:
        sink = _sinks.get(str(job.get("id")))
    try:
        if sink is not None:
            sink(value)
        elif _runpod is not None:
            _runpod(dict(job), value)
    except Exception:  # progress is a courtesy: a failed update must not fail the job
        log.warning("job %s: progress update failed", job.get("id"), exc_info=True)
