"""The pipeline's one observer: progress, resume records and cost, reported by named methods.

Whoever runs the pipeline passes one :class:`PipelineObserver`: the job runner writes each call
into the job row (progress, tile records, RunPod job ids for resuming, cost) and raises from
:meth:`~PipelineObserver.check` to stop a canceled job; `aat upscale` draws a progress bar and
sums the cost for its summary line. :class:`Observer` does nothing: subclass it and override
what you report.

Threads: the pipeline calls every method from a worker thread (never on its event loop), so a
method may block on storage; calls for different tiles may run at the same time.

:func:`run_checked` is the one loop that honours :meth:`~PipelineObserver.check` while units
of work are in flight: the refine loop's tiles and captions and the animate pipeline's frames
run under it, so a cancel, a lost lease and a stopping runner mean the same for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from service.backends.base import CallAccounting

T = TypeVar("T")
DRAIN_S = 60.0  # how long a stopping runner waits for remote work already paid for


class Checks(Protocol):
    def check(self) -> None: ...


class PipelineObserver(Protocol):
    def stage(self, name: str, done: int, total: int, *, concurrent: bool = False) -> None:
        """Stage ``name`` starts with ``done`` of ``total`` units already done (by an earlier
        attempt). ``concurrent``: the previous stage keeps running alongside this one (later
        tiles are still captioned while earlier ones refine), so it is not finished yet."""
        ...

    def submitted(self, stage: str, index: int, key: str, remote_id: str) -> None:
        """Tile ``index`` of ``stage`` went out as remote job ``remote_id`` for the request
        ``key``: record both, so an interrupted run can resume that job instead of paying
        twice (see ``TileMemory.remote``). The remote job is waited on only once this returned;
        raising (the id cannot be recorded) cancels it and fails the tile with the error."""
        ...

    def tile_started(self, stage: str, index: int) -> None:
        """Tile ``index`` starts ``stage`` (``caption``, ``refine`` or ``seam_fix``; a tile
        taken from the cache never starts): for live displays."""
        ...

    def captioned(self, index: int, caption: str, cost: CallAccounting | None) -> None:
        """Tile ``index`` has its caption; ``cost`` is None when it came from the cache."""
        ...

    def refined(self, stage: str, index: int, key: str, seed: int,
                cost: CallAccounting | None) -> None:
        """Tile ``index`` of ``stage`` (``refine`` or ``seam_fix``) is refined and cached under
        ``key`` with ``seed``; ``cost`` is None when it came from the cache."""
        ...

    def reused(self, stage: str, index: int, cost: CallAccounting) -> None:
        """Tile ``index`` of ``stage`` (``caption``, ``refine``, ``seam_fix``) is taken from the
        cache, and ``cost`` is what the call that made it cost, whoever paid (reported before
        ``captioned``/``refined`` with no cost). A job counts it if that call was its own and
        nobody counted it: a runner that lost its lease caches what it finished but may no
        longer write its cost."""
        ...

    def check(self) -> None:
        """Raise to stop the pipeline (a cancel, a lost lease, a stopping runner). Called
        between stages and every poll interval while tiles are in flight; remote jobs still
        in flight are then cancelled, unless the exception has ``drain = True`` (a stopping
        runner, a lost lease: see :func:`run_checked`)."""
        ...


class Observer:
    """A :class:`PipelineObserver` that reports nothing and never stops the pipeline."""

    def stage(self, name: str, done: int, total: int, *, concurrent: bool = False) -> None:
        return None

    def submitted(self, stage: str, index: int, key: str, remote_id: str) -> None:
        return None

    def tile_started(self, stage: str, index: int) -> None:
        return None

    def captioned(self, index: int, caption: str, cost: CallAccounting | None) -> None:
        return None

    def refined(self, stage: str, index: int, key: str, seed: int,
                cost: CallAccounting | None) -> None:
        return None

    def reused(self, stage: str, index: int, cost: CallAccounting) -> None:
        return None

    def check(self) -> None:
        return None


async def run_checked(items: list[T], fn: Callable[[T], Coroutine[Any, Any, None]],
                      observer: Checks, poll_s: float,
                      draining: asyncio.Event | None = None) -> None:
    """Run ``fn`` over every item concurrently; stop all on the first error or when
    ``observer.check`` raises (polled every ``poll_s``): the in-flight calls are cancelled, so
    the backend cancels their remote jobs. An exception with ``drain = True`` (the runner is
    stopping, or lost its lease to another runner, which re-polls the remote jobs), raised by
    ``check`` or by an item (a progress write refused), first sets ``draining`` (``fn`` then
    starts nothing new) and lets calls already in flight finish (up to ``DRAIN_S``), so their
    results are kept for the next attempt and no remote job is cancelled under it."""
    if not items:
        return
    tasks = [asyncio.create_task(fn(i)) for i in items]
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=poll_s,
                                               return_when=asyncio.FIRST_EXCEPTION)
            try:
                for task in done:
                    task.result()  # re-raise the first failure
                if pending:
                    await asyncio.to_thread(observer.check)
            except Exception as exc:
                if getattr(exc, "drain", False) and draining is not None and pending:
                    draining.set()
                    await asyncio.wait(pending, timeout=DRAIN_S)
                raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
