"""Stopping a running job when it is cancelled, with nothing half-written left behind.

runpod-python cancels a running job by cancelling its handler's asyncio task (the worker's
stop-signal poll): an ``async def`` handler gets ``CancelledError`` at its next ``await``, a
sync handler never notices and runs to its end. So a worker's RunPod handler is
``cancellable(run)``: the blocking action runs in a thread and, when the task is cancelled,
the job's stop flag is set. An action that can stop early calls :func:`check` at safe points
(the LoRA import between chunks and before its file is renamed into place): it raises
:class:`Canceled`, the action removes what it had begun, and the handler, having waited for
that (at most :data:`CLEANUP_S`), re-raises, so the job ends CANCELLED. Actions that never
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
_flag: ContextVar[threading.Event | None] = ContextVar("aat_cancel_flag", default=None)

Job = dict[str, Any]


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
def watching(flag: threading.Event) -> Iterator[None]:
    """Inside this block, :func:`check` answers to ``flag``."""
    token = _flag.set(flag)
    try:
        yield
    finally:
        _flag.reset(token)


def cancellable(run: Callable[[Job], Job]) -> Callable[[Job], Awaitable[Job]]:
    """``run`` as an ``async`` RunPod handler that a cancel stops (see the module docstring)."""

    async def handler(job: Job) -> Job:
        flag = threading.Event()

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
