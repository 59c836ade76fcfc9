"""The refine loop: caption and refine tiles concurrently through a ``GpuBackend``.

Up to ``await backend.max_concurrency()`` tiles are in flight at once (asyncio). Every finished
tile is written to a cache keyed by :func:`tile_key` (tile pixels + refine options + seed +
prompt + pipeline version) *before* the loop moves on, and every remote job id is reported to
the observer as soon as it is submitted, so a run killed mid-way never pays twice for a
finished tile; a tile whose earlier remote job is known (:class:`RemoteRecord`) is picked up
with ``backend.resume`` instead of being submitted again. The observer's ``check`` is polled
while tiles are in flight: when it raises, the in-flight calls are cancelled (the backend
cancels their remote jobs) and the exception propagates.

Used by :mod:`service.pipeline.stages` (for jobs the cache is the artifact store; for
`aat upscale` the artifact store in the data directory) and by tests on their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from service.backends.base import CallAccounting, GpuBackend, RefineOptions, TileTask
from service.core.jobs import PIPELINE_VERSION
from service.pipeline.observer import Observer, PipelineObserver, run_checked

log = logging.getLogger(__name__)
CAPTION_MAX_SIDE = 448  # the caption worker looks at tiles this size


class TileCache(Protocol):
    def get_array(self, key: str) -> np.ndarray | None: ...

    def put_array(self, key: str, array: np.ndarray) -> None: ...

    def get_text(self, key: str) -> str | None: ...

    def put_text(self, key: str, text: str) -> None: ...


class MemoryCache:
    """A process-local tile cache (for one CLI run)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.texts: dict[str, str] = {}

    def get_array(self, key: str) -> np.ndarray | None:
        return self.arrays.get(key)

    def put_array(self, key: str, array: np.ndarray) -> None:
        self.arrays[key] = array

    def get_text(self, key: str) -> str | None:
        return self.texts.get(key)

    def put_text(self, key: str, text: str) -> None:
        self.texts[key] = text


@dataclass(frozen=True)
class TileWork:
    """One tile to refine: its index in the plan, pixels, per-tile prompt and seed; ``kept``:
    the cache key of a result the tile keeps (its job's tile row holds it), taken as it is
    while the cache has it, whatever the prompt now (else the tile is refined as asked)."""

    index: int
    image: np.ndarray
    prompt: str = ""
    seed: int = 0
    kept: str | None = None


@dataclass(frozen=True)
class RemoteRecord:
    """A remote job an earlier attempt submitted for a tile: the request ``key`` (a tile whose
    inputs changed since has another key and is not resumed) and the remote job id."""

    key: str
    remote_id: str


def digest(*parts: Any) -> str:
    h = hashlib.sha256(PIPELINE_VERSION.encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.shape}{part.dtype}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(b"\x00" + str(part).encode())
    return h.hexdigest()


def options_fingerprint(options: RefineOptions) -> str:
    data = options.model_dump(exclude={"ip_adapter_image"})
    ip = options.ip_adapter_image
    data["ip_adapter_image"] = digest(ip) if ip is not None else None
    return json.dumps(data, sort_keys=True, default=str)


def tile_key(work: TileWork, options: RefineOptions, backend: str) -> str:
    """Cache key of a refined tile: the same key means the same paid-for result."""
    return digest("refine", backend, options_fingerprint(options), work.seed, work.prompt,
                   work.image)


def spent_key(key: str) -> str:
    """Where the accounting of the call that made the result cached under ``key`` is kept."""
    return digest("spent", key)


def keep_spent(cache: TileCache, key: str, acct: CallAccounting) -> None:
    """Keep, beside the result cached under ``key`` (and before it), what the call that made
    it cost: its remote job ids, times and price. Whoever takes the result from the cache can
    then count a cost nobody has counted (a runner that lost its lease caches what it finished
    but may not write into the job: see ``PipelineObserver.reused``)."""
    if acct.remote_job_ids or acct.possibly_billed:
        cache.put_text(spent_key(key), json.dumps(asdict(acct)))


def spent_on(cache: TileCache, key: str) -> CallAccounting | None:
    """What the call that made the result cached under ``key`` cost (:func:`keep_spent`), or
    None (a result cached before results carried it, or a call without remote jobs)."""
    text = cache.get_text(spent_key(key))
    if text is None:
        return None
    try:
        return CallAccounting(**json.loads(text))
    except (ValueError, TypeError):
        log.warning("the accounting kept for cached result %s is unreadable", key[:12])
        return None


async def _from_cache(cache: TileCache, observer: PipelineObserver, stage: str, index: int,
                      key: str) -> None:
    """Tell ``observer`` what the cached result ``key`` cost whoever made it."""
    spent = await asyncio.to_thread(spent_on, cache, key)
    if spent is not None:
        await asyncio.to_thread(observer.reused, stage, index, spent)


def caption_key(image: np.ndarray, backend: str, instruction: str | None) -> str:
    return digest("caption", backend, instruction or "", image)


def derive_seed(job_seed: int, index: int, rerun: int = 0) -> int:
    """Per-tile seed from the job seed (a re-run tile gets a fresh one)."""
    digest = hashlib.sha256(f"{job_seed}:{index}:{rerun}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


Before = Callable[[TileWork], Awaitable[TileWork]]
After = Callable[[int, np.ndarray], np.ndarray]
_QUIET = Observer()


def caption_input(image: np.ndarray, max_side: int = CAPTION_MAX_SIDE) -> np.ndarray:
    """The tile as the caption worker sees it: at most ``max_side`` px (it downscales anyway),
    so the request is a fraction of the size."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    small = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                          Image.Resampling.BICUBIC)
    return np.asarray(small)


async def caption_one(backend: GpuBackend, index: int, image: np.ndarray, cache: TileCache,
                      observer: PipelineObserver = _QUIET, instruction: str | None = None,
                      earlier: RemoteRecord | None = None) -> str:
    """Caption one tile (cached by its pixels) and report it to ``observer.captioned``.

    Like a refine, the caption's remote job is reported to ``observer.submitted`` as soon as
    it is submitted, and a caption job an interrupted attempt submitted (``earlier``, same
    request key) is picked up with ``backend.resume_caption`` instead of being paid again."""
    small = await asyncio.to_thread(caption_input, image)
    key = caption_key(small, backend.name, instruction)
    text = await asyncio.to_thread(cache.get_text, key)
    if text is not None:
        await _from_cache(cache, observer, "caption", index, key)
        await asyncio.to_thread(observer.captioned, index, text, None)
        return text

    async def submitted(remote_id: str) -> None:  # recorded before the job is waited on
        await asyncio.to_thread(observer.submitted, "caption", index, key, remote_id)

    result = None
    if earlier is not None and earlier.key == key:
        result = await backend.resume_caption(earlier.remote_id, str(index))
    if result is None:
        result = await backend.caption(str(index), small, instruction=instruction,
                                       on_submitted=submitted)
    await asyncio.to_thread(keep_spent, cache, key, result.accounting)
    await asyncio.to_thread(cache.put_text, key, result.caption)
    await asyncio.to_thread(observer.captioned, index, result.caption, result.accounting)
    return result.caption


async def refine_tiles(
    backend: GpuBackend, work: list[TileWork], options: RefineOptions, cache: TileCache, *,
    observer: PipelineObserver = _QUIET, stage: str = "refine",
    earlier: Mapping[int, RemoteRecord] | None = None,
    before: Before | None = None, after: After | None = None, poll_s: float = 0.25,
) -> dict[int, np.ndarray]:
    """Refine ``work`` tiles; returns ``{index: refined pixels}``. Cached tiles cost nothing;
    a tile's ``kept`` result, while cached, is taken before anything else (no ``before``).

    Reports to ``observer`` as ``stage``: ``tile_started`` for a tile not in the cache (before
    it waits for a slot), ``submitted`` when a remote job is submitted (without
    waiting for it), ``refined`` once the tile is cached (``cost`` None for a cache hit), and
    polls ``check``. ``earlier`` holds remote jobs an interrupted attempt submitted: a tile
    whose request key still matches is picked up with ``backend.resume`` (a new job only if
    that finds nothing). ``before(tile)`` may complete a tile first (the stages caption it
    there, so refining starts with the first caption). ``after(index, pixels)`` processes each
    tile (cache hit or fresh) in a worker thread as soon as it is in, while other tiles are
    still in flight (its colour fix); the returned dict holds its results. The cache always
    holds the tile as the backend returned it.
    """
    out: dict[int, np.ndarray] = {}
    earlier = earlier or {}
    sem = asyncio.Semaphore(max(1, await backend.max_concurrency()))
    draining = asyncio.Event()  # stopping: send nothing new, let in-flight calls finish
    hits = 0

    async def _after(index: int, image: np.ndarray) -> np.ndarray:
        return image if after is None else await asyncio.to_thread(after, index, image)

    async def one(item: TileWork) -> None:
        nonlocal hits
        key = item.kept or ""  # the result the tile holds: no caption, no refine
        cached = await asyncio.to_thread(cache.get_array, key) if key else None
        if cached is None:
            if before is not None:
                item = await before(item)
            key = tile_key(item, options, backend.name)
            cached = await asyncio.to_thread(cache.get_array, key)
        if cached is not None:
            hits += 1
            await _from_cache(cache, observer, stage, item.index, key)
            out[item.index] = await _after(item.index, cached)
            await asyncio.to_thread(observer.refined, stage, item.index, key, item.seed, None)
            return

        async def submitted(remote_id: str) -> None:  # recorded before the job is waited on
            await asyncio.to_thread(observer.submitted, stage, item.index, key, remote_id)

        # only a tile that is not in the cache starts: one taken from it goes straight to
        # refined, so a rerun's kept tile never shows refining
        await asyncio.to_thread(observer.tile_started, stage, item.index)
        async with sem:
            if draining.is_set():
                return
            task = TileTask(tile_id=str(item.index), image=item.image, prompt=item.prompt,
                            seed=item.seed)
            record = earlier.get(item.index)
            result = None
            if record is not None and record.key == key:
                result = await backend.resume(record.remote_id, task)
            if result is None:
                result = await backend.refine(task, options, on_submitted=submitted)
        await asyncio.to_thread(keep_spent, cache, key, result.accounting)
        await asyncio.to_thread(cache.put_array, key, result.image)
        out[item.index] = await _after(item.index, result.image)
        await asyncio.to_thread(observer.refined, stage, item.index, key, item.seed,
                                result.accounting)

    await run_checked(work, one, observer, poll_s, draining)
    log.info("%s: %d tiles (%d from the cache)", stage, len(work), hits)
    return out


async def caption_tiles(
    backend: GpuBackend, tiles: dict[int, np.ndarray], cache: TileCache, *,
    observer: PipelineObserver = _QUIET, instruction: str | None = None, poll_s: float = 0.25,
) -> dict[int, str]:
    """Caption tiles concurrently (cached by their pixels); returns ``{index: caption}``.
    The backend bounds how many calls are in flight per endpoint; each caption is reported to
    ``observer.captioned``."""
    out: dict[int, str] = {}

    async def one(index: int) -> None:
        out[index] = await caption_one(backend, index, tiles[index], cache, observer,
                                       instruction)

    await run_checked(list(tiles), one, observer, poll_s)
    return out
