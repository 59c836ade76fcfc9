"""Tiles of one job that wait for an endpoint slot share a RunPod job (``runpod_tiles_per_job``).

Each RunPod job costs round trips whatever it carries: the ``/run`` POST, the ``/status``
polls, and on the worker the SDK's job fetch and result post. When more tiles wait than
slots are free, a freed slot takes up to ``size`` of them in one job. Grouping never leaves a
slot idle: a slot takes ``ceil(waiting / free slots)`` tiles, so a job with fewer tiles than
free slots still sends one tile per job, in parallel. A group is never larger than what fits
one request at its tiles' worst case (:func:`~service.backends.runpod.limits.tiles_per_request`).

The first tile to get a slot waits ``GROUP_WINDOW_S`` for company when fewer than ``size``
tiles wait (tiles of one job arrive together, a few milliseconds apart). Per tile everything
stays as with one tile per job: the caller awaits its own tile; ``on_submitted`` reports the
group's RunPod job id for each tile (a resumed tile re-polls that job and takes its own tile);
the backend retries a failed group's tiles one by one; a tile cancelled while waiting leaves
the queue, and a group whose tiles were all cancelled cancels its RunPod job.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.backends.base import OnSubmitted, RefineOptions, RefineResult, TileTask
from service.backends.runpod.limits import Slots

GROUP_WINDOW_S = 0.05
CLOSE_GRACE_S = 45.0  # a cancelled group may wait 30 s for a late /run reply, then cancel it


@dataclass
class Waiting:
    """One tile waiting for its group."""

    tile: TileTask
    on_submitted: OnSubmitted | None
    future: asyncio.Future[RefineResult] = field(repr=False)


# runs one group on a slot it is handed (and must release): sets every tile's future
RunGroup = Callable[[list[Waiting], RefineOptions, Slots], Awaitable[None]]


class TileGroups:
    """Per job (per ``RefineOptions`` object), a queue of tiles and one task that hands them
    to free slots in groups."""

    def __init__(self, size: int, slots: Callable[[], Awaitable[Slots]], run: RunGroup,
                 fit: Callable[[TileTask, RefineOptions], int],
                 window_s: float = GROUP_WINDOW_S) -> None:
        self.size = size
        self._slots = slots
        self._run = run
        self._fit = fit
        self._window_s = window_s
        self._queues: dict[int, tuple[RefineOptions, deque[Waiting]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def refine(self, tile: TileTask, options: RefineOptions,
                     on_submitted: OnSubmitted | None) -> RefineResult:
        key = id(options)
        if key not in self._queues:
            self._queues[key] = (options, deque())
            self._spawn(self._pump(key))
        waiting = Waiting(tile, on_submitted, asyncio.get_running_loop().create_future())
        self._queues[key][1].append(waiting)
        return await waiting.future  # cancelled: the pump skips it, or its group notices

    async def aclose(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Let groups whose callers gave up finish cancelling their RunPod jobs (bounded),
        then stop whatever still runs."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._queues.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, key: int) -> None:
        options, queue = self._queues[key]
        try:
            while _drop_cancelled(queue):
                slots = await self._slots()
                await slots.__aenter__()
                handed = False
                try:
                    if len(queue) < self.size:
                        await asyncio.sleep(self._window_s)
                    if not _drop_cancelled(queue):
                        continue
                    free = max(1, slots.limit - slots.used + 1)  # this slot included
                    n = min(self.size, self._fit(queue[0].tile, options),
                            math.ceil(len(queue) / free))
                    group: list[Waiting] = []
                    while queue and len(group) < n:
                        item = queue.popleft()
                        if not item.future.done():
                            group.append(item)
                    self._spawn(self._run(group, options, slots))
                    handed = True
                finally:
                    if not handed:
                        await slots.__aexit__(None, None, None)
        finally:
            self._queues.pop(key, None)
            for item in queue:  # the pump was cancelled (aclose): nobody will run these
                if not item.future.done():
                    item.future.cancel()


def _drop_cancelled(queue: deque[Waiting]) -> bool:
    """Forget tiles whose caller gave up; whether any tile still waits."""
    while queue and queue[0].future.done():
        queue.popleft()
    return bool(queue)


async def wait_shared(task: asyncio.Task[Any], group: list[Waiting]) -> None:
    """Run ``task`` (the group's RunPod job) until it ends or every tile's caller gave up;
    then cancel it, so an abandoned job stops costing money."""
    futures = [w.future for w in group]
    try:
        while not task.done():
            pending = [f for f in futures if not f.done()]
            if not pending:
                task.cancel()
                break
            await asyncio.wait([task, *pending], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.wait([task])  # its outcome is the caller's to read
    except asyncio.CancelledError:  # the backend is closing
        task.cancel()
        raise
