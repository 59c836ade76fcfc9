"""RunPodBackend against the RunPod emulator over real loopback HTTP.

Each test states what the user sees (a refined tile, or one clear error) and how many RunPod
jobs were submitted for it, read from the emulator's own counters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from service.backends.base import RefineOptions, TileTask
from service.backends.runpod import RunPodBackend
from service.core.errors import (
    BackendAuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ParamsError,
    WorkerError,
)
from workers.emulator.echo import tint


def _tile(tile_id: str = "t0", seed: int = 7, size: int = 32) -> TileTask:
    rng = np.random.default_rng(seed)
    return TileTask(tile_id, rng.integers(0, 250, (size, size, 3), dtype=np.uint8), "", seed)


def _refine(backend: RunPodBackend, tile: TileTask, **kw: Any) -> Any:
    async def go() -> Any:
        try:
            return await backend.refine(tile, RefineOptions(), **kw)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_refine_returns_the_processed_tile_with_accounting(runpod_emulator, runpod_settings):
    emu = runpod_emulator(latency_s=0.05)
    backend = RunPodBackend(runpod_settings(emu, runpod_price_per_gpu_second=0.001))
    tile, seen = _tile(seed=6), list[str]()
    result = _refine(backend, tile, on_submitted=seen.append)
    assert np.array_equal(result.image, tint(tile.image, 6))  # processed by the worker
    assert result.seed_used == 6
    acct = result.accounting
    assert acct.attempts == 1 and acct.remote_job_ids == seen and len(seen) == 1
    assert acct.execution_ms >= 50
    assert acct.cost_usd == pytest.approx(acct.execution_ms / 1000 * 0.001)
    stats = emu.stats("upscale")
    assert stats["submitted"] == 1 and stats["by_status"] == {"COMPLETED": 1}
    assert list(stats["request_keys"].values()) == [1]
    assert stats["last_policy"] == {"executionTimeout": 600_000, "ttl": 3_600_000}
    assert backend.totals()["runpod_jobs"] == 1


def test_many_tiles_respect_worker_count_and_none_is_submitted_twice(
        runpod_emulator, runpod_settings):
    emu = runpod_emulator(workers=3, latency_s=0.1)
    backend = RunPodBackend(runpod_settings(emu))
    tiles = [_tile(f"t{i}", seed=i) for i in range(9)]

    async def go() -> list[Any]:
        try:
            results = await asyncio.gather(*(backend.refine(t, RefineOptions()) for t in tiles))
            assert await backend.max_concurrency() == 6  # 3 workers (/health), 3 queued
            return results
        finally:
            await backend.aclose()

    results = asyncio.run(go())
    for tile, result in zip(tiles, results, strict=True):
        assert np.array_equal(result.image, tint(tile.image, tile.seed))
    stats = emu.stats("upscale")
    assert stats["submitted"] == 9 and stats["max_running"] == 3
    assert stats["health_calls"] == 1  # asked once, not once per tile
    assert sorted(stats["request_keys"].values()) == [1] * 9
    totals = backend.totals()
    assert totals["runpod_jobs"] == 9 and totals["execution_ms"] >= 9 * 100


@pytest.mark.parametrize(("faults", "submitted"), [
    ("failed=1:1", 2),      # FAILED with a retryable code
    ("timeout=1:1", 2),     # TIMED_OUT
    ("no_output=1:2", 3),   # COMPLETED without output, twice
    ("expire=1:1", 2),      # result gone (404) before we read it
    ("5xx=1:3", 1),         # 5xx on /run: the job was never created, the POST is retried
])
def test_transient_failures_are_resubmitted_until_the_tile_succeeds(
        runpod_emulator, runpod_settings, faults, submitted):
    emu = runpod_emulator(faults=faults)
    backend = RunPodBackend(runpod_settings(emu))
    tile = _tile(seed=3)
    result = _refine(backend, tile)
    assert np.array_equal(result.image, tint(tile.image, 3))
    assert result.accounting.attempts == submitted
    assert len(set(result.accounting.remote_job_ids)) == submitted
    assert emu.stats("upscale")["submitted"] == submitted


@pytest.mark.parametrize(("faults", "error", "code"), [
    ("failed=1", WorkerError, "worker_transient"),
    ("timeout=1", BackendTimeout, "runpod_timed_out"),
    ("no_output=1", BackendError, "runpod_no_output"),
])
def test_a_tile_that_keeps_failing_stops_after_the_attempt_limit(
        runpod_emulator, runpod_settings, faults, error, code):
    emu = runpod_emulator(faults=faults)
    backend = RunPodBackend(runpod_settings(emu, runpod_tile_attempts=3))
    with pytest.raises(error) as info:
        _refine(backend, _tile("t9"))
    exc = info.value
    assert exc.code == code and exc.retryable is False
    assert "tile t9 failed after 3 RunPod job(s)" in exc.message
    assert len(exc.detail["remote_job_ids"]) == 3
    assert emu.stats("upscale")["submitted"] == 3


def test_a_permanent_worker_error_is_not_retried(runpod_emulator, runpod_settings):
    emu = runpod_emulator(faults="fatal=1")
    backend = RunPodBackend(runpod_settings(emu))
    with pytest.raises(WorkerError) as info:
        _refine(backend, _tile())
    assert info.value.code == "worker_fatal" and not info.value.retryable
    assert emu.stats("upscale")["submitted"] == 1


def test_an_sdk_crash_is_reported_with_its_exception_type(runpod_emulator, runpod_settings):
    emu = runpod_emulator(faults="crash=1")
    backend = RunPodBackend(runpod_settings(emu))
    with pytest.raises(WorkerError) as info:
        _refine(backend, _tile())
    assert info.value.code == "worker_crashed"
    assert "RuntimeError: injected crash" in info.value.message
    assert "Traceback" in info.value.detail["error_traceback"]
    # an unexplained crash is retried (bounded) before the tile fails: 3 attempts by default
    assert "failed after 3 RunPod job(s)" in info.value.message
    assert emu.stats("upscale")["submitted"] == 3


def test_one_worker_crash_does_not_fail_the_tile(runpod_emulator, runpod_settings):
    """An acceptance run lost a 56-tile job to one crash on one tile: now the tile is sent
    again (RunPod may pick another worker) and the job goes on."""
    emu = runpod_emulator(faults="crash=1:1")  # the first job crashes, later ones work
    backend = RunPodBackend(runpod_settings(emu))
    result = _refine(backend, _tile())
    assert result.image.shape == _tile().image.shape
    assert len(result.accounting.remote_job_ids) == 2  # the crashed job is counted too
    assert emu.stats("upscale")["submitted"] == 2


def test_a_429_storm_is_ridden_out_without_duplicate_jobs(runpod_emulator, runpod_settings):
    emu = runpod_emulator(faults="429=1:12")
    backend = RunPodBackend(runpod_settings(emu, runpod_http_attempts=15))
    tiles = [_tile(f"t{i}", seed=i) for i in range(3)]

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(backend.refine(t, RefineOptions()) for t in tiles))
        finally:
            await backend.aclose()

    results = asyncio.run(go())
    assert [r.tile_id for r in results] == ["t0", "t1", "t2"]
    stats = emu.stats("upscale")
    assert stats["rejected"]["429"] == 12
    assert stats["submitted"] == 3 and sorted(stats["request_keys"].values()) == [1, 1, 1]


def test_endless_429_gives_a_retryable_unavailable_error(runpod_emulator, runpod_settings):
    emu = runpod_emulator(faults="429=1")
    backend = RunPodBackend(runpod_settings(emu, runpod_http_attempts=4,
                                            runpod_max_concurrency=1))
    with pytest.raises(BackendUnavailable) as info:
        _refine(backend, _tile())
    assert info.value.code == "runpod_rate_limited" and info.value.retryable
    assert info.value.message.startswith("tile t0: RunPod rate limit reached (429)")
    assert "gave up after 4 tries" in info.value.message
    stats = emu.stats("upscale")
    assert stats["submitted"] == 0 and stats["rejected"]["429"] == 4


def test_cancelling_a_refine_cancels_the_runpod_job(runpod_emulator, runpod_settings):
    emu = runpod_emulator(latency_s=30.0)
    backend = RunPodBackend(runpod_settings(emu))
    seen: list[str] = []

    async def go() -> None:
        task = asyncio.create_task(backend.refine(_tile(), RefineOptions(),
                                                  on_submitted=seen.append))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if seen and emu_status(seen[0]) == "IN_PROGRESS":
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()

    def emu_status(job_id: str) -> str:
        import httpx

        resp = httpx.get(f"{emu.url}/upscale/status/{job_id}",
                         headers={"authorization": f"Bearer {emu.api_key}"})
        return str(resp.json()["status"])

    started = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - started < 25  # did not wait for the 30 s job
    assert emu_status(seen[0]) == "CANCELLED"
    stats = emu.stats("upscale")
    assert stats["submitted"] == 1 and stats["canceled"] == 1
    assert stats["by_status"] == {"CANCELLED": 1}


def test_a_tile_over_the_payload_limit_is_refused_before_sending(runpod_emulator, runpod_settings):
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu))
    noise = np.random.default_rng(0).integers(0, 256, (1700, 1700, 3), dtype=np.uint8)
    with pytest.raises(ParamsError) as info:
        _refine(backend, TileTask("big", noise, "", 1))
    exc = info.value
    assert exc.code == "payload_too_large" and not exc.retryable
    assert "tile big" in exc.message and "tile_size" in exc.message
    assert emu.stats("upscale")["submitted"] == 0


def test_a_wrong_api_key_gives_one_clear_error(runpod_emulator, runpod_settings, caplog):
    emu = runpod_emulator()
    secret = "wrong-key-7d1e0c"
    backend = RunPodBackend(runpod_settings(emu, runpod_api_key=secret))
    caplog.set_level("DEBUG")
    with pytest.raises(BackendAuthError) as info:
        _refine(backend, _tile())
    assert info.value.message.startswith("RunPod rejected the API key")
    assert "RUNPOD_API_KEY" in info.value.message and not info.value.retryable
    assert secret not in caplog.text and secret not in repr(backend.__dict__)
    stats = emu.stats("upscale")
    assert stats["submitted"] == 0 and stats["rejected"]["401"] >= 1


def test_an_unknown_endpoint_id_names_the_setting(runpod_emulator, runpod_settings):
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu, runpod_upscale_endpoint_id="nope",
                                            runpod_max_concurrency=2))
    with pytest.raises(BackendError) as info:
        _refine(backend, _tile())
    assert info.value.code == "runpod_endpoint_not_found"
    assert "RUNPOD_UPSCALE_ENDPOINT_ID" in info.value.message


def test_missing_settings_are_a_config_error(runpod_settings, runpod_emulator):
    emu = runpod_emulator()
    with pytest.raises(ConfigError, match="RUNPOD_API_KEY"):
        RunPodBackend(runpod_settings(emu, runpod_upscale_endpoint_id=None))


def test_a_tile_cancelled_while_its_run_post_is_in_flight_cancels_that_job(
        runpod_emulator, runpod_settings):
    """The job exists before its id arrives (a slow /run reply): cancelling the tile then
    used to leave that RunPod job running and billing; now it is cancelled once its id comes."""
    emu = runpod_emulator(latency_s=30.0, run_reply_delay_s=1.0)
    backend = RunPodBackend(runpod_settings(emu))
    seen: list[str] = []

    async def go() -> None:
        task = asyncio.create_task(backend.refine(_tile(), RefineOptions(),
                                                  on_submitted=seen.append))
        for _ in range(500):  # the job is created upstream; its /run reply is still coming
            await asyncio.sleep(0.01)
            if emu.stats("upscale")["submitted"] == 1:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()

    started = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - started < 20  # did not wait for the 30 s job
    assert seen == []  # the tile never got as far as recording the id
    stats = emu.stats("upscale")
    assert stats["submitted"] == 1 and stats["canceled"] == 1
    assert stats["by_status"] == {"CANCELLED": 1}
    assert backend.totals()["runpod_jobs"] == 1  # counted, though cancelled before it ran


def test_a_failing_on_submitted_callback_cancels_the_runpod_job(runpod_emulator, runpod_settings):
    emu = runpod_emulator(latency_s=30.0)
    backend = RunPodBackend(runpod_settings(emu))

    def record(job_id: str) -> None:
        raise OSError("job store is read-only")

    with pytest.raises(OSError, match="read-only"):
        _refine(backend, _tile(), on_submitted=record)
    stats = emu.stats("upscale")
    assert stats["submitted"] == 1 and stats["canceled"] == 1


@pytest.mark.parametrize(("output", "expected"), [
    ({"version": 1, "tiles": []}, "0 tiles instead of 1"),
    ({"version": 1, "tiles": [{"tile_id": "t0", "seed_used": 1}]}, "Field required"),
    ({"images": ["..."]}, "Field required"),
])
def test_an_output_off_contract_is_a_clear_non_retried_error(
        runpod_emulator, runpod_settings, output, expected):
    emu = runpod_emulator(handler=lambda job: output)
    backend = RunPodBackend(runpod_settings(emu))
    with pytest.raises(WorkerError) as info:
        _refine(backend, _tile())
    assert info.value.code == "bad_worker_output" and expected in info.value.message
    assert "redeploy" in info.value.message
    assert emu.stats("upscale")["submitted"] == 1


def test_a_tile_of_the_wrong_size_is_refused(runpod_emulator, runpod_settings):
    from workers.common.imageref import encode_image_ref

    small = encode_image_ref(np.zeros((8, 8, 3), np.uint8)).model_dump(exclude_none=True)
    emu = runpod_emulator(handler=lambda job: {
        "version": 1, "tiles": [{"tile_id": "t0", "image": small, "seed_used": 7}]})
    backend = RunPodBackend(runpod_settings(emu))
    with pytest.raises(WorkerError, match="out of date, redeploy"):
        _refine(backend, _tile())


def test_real_rate_limits_are_respected_and_every_tile_still_lands(
        runpod_emulator, runpod_settings):
    """A tight /status budget (RunPod's is 2000 per 10 s; here 15 per second)."""
    emu = runpod_emulator(workers=4, latency_s=0.3, rate_limits={"status": 15},
                          rate_window_s=1.0)
    backend = RunPodBackend(runpod_settings(emu, runpod_http_attempts=10))
    tiles = [_tile(f"t{i}", seed=i) for i in range(12)]

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(backend.refine(t, RefineOptions()) for t in tiles))
        finally:
            await backend.aclose()

    for tile, result in zip(tiles, asyncio.run(go()), strict=True):
        assert np.array_equal(result.image, tint(tile.image, tile.seed))
    stats = emu.stats("upscale")
    assert stats["rejected"]["429"] > 0  # the budget did bite
    assert stats["submitted"] == 12 and sorted(stats["request_keys"].values()) == [1] * 12


def test_echo_without_tint_returns_tiles_unchanged(runpod_emulator, runpod_settings, tmp_path):
    from workers.emulator.echo import make_handler

    emu = runpod_emulator(handler=make_handler(tint_tiles=False, models_dir=tmp_path))
    backend = RunPodBackend(runpod_settings(emu))
    tile = _tile(seed=2)
    assert np.array_equal(_refine(backend, tile).image, tile.image)


def test_the_in_flight_limit_grows_when_the_endpoint_scales_up(
        runpod_emulator, runpod_settings, monkeypatch):
    import httpx

    from service.backends.runpod import limits as runpod_limits

    monkeypatch.setattr(runpod_limits, "REFRESH_S", 0.2)
    emu = runpod_emulator(workers=0, latency_s=0.2)  # idle endpoint, scaled to zero
    backend = RunPodBackend(runpod_settings(emu))
    tiles = [_tile(f"t{i}", seed=i) for i in range(8)]

    async def go() -> list[Any]:
        try:
            assert await backend.max_concurrency() == 4  # nothing known yet
            await asyncio.to_thread(httpx.post, f"{emu.root}/_emulator/scale/upscale",
                                    params={"workers": 4})
            await asyncio.sleep(0.3)
            assert await backend.max_concurrency() == 8  # re-read /health: 4 workers
            return await asyncio.gather(*(backend.refine(t, RefineOptions()) for t in tiles))
        finally:
            await backend.aclose()

    results = asyncio.run(go())
    assert [r.tile_id for r in results] == [t.tile_id for t in tiles]
    stats = emu.stats("upscale")
    assert stats["submitted"] == 8 and stats["max_running"] == 4


def test_an_ambiguous_5xx_on_run_costs_one_visible_duplicate(runpod_emulator, runpod_settings):
    """RunPod may queue a job and still answer 5xx; the retry then submits the tile again.
    Both jobs carry the same request_key, so the duplicate is recognisable."""
    emu = runpod_emulator(faults="ghost=1:1")
    backend = RunPodBackend(runpod_settings(emu))
    tile = _tile(seed=5)
    result = _refine(backend, tile)
    assert np.array_equal(result.image, tint(tile.image, 5))
    assert result.accounting.attempts == 1  # the ghost's id was never known to us
    assert result.accounting.possibly_billed == 1  # but it is counted as possibly billed
    assert backend.totals()["possibly_billed"] == 1
    stats = emu.stats("upscale")
    assert stats["submitted"] == 2 and list(stats["request_keys"].values()) == [2]


def test_resume_picks_up_a_paid_runpod_job_instead_of_submitting_again(
        runpod_emulator, runpod_settings):
    """What a re-claimed job does with a tile whose RunPod job an earlier, killed attempt
    submitted: `resume` re-polls that job and returns its tile with its cost; nothing new is
    submitted. A job RunPod no longer knows, or an output that does not fit the tile, gives
    None (the pipeline then refines the tile afresh)."""
    from service.backends.runpod.client import RunPodClient
    from service.core.contracts import TileIn, UpscaleRequest
    from workers.common.imageref import encode_image_ref

    emu = runpod_emulator(latency_s=0.2)
    settings = runpod_settings(emu, runpod_price_per_gpu_second=0.001)
    tile = _tile("3", seed=9)
    request = UpscaleRequest(tiles=[TileIn(tile_id="3", image=encode_image_ref(tile.image),
                                           seed=tile.seed)])

    async def go() -> Any:
        earlier = RunPodClient(settings.runpod_base_url, "upscale", settings.runpod_api_key)
        try:  # the killed attempt: submitted, never waited for
            remote_id = await earlier.run(request.model_dump(mode="json", exclude_none=True))
        finally:
            await earlier.aclose()
        backend = RunPodBackend(settings)
        try:
            found = await backend.resume(remote_id, tile)
            gone = await backend.resume("no-such-job", tile)
            other = TileTask("3", np.zeros((16, 16, 3), np.uint8), "", tile.seed)
            misfit = await backend.resume(remote_id, other)
            return remote_id, found, gone, misfit, backend.totals()
        finally:
            await backend.aclose()

    remote_id, found, gone, misfit, totals = asyncio.run(go())
    assert found is not None and np.array_equal(found.image, tint(tile.image, tile.seed))
    assert found.accounting.remote_job_ids == [remote_id]
    assert found.accounting.execution_ms > 0 and found.accounting.cost_usd > 0
    assert totals["cost_usd"] > 0
    assert gone is None and misfit is None
    assert emu.stats("upscale")["submitted"] == 1  # only the earlier attempt's job
