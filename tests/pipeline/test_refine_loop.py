"""The refine loop on its own (`service.pipeline.refine`, under `aat upscale` and jobs alike)
against emulated RunPod endpoints: concurrency bound, cache, remote ids, cancellation, failure."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from jobs_helpers import emulator, runpod_settings  # noqa: E402

from service.backends.base import RefineOptions
from service.backends.runpod import RunPodBackend
from service.core.errors import JobCanceled, WorkerError
from service.pipeline.observer import Observer
from service.pipeline.refine import (
    MemoryCache,
    TileWork,
    caption_input,
    caption_tiles,
    derive_seed,
    refine_tiles,
)
from service.settings import load_settings
from workers.emulator import Faults
from workers.emulator.echo import tint


def _work(n: int) -> list[TileWork]:
    rng = np.random.default_rng(1)
    return [TileWork(i, rng.integers(0, 250, (32, 32, 3), dtype=np.uint8), f"tile {i}",
                     derive_seed(5, i)) for i in range(n)]


def _backend(emu: Any, **extra: Any) -> RunPodBackend:
    return RunPodBackend(load_settings(**runpod_settings(emu), **extra))


def test_tiles_are_refined_concurrently_cached_and_recorded() -> None:
    with emulator(workers=3, latency_s=0.1) as emu:
        work, cache = _work(7), MemoryCache()
        submitted: list[tuple[int, str]] = []
        done: list[tuple[int, bool]] = []
        started: list[int] = []

        class Recorder(Observer):
            def submitted(self, stage: str, index: int, key: str, remote_id: str) -> None:
                submitted.append((index, remote_id))

            def tile_started(self, stage: str, index: int) -> None:
                started.append(index)

            def refined(self, stage: str, index: int, key: str, seed: int, cost: Any) -> None:
                done.append((index, cost is None))

        async def run() -> dict[int, np.ndarray]:
            backend = _backend(emu)
            try:
                return await refine_tiles(backend, work, RefineOptions(), cache,
                                          observer=Recorder())
            finally:
                await backend.aclose()

        first = asyncio.run(run())
        assert sorted(started) == list(range(7))  # each shown refining once
        again = asyncio.run(run())  # everything from the cache: nothing paid twice
        assert len(started) == 7  # a tile from the cache is never shown refining
        stats = emu.stats("upscale")
    for item in work:
        assert np.array_equal(first[item.index], tint(item.image, item.seed))
        assert np.array_equal(again[item.index], first[item.index])
    assert stats["submitted"] == 7 and stats["max_running"] == 3
    assert sorted(i for i, _ in submitted) == list(range(7))
    assert sorted(done) == sorted([(i, False) for i in range(7)] + [(i, True) for i in range(7)])


def test_tiles_sharing_runpod_jobs_still_report_and_cache_one_by_one() -> None:
    """``runpod_tiles_per_job=2``: fewer RunPod jobs, yet every tile is submitted, reported,
    refined (its own seed's pixels) and cached on its own."""
    with emulator(workers=2, latency_s=0.05) as emu:
        work, cache = _work(12), MemoryCache()
        submitted: dict[int, list[str]] = {}
        refined: list[int] = []

        class Recorder(Observer):
            def submitted(self, stage: str, index: int, key: str, remote_id: str) -> None:
                submitted.setdefault(index, []).append(remote_id)

            def refined(self, stage: str, index: int, key: str, seed: int, cost: Any) -> None:
                refined.append(index)

        async def run() -> dict[int, np.ndarray]:
            backend = _backend(emu, runpod_tiles_per_job=2)
            try:
                return await refine_tiles(backend, work, RefineOptions(), cache,
                                          observer=Recorder())
            finally:
                await backend.aclose()

        out = asyncio.run(run())
        stats = emu.stats("upscale")
    for item in work:
        assert np.array_equal(out[item.index], tint(item.image, item.seed))
    assert sorted(refined) == list(range(12))
    assert sorted(submitted) == list(range(12)) and all(len(v) == 1 for v in submitted.values())
    assert sum(int(n) * jobs for n, jobs in stats["tiles_per_job"].items()) == 12
    assert stats["tiles_per_job"].get("2", 0) >= 4  # most tiles travelled in pairs
    assert stats["submitted"] == len({v[0] for v in submitted.values()}) < 12


def test_a_tile_keeps_the_result_it_holds_whatever_its_prompt_now() -> None:
    """A tile whose result is kept (``kept``: the key its job's row holds) is taken from the
    cache although its prompt changed since: no caption, no RunPod job, its key reported as it
    was. A kept result the cache no longer has is refined with the prompt the tile has now."""
    with emulator(workers=2, latency_s=0.02) as emu:
        work, cache = _work(3), MemoryCache()
        keys: dict[int, str] = {}
        prompts: list[str] = []

        class Recorder(Observer):
            def refined(self, stage: str, index: int, key: str, seed: int, cost: Any) -> None:
                keys[index] = key

        async def before(item: TileWork) -> TileWork:
            prompts.append(item.prompt)
            return item

        async def run(items: list[TileWork]) -> dict[int, np.ndarray]:
            backend = _backend(emu)
            try:
                return await refine_tiles(backend, items, RefineOptions(), cache,
                                          observer=Recorder(), before=before)
            finally:
                await backend.aclose()

        first = asyncio.run(run(work))
        held = dict(keys)
        del cache.arrays[held[2]]  # tile 2's result was garbage-collected since
        edited = [dataclasses.replace(w, prompt=f"edited {w.index}", kept=held[w.index])
                  for w in work]
        prompts.clear()
        again = asyncio.run(run(edited))
        stats = emu.stats("upscale")
    assert stats["submitted"] == 4  # three, then tile 2 alone
    assert prompts == ["edited 2"]  # the kept tiles were not even captioned
    assert keys[0] == held[0] and keys[1] == held[1] and keys[2] != held[2]
    assert all(np.array_equal(again[i], first[i]) for i in range(3))  # the echo ignores prompts


def test_after_processes_each_tile_as_it_arrives_and_the_cache_keeps_it_raw() -> None:
    """``after`` (a job's per-tile colour fix) runs in a worker thread for fresh and cached
    tiles alike; its result is returned, the cache keeps what the worker sent."""
    with emulator(workers=2, latency_s=0.1) as emu:
        work, cache = _work(4), MemoryCache()
        seen: list[tuple[int, str]] = []

        def invert(index: int, tile: np.ndarray) -> np.ndarray:
            seen.append((index, threading.current_thread().name))
            return 255 - tile

        async def run() -> dict[int, np.ndarray]:
            backend = _backend(emu)
            try:
                return await refine_tiles(backend, work, RefineOptions(), cache, after=invert)
            finally:
                await backend.aclose()

        fresh, cached = asyncio.run(run()), asyncio.run(run())
    main = threading.main_thread().name
    assert sorted(i for i, _ in seen) == sorted(list(range(4)) * 2)
    assert all(name != main for _, name in seen)  # never on the event loop's thread
    for item in work:
        raw = tint(item.image, item.seed)
        assert np.array_equal(fresh[item.index], 255 - raw)
        assert np.array_equal(cached[item.index], 255 - raw)
    assert all(any(np.array_equal(v, tint(w.image, w.seed)) for v in cache.arrays.values())
               for w in work)


def test_cancellation_stops_the_loop_and_cancels_remote_jobs() -> None:
    with emulator(workers=2, latency_s=2.0) as emu:

        async def run() -> None:
            backend = _backend(emu)
            calls = {"n": 0}

            class Cancels(Observer):
                def check(self) -> None:
                    calls["n"] += 1
                    if calls["n"] >= 3:
                        raise JobCanceled("canceled by the user")

            try:
                await refine_tiles(backend, _work(6), RefineOptions(), MemoryCache(),
                                   observer=Cancels(), poll_s=0.1)
            finally:
                await backend.aclose()

        with pytest.raises(JobCanceled):
            asyncio.run(run())
        stats = emu.stats("upscale")
    assert 1 <= stats["submitted"] < 6  # the loop stopped sending tiles
    assert stats["canceled"] == stats["submitted"]  # and every in-flight RunPod job was canceled
    assert stats["by_status"].get("COMPLETED", 0) == 0


def test_a_failing_tile_stops_the_others() -> None:
    with emulator(workers=2, latency_s=0.2, faults=Faults.parse("fatal=1:1")) as emu:
        async def run() -> None:
            backend = _backend(emu)
            try:
                await refine_tiles(backend, _work(6), RefineOptions(), MemoryCache())
            finally:
                await backend.aclose()

        with pytest.raises(WorkerError):
            asyncio.run(run())
        stats = emu.stats("upscale")
    assert stats["submitted"] < 6  # the rest were never sent


def test_captions_are_requested_small_and_cached() -> None:
    tiles = {i: np.full((1024, 1024, 3), 40 * i, np.uint8) for i in range(3)}
    assert caption_input(tiles[0]).shape == (448, 448, 3)
    with emulator(workers=2, latency_s=0.01) as emu:
        cache = MemoryCache()

        async def run() -> dict[int, str]:
            backend = _backend(emu)
            try:
                return await caption_tiles(backend, tiles, cache)
            finally:
                await backend.aclose()

        first, again = asyncio.run(run()), asyncio.run(run())
        stats = emu.stats("caption")
    assert first == again and first[1] == "a 448x448 tile, mean colour rgb(40, 40, 40)"
    assert stats["submitted"] == 3
