"""RunPod's limits: how many jobs one endpoint may have in flight, and what fits in one.

**Payload.** A ``/run`` request over 10 MB is refused by RunPod. Tiles travel inline as
base64 of lossless WebP or PNG, whichever is smaller (``imageref.encode_smallest``), but a
detailed tile does not compress: its encoded size approaches the raw RGB bytes, and base64 adds
a third. :func:`check_tile_size` refuses at submit a ``tile_size`` whose worst case does not
fit (``MAX_INLINE_TILE_SIDE`` = 1536: 1536² x 3 bytes x 4/3 = 9.44 MB, under the 9.5 MB
``client.MAX_RUN_BYTES``), instead of the job failing after its pre-upscale; the client still
measures every request before sending it. The worker answers in lossless WebP for the same
reason. Several tiles share one request (``runpod_tiles_per_job``) only as many as fit at
their worst case (:func:`tiles_per_request`): two 1024 px tiles (8.4 MB), never three.

**In flight.**
:class:`EndpointLimit` sizes a growable slot pool: ``runpod_max_concurrency`` when set, else
twice the workers ``/health`` reports (one running and one queued job per worker, so a worker
that finishes starts its next tile at once), else :data:`DEFAULT_CONCURRENCY`. Serverless
endpoints scale: an endpoint idle at zero workers when first asked grows later, so the
health-derived size is re-read every ``refresh_s`` and only ever grows (a deeper queue on a
shrinking endpoint costs nothing). One ``/health`` call at a time, however many tiles start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from service.backends.runpod.client import MAX_RUN_BYTES
from service.core.errors import AatError, ParamsError

DEFAULT_CONCURRENCY = 4
MAX_INLINE_TILE_SIDE = 1536


def worst_case_b64_bytes(side: int) -> int:
    """Base64 size of an incompressible ``side`` x ``side`` RGB tile."""
    return -(-side * side * 3 // 3) * 4


REQUEST_HEADROOM_BYTES = 64 * 1024  # JSON, prompts, LoRA names, per-tile fields


def tiles_per_request(shape: tuple[int, ...], wanted: int,
                      style_shape: tuple[int, ...] | None = None) -> int:
    """How many tiles of ``shape`` (H, W, ...) one ``/run`` request carries whatever their
    content: at most ``wanted``, at least 1 (a single tile that cannot fit is refused by
    :func:`check_tile_size` at submit and measured again by the client). The style image, sent
    once per request, takes its worst case off the budget; the worker's result (lossless WebP
    of the same tiles, no style image) then fits its own limit too."""
    def worst(s: tuple[int, ...]) -> int:
        return -(-s[0] * s[1] * 3 // 3) * 4

    budget = MAX_RUN_BYTES - REQUEST_HEADROOM_BYTES - (worst(style_shape) if style_shape else 0)
    return max(1, min(wanted, budget // worst(shape)))


def check_tile_size(tile_size: int) -> None:
    """Refuse a tile size whose detailed tiles cannot travel in one RunPod request."""
    if tile_size > MAX_INLINE_TILE_SIDE:
        mb = worst_case_b64_bytes(tile_size) / 1e6
        raise ParamsError(
            f"tile_size {tile_size} does not fit a RunPod request: a detailed tile is up to "
            f"{mb:.0f} MB of base64, over the {MAX_RUN_BYTES / 1e6:.1f} MB usable of RunPod's /run "
            "limit; use "
            f"tile_size {MAX_INLINE_TILE_SIDE} or less", code="tile_too_large")
REFRESH_S = 60.0


class Slots:
    """An asyncio semaphore whose size can grow while tasks wait on it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.used < self.limit)
            self.used += 1

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        async with self._cond:
            self.used -= 1
            self._cond.notify()

    async def grow(self, limit: int) -> None:
        if limit > self.limit:
            async with self._cond:
                self.limit = limit
                self._cond.notify_all()


class EndpointLimit:
    """The in-flight limit of one endpoint (bound to the event loop it was made on)."""

    def __init__(self, fixed: int | None, health: Callable[[], Awaitable[dict[str, Any]]],
                 refresh_s: float | None = None) -> None:
        self._fixed = fixed
        self._health = health
        self._refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self._checked = -float("inf")
        self._lock = asyncio.Lock()
        self.slots = Slots(fixed or DEFAULT_CONCURRENCY)

    async def size(self) -> int:
        """The current limit, re-reading ``/health`` when the last reading is stale."""
        if self._fixed is None and time.monotonic() - self._checked > self._refresh_s:
            async with self._lock:
                if time.monotonic() - self._checked > self._refresh_s:
                    workers = await self._workers()
                    self._checked = time.monotonic()
                    if workers > 0:
                        await self.slots.grow(2 * workers)
        return self.slots.limit

    async def _workers(self) -> int:
        with contextlib.suppress(AatError):  # no health, no growth; the calls will say why
            workers = (await self._health()).get("workers", {})
            return sum(v for v in workers.values() if isinstance(v, int))
        return 0
