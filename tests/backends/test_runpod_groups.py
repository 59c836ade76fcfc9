"""Several tiles per RunPod job (``runpod_tiles_per_job``) against the RunPod emulator.

Tiles of one job (one ``RefineOptions`` object) that wait for a slot share a RunPod job; each
tile still comes back on its own, with its own seed's pixels, progress and accounting; a failed
group is retried tile by tile; a resumed tile takes its own tile out of the shared job. Round
trips (``/run`` and ``/status`` requests) are read from the emulator's counters.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import numpy as np
import pytest

from service.backends.base import RefineOptions, TileTask
from service.backends.runpod import RunPodBackend
from service.backends.runpod.limits import tiles_per_request
from service.core.errors import BackendUnavailable, WorkerError
from workers.emulator.echo import tint


def tiles(n: int, size: int = 32) -> list[TileTask]:
    rng = np.random.default_rng(n)
    return [TileTask(f"t{i}", rng.integers(0, 250, (size, size, 3), dtype=np.uint8), "", i)
            for i in range(n)]


def refine_job(backend: RunPodBackend, work: list[TileTask], *, close: bool = True,
               submitted: dict[str, list[str]] | None = None) -> list[Any]:
    """Refine ``work`` as the pipeline does: one options object for the job, at most
    ``max_concurrency()`` tiles in flight."""
    options = RefineOptions(prompt="stone")

    async def go() -> list[Any]:
        sem = asyncio.Semaphore(await backend.max_concurrency())

        async def one(tile: TileTask) -> Any:
            async with sem:
                seen = submitted.setdefault(tile.tile_id, []) if submitted is not None else None
                return await backend.refine(tile, options,
                                            on_submitted=seen.append if seen is not None
                                            else None)
        try:
            return list(await asyncio.gather(*(one(t) for t in work)))
        finally:
            if close:
                await backend.aclose()

    return asyncio.run(go())


def refine_at_once(backend: RunPodBackend, work: list[TileTask]) -> list[Any]:
    """Every tile of ``work`` sent at once with one options object; each tile's result or
    error (the backend closed afterwards)."""
    options = RefineOptions()

    async def go() -> list[Any]:
        try:
            return list(await asyncio.gather(
                *(backend.refine(t, options) for t in work), return_exceptions=True))
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.fixture
def grouped(runpod_emulator: Any, runpod_settings: Any) -> Any:
    """``grouped(per_job=2, slots=1, settings={...}, **emulator)`` → (emulator, backend): a
    started emulator and a backend sending up to ``per_job`` tiles per RunPod job, with
    ``slots`` RunPod jobs in flight (None: from the endpoint's workers)."""
    def make(per_job: int = 2, slots: int | None = 1, settings: dict[str, Any] | None = None,
             **emulator: Any) -> tuple[Any, RunPodBackend]:
        emu = runpod_emulator(**emulator)
        return emu, RunPodBackend(runpod_settings(emu, runpod_tiles_per_job=per_job,
                                                  runpod_max_concurrency=slots,
                                                  **(settings or {})))
    return make


def check_pixels(work: list[TileTask], results: list[Any]) -> None:
    for tile, result in zip(work, results, strict=True):
        assert result.tile_id == tile.tile_id and result.seed_used == tile.seed
        assert np.array_equal(result.image, tint(tile.image, tile.seed))


def test_tiles_waiting_for_slots_share_jobs_and_run_requests_halve(grouped) -> None:
    # One slot, so which tiles wait together does not depend on timing: with two slots, two
    # groups ending together free both, and the never-idle rule then rightly sends the next two
    # tiles alone (seen once in CI).
    counts = {}
    for per_job in (1, 2):
        emu, backend = grouped(per_job, workers=2, latency_s=0.05)
        work, submitted = tiles(16), {}
        results = refine_job(backend, work, submitted=submitted)
        check_pixels(work, results)
        stats = emu.stats("upscale")
        counts[per_job] = stats
        # progress per tile: every tile reported the RunPod job it travelled in
        jobs_of = Counter(ids[0] for ids in submitted.values())
        assert all(len(ids) == 1 for ids in submitted.values())
        assert sorted(jobs_of.values()) == [per_job] * (16 // per_job)
        for result in results:  # each tile's accounting names its shared job
            assert result.accounting.remote_job_ids == submitted[result.tile_id]
        assert backend.totals()["runpod_jobs"] == 16 // per_job
    # half the /run requests (and, on RunPod, half the workers' job fetches and result
    # posts); /status polls follow the time jobs spend queued and running, about the same
    assert counts[1]["submitted"] == 16 and counts[1]["tiles_per_job"] == {"1": 16}
    assert counts[2]["submitted"] == 8 and counts[2]["tiles_per_job"] == {"2": 8}


def test_a_few_tiles_with_free_slots_still_go_one_per_job(grouped) -> None:
    """Grouping never leaves a slot idle: 3 tiles, 4 free slots, 3 parallel jobs."""
    emu, backend = grouped(slots=None, workers=2, latency_s=0.05)
    work = tiles(3)
    check_pixels(work, refine_job(backend, work))
    assert emu.stats("upscale")["tiles_per_job"] == {"1": 3}


def test_a_failed_group_is_retried_tile_by_tile(grouped) -> None:
    emu, backend = grouped(workers=1, faults="failed=1:1")  # the first job fails (retryable)
    work, submitted = tiles(2), {}
    results = refine_job(backend, work, submitted=submitted)
    check_pixels(work, results)
    stats = emu.stats("upscale")
    assert stats["tiles_per_job"] == {"1": 2, "2": 1}  # the group, then each tile alone
    assert stats["by_status"] == {"FAILED": 1, "COMPLETED": 2}
    group_job = submitted["t0"][0]
    for result in results:
        acct = result.accounting
        assert acct.attempts == 2 and acct.remote_job_ids[0] == group_job
        assert acct.remote_job_ids == submitted[result.tile_id]  # both reported as progress
    assert submitted["t0"][1] != submitted["t1"][1]


def test_a_permanent_failure_fails_every_tile_of_the_group_once(grouped) -> None:
    emu, backend = grouped(workers=1, faults="fatal=1:1")
    errors = refine_at_once(backend, tiles(2))
    assert all(isinstance(e, WorkerError) and e.code == "worker_fatal" and not e.retryable
               for e in errors)
    assert "tiles t0, t1 failed after 1 RunPod job(s)" in errors[0].message
    assert emu.stats("upscale")["submitted"] == 1  # retrying would fail the same way


def test_endless_429_fails_the_group_once_without_sending_tiles_alone(grouped) -> None:
    """The HTTP layer giving up is no job failure: the tiles get the retryable error (the job
    runner retries later), not one more round of /run attempts each."""
    emu, backend = grouped(settings={"runpod_http_attempts": 3}, faults="429=1")
    errors = refine_at_once(backend, tiles(2))
    assert all(isinstance(e, BackendUnavailable) and e.retryable
               and e.code == "runpod_rate_limited" for e in errors)
    assert errors[0].message.startswith("tiles t0, t1: RunPod rate limit reached (429)")
    stats = emu.stats("upscale")
    assert stats["submitted"] == 0 and stats["rejected"]["429"] == 3


def test_each_tile_of_a_shared_job_resumes_from_it(runpod_emulator, runpod_settings) -> None:
    """A job runner killed after submitting: each tile re-polls the shared RunPod job and takes
    its own tile from it; nothing is submitted again and the job's cost is counted once."""
    emu = runpod_emulator(workers=1, latency_s=0.02)
    settings = runpod_settings(emu, runpod_tiles_per_job=2, runpod_max_concurrency=1,
                               runpod_price_per_gpu_second=1.0)
    work, submitted = tiles(2), {}
    first = refine_job(RunPodBackend(settings), work, submitted=submitted)
    [job_id] = {ids[0] for ids in submitted.values()}
    later = RunPodBackend(settings)

    async def go() -> list[Any]:
        try:
            return [await later.resume(job_id, t) for t in work]
        finally:
            await later.aclose()

    resumed = asyncio.run(go())
    check_pixels(work, resumed)
    assert emu.stats("upscale")["submitted"] == 1
    job_cost = sum(r.accounting.cost_usd for r in first)
    assert sum(r.accounting.cost_usd for r in resumed) == pytest.approx(job_cost, rel=0.01)


def test_cancelling_every_tile_of_a_group_cancels_its_runpod_job(grouped) -> None:
    emu, backend = grouped(workers=1, latency_s=30.0)
    options, seen = RefineOptions(), []

    async def go() -> None:
        tasks = [asyncio.create_task(backend.refine(t, options, on_submitted=seen.append))
                 for t in tiles(2)]
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(seen) == 2 and emu.stats("upscale")["started"] == 1:
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.aclose()

    asyncio.run(go())
    stats = emu.stats("upscale")
    assert len(set(seen)) == 1 and len(seen) == 2  # one shared job, reported for both tiles
    assert stats["submitted"] == 1 and stats["by_status"] == {"CANCELLED": 1}


def test_a_group_never_outgrows_one_request() -> None:
    assert tiles_per_request((1024, 1024, 3), 4) == 2  # 2 x 4.2 MB worst case fit 9.5 MB
    assert tiles_per_request((1024, 1024, 3), 1) == 1
    assert tiles_per_request((1536, 1536, 3), 4) == 1
    assert tiles_per_request((512, 512, 3), 4) == 4
    assert tiles_per_request((1024, 1024, 3), 4, style_shape=(1024, 1024, 3)) == 1


def test_groups_are_sized_to_fit_the_request(grouped, monkeypatch) -> None:
    """With the budget of two tiles, a setting of 4 still sends pairs."""
    from service.backends.runpod import backend as runpod_backend

    monkeypatch.setattr(runpod_backend, "tiles_per_request",
                        lambda shape, wanted, style_shape=None: min(wanted, 2))
    emu, backend = grouped(4, workers=1)
    work = tiles(6)
    check_pixels(work, refine_job(backend, work))
    assert emu.stats("upscale")["tiles_per_job"] == {"2": 3}


def test_a_pair_over_the_request_limit_is_sent_one_by_one(grouped, monkeypatch) -> None:
    """Were the worst-case bound ever wrong, a too-large shared request is never sent: each
    tile goes alone instead."""
    from service.backends.runpod import backend as runpod_backend

    monkeypatch.setattr(runpod_backend, "tiles_per_request",
                        lambda shape, wanted, style_shape=None: wanted)  # no cap
    emu, backend = grouped(workers=1)
    work = tiles(2, size=1200)  # noise: 5.8 MB of base64 each, 11.5 MB together
    check_pixels(work, refine_job(backend, work))
    stats = emu.stats("upscale")
    assert stats["tiles_per_job"] == {"1": 2} and stats["rejected"].get("413", 0) == 0
