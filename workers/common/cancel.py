"""Stopping a running job when it is cancelled, with nothing half-written left behind.

runpod-python cancels a running job by cancelling its handler's asyncio task (the worker's
stop-signal poll): an ``async def`` handler gets ``CancelledError`` at its next ``await``, a
sync handler never notices and runs to its end. So a worker's RunPod handler is
``cancellable(run)``: the blocking action runs in a thread and, when the task is cancelled,
the job's :class:`StopFlag` is set. An action that can stop early calls :func:`check` at safe
points (the LoRA import between chunks and before its file is renamed into place): it raises
:class:`Canceled`, the action removes what it had begun, and the handler, having waited for
that (at most :data:`CLEANUP_S`), re-raises, so the job ends CANCELLED. A wait that would not
reach a check soon (a download whose server has gone quiet) is cut short by a hook the action
registers with :func:`interrupting` (the import shuts its socket down). Actions that never
check (a tile refine) finish as before; their result is dropped.

Outside RunPod (the local backend runs the worker's code in its own process) the caller holds
the flag itself and runs the action under :func:`watching`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from service.core.errors import AatError

log = logging.getLogger(__name__)

CLEANUP_S = 30.0  # how long a cancelled handler waits for its action to clean up
Job = dict[str, Any]


class StopFlag:
    """Set once when the job is told to stop; hooks registered meanwhile run at that moment."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _run_hook(hook)

    def add_hook(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return
        _run_hook(hook)  # already stopping

    def remove_hook(self, hook: Callable[[], None]) -> None:
        with self._lock, suppress(ValueError):
            self._hooks.remove(hook)


def _run_hook(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:  # an interruption is best effort; the next check still stops the job
        log.warning("a cancel hook failed", exc_info=True)


_flag: ContextVar[StopFlag | None] = ContextVar("aat_cancel_flag", default=None)


class Canceled(AatError):
    """The running job was told to stop; what it had begun has been removed."""

    code = "canceled"


def requested() -> bool:
    """Whether the current job has been told to stop."""
    flag = _flag.get()
    return flag is not None and flag.is_set()


def check(what: str) -> None:
    """Raise :class:`Canceled` if the current job has been told to stop."""
    if requested():
        raise Canceled(f"{what} was canceled")


@contextmanager
def watching(flag: StopFlag) -> Iterator[None]:
    """Inside this block, :func:`check` answers to ``flag``."""
    token = _flag.set(flag)
    try:
        yield
    finally:
        _flag.reset(token)


@contextmanager
def interrupting(hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` if the current job is told to stop inside this block (from the thread that
    tells it): for a wait that would not reach a :func:`check` soon."""
    flag = _flag.get()
    if flag is None:
        yield
        return
    flag.add_hook(hook)
    try:
        yield
    finally:
        flag.remove_hook(hook)


def cancellable(run: Callable[[Job], Job]) -> Callable[[Job], Awaitable[Job]]:
    """``run`` as an ``async`` RunPod handler that a cancel stops (see the module docstring)."""

    async def handler(job: Job) -> Job:
        flag = StopFlag()

        def work() -> Job:
            with watching(flag):
                return run(job)

        done = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            flag.set()
            log.info("job %s cancelled: stopping it", job.get("id"))
            with suppress(BaseException):  # its outcome no longer matters, only its cleanup
                await asyncio.wait_for(asyncio.shield(done), CLEANUP_S)
            raise

    handler.__doc__ = run.__doc__
    return handler
