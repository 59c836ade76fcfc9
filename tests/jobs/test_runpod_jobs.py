"""Jobs against emulated RunPod endpoints with the embedded executor: correct output, cancel,
failing backend, and a killed executor process that resumes without paying twice."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_helpers import (
    embedded_process,
    emulator,
    expected_echo_pixels,
    hold_when,
    kill_when_quiet,
    pixels,
    png,
    quiet_moment,
    refined,
    runpod_env,
    runpod_settings,
    small_params,
    tiles_sent,
    wait_until,
)

from service.backends.base import RefineOptions
from service.backends.runpod import RunPodBackend
from service.core.jobs import JobStatus, TargetSpec
from service.jobs.context import RunContext
from service.jobs.orchestrator import JobRun
from service.jobs.service import JobService, build_job_service
from service.pipeline.refine import TileWork, refine_tiles
from service.storage.job_store import LeaseLost
from service.storage.records import NewTile
from workers.emulator import EmulatorServer, Faults


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with emulator(workers=4, latency_s=0.05) as server:
        yield server


def _service(job_settings: Any, emu: EmulatorServer, **extra: Any) -> JobService:
    svc = build_job_service(job_settings(**runpod_settings(emu), **extra))
    svc.start()
    return svc


def _finished(svc: JobService, job_id: str, timeout: float = 60) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, timeout, "job end")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_every_tile_is_refined_and_blended_correctly(job_settings: Any, emu: EmulatorServer,
                                                     tmp_path: Path) -> None:
    svc = _service(job_settings, emu)
    data, params = png(64), small_params(caption=True)
    job, _ = svc.submit(data, filename="rock.png", params=params,
                        target=TargetSpec(repo="game", path="rock.png"))
    done = _finished(svc, job.id)
    svc.stop()
    assert done.status == JobStatus.succeeded, done.error
    out = pixels((tmp_path / "repo" / "rock_x2.png").read_bytes())
    assert np.array_equal(out, expected_echo_pixels(data, params, 7))
    tiles = svc.tiles(job.id)
    assert all(t["status"] == "refined" and t["caption"].startswith("a 64x64 tile")
               for t in tiles)
    stats = emu.stats("upscale")
    assert stats["submitted"] == len(tiles) == done.cost.runpod_jobs - len(tiles)  # + captions
    assert max(stats["request_keys"].values()) == 1
    assert done.cost.execution_s > 0 and done.cost.usd > 0


@pytest.mark.parametrize("tileable", [False, True])  # streamed PNG / whole-image encode
def test_png_compress_level_changes_the_file_size_not_the_pixels(
        job_settings: Any, emu: EmulatorServer, tmp_path: Path, tileable: bool) -> None:
    data, params = png(64), small_params(tileable=tileable)
    sizes = {}
    for level in (0, 9):
        svc = _service(job_settings, emu, png_compress_level=level)
        job, _ = svc.submit(data, filename=f"l{level}.png", params=params,
                            target=TargetSpec(repo="game", path=f"l{level}.png"))
        done = _finished(svc, job.id)
        svc.stop()
        assert done.status == JobStatus.succeeded, done.error
        out = (tmp_path / "repo" / f"l{level}_x2.png").read_bytes()
        assert np.array_equal(pixels(out), expected_echo_pixels(data, params, 7))
        sizes[level] = len(out)
    assert sizes[9] < sizes[0]  # level 0 stores the rows uncompressed


def test_cancel_while_running_cancels_runpod_jobs_and_delivers_nothing(
        job_settings: Any, tmp_path: Path) -> None:
    with emulator(workers=2, latency_s=1.0) as emu:
        svc = _service(job_settings, emu)
        job, _ = svc.submit(png(64), filename="rock.png", params=small_params(),
                            target=TargetSpec(repo="game", path="rock.png"))
        wait_until(lambda: emu.stats("upscale")["by_status"].get("IN_PROGRESS", 0) >= 2
                   or emu.stats("upscale")["started"] >= 2, 20, "tiles in flight")
        svc.cancel(job.id)
        done = _finished(svc, job.id)
        svc.stop()
        stats = emu.stats("upscale")
    assert done.status == JobStatus.canceled and done.output is None
    assert stats["canceled"] >= 1  # the in-flight RunPod jobs were canceled
    assert stats["submitted"] < len(svc.tiles(job.id))  # and no more were sent
    assert _files(tmp_path / "repo") == []


def test_a_failing_backend_fails_the_job_with_its_reason(job_settings: Any,
                                                          tmp_path: Path) -> None:
    faults = Faults.parse("fatal=1")
    with emulator(workers=2, latency_s=0.01, faults=faults) as emu:
        svc = _service(job_settings, emu)
        job, _ = svc.submit(png(64), filename="rock.png", params=small_params(),
                            target=TargetSpec(repo="game", path="rock.png"))
        done = _finished(svc, job.id)
        svc.stop()
    assert done.status == JobStatus.failed
    assert done.error.code and "tile" in done.error.message and "\n" not in done.error.message
    assert _files(tmp_path / "repo") == []
    data = tmp_path / "data"
    assert not [f for f in _files(data) if "tmp" in f or "/outputs/" in f]


@pytest.mark.parametrize("tiles_per_job", [1, 2])
def test_embedded_executor_killed_mid_job_resumes_without_paying_twice(
        job_settings: Any, tmp_path: Path, tiles_per_job: int) -> None:
    """With two tiles per RunPod job, each tile of a shared job in flight at the kill is taken
    from that job by the next attempt."""
    with emulator(workers=3, latency_s=0.4) as emu:
        settings = job_settings(**runpod_settings(emu))
        submitter = build_job_service(settings)  # not started: the subprocess runs the jobs
        data, params = png(96), small_params()
        job, _ = submitter.submit(data, filename="rock.png", params=params,
                                  target=TargetSpec(repo="game", path="rock.png"))
        n_tiles = 16
        env = {**os.environ, **runpod_env(emu), "AAT_DATA_DIR": str(settings.data_dir),
               "AAT_REPOS": f'{{"game": "{tmp_path / "repo"}"}}', "AAT_LEASE_S": "2",
               "AAT_RUNPOD_TILES_PER_JOB": str(tiles_per_job)}
        first = embedded_process(env)
        try:
            hold_when(lambda: refined(submitter, job.id) >= 4, emu, "upscale",
                      "four tiles refined")
            kill_when_quiet(first.pid, lambda: quiet_moment(submitter, emu, job.id, 4))
        finally:
            first.kill()
            first.wait()
        emu.scale("upscale", 3)
        mid = submitter.get(job.id)
        assert mid.status == JobStatus.running and mid.stages["refine"].done < n_tiles
        in_flight = [t for t in submitter.store.get_tiles(job.id)
                     if t.remote_job_id and t.status != "refined"]
        assert in_flight  # paid-for RunPod jobs the next attempt must pick up, not resubmit
        if tiles_per_job == 2:  # some of them carry two tiles
            assert len({t.remote_job_id for t in in_flight}) < len(in_flight)
        second = embedded_process(env)
        try:
            done = _finished(submitter, job.id, 90)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait()
        stats = emu.stats("upscale")
    assert done.status == JobStatus.succeeded and done.attempts == 2
    assert len(submitter.tiles(job.id)) == n_tiles
    assert tiles_sent(stats) == n_tiles  # nothing paid twice, in flight or finished
    assert max(stats["request_keys"].values()) == 1
    if tiles_per_job == 2:
        assert stats["tiles_per_job"].get("2", 0) >= 2  # tiles did share RunPod jobs
    out = pixels((tmp_path / "repo" / "rock_x2.png").read_bytes())
    assert np.array_equal(out, expected_echo_pixels(data, params, 7))


def _stalled_with_tiles_on_runpod(job_settings: Any, emu: EmulatorServer
                                  ) -> tuple[Any, JobService, str]:
    """A started service runs the 96 px rock's job until four tiles are on RunPod with their
    ids recorded, then stalls past its lease: as a dead runner's, the job is up for
    re-claiming, and the stalled runner hears so at its next heartbeat. The tiles wait for a
    GPU until then (the endpoint scaled to zero; scaled back to its four workers after): with
    the workers running, a tile ending before the lease went let the stalled runner start one
    more, whose RunPod job it could no longer record and cancelled (seen under load)."""
    settings = job_settings(**runpod_settings(emu))
    emu.scale("upscale", 0)
    stalled = build_job_service(settings)
    stalled.start()
    job, _ = stalled.submit(png(96), filename="rock.png", params=small_params(),
                            target=TargetSpec(repo="game", path="rock.png"))

    def on_runpod() -> bool:
        recorded = sum(1 for t in stalled.store.get_tiles(job.id) if t.remote_job_id)
        return recorded == emu.stats("upscale")["submitted"] >= 4

    wait_until(on_runpod, 30, "tiles on RunPod")
    stalled.store.mutate(job.id, lambda _row: {"owner": "stalled-runner-gone",
                                               "lease_until": 0.0})
    emu.scale("upscale", 4)
    return settings, stalled, job.id


def _check_rock(path: Path) -> None:
    """The 96 px rock refined tile by tile by the echo worker, delivered at ``path``."""
    assert np.array_equal(pixels(path.read_bytes()),
                          expected_echo_pixels(png(96), small_params(), 7))


@pytest.mark.slow  # 7-24 s: the fast tier leaves it to CI
def test_a_runner_that_lost_its_lease_does_not_cancel_what_the_new_owner_repolls(
        job_settings: Any, tmp_path: Path) -> None:
    """A runner stalled past its lease while tiles were on RunPod: another runner re-claims
    the job and re-polls those RunPod jobs; the stalled one, hearing it lost the lease, lets
    them finish instead of cancelling them (it used to cancel, and the new owner paid again)."""
    with emulator(workers=4, latency_s=1.5) as emu:
        settings, stalled, job_id = _stalled_with_tiles_on_runpod(job_settings, emu)
        new_owner = build_job_service(settings)
        new_owner.start()
        try:
            done = _finished(new_owner, job_id, 60)
        finally:
            new_owner.stop()
            stalled.stop()
        stats = emu.stats("upscale")
    n_tiles = 16
    assert done.status == JobStatus.succeeded and done.attempts == 2, done.error
    assert stats["canceled"] == 0 and stats["submitted"] == n_tiles  # none paid twice
    assert done.cost.runpod_jobs == n_tiles
    _check_rock(tmp_path / "repo" / "rock_x2.png")


def test_a_runner_that_lost_its_lease_cannot_overwrite_the_runpod_job_the_new_owner_repolls(
        job_settings: Any) -> None:
    """A stalled runner that has not heard yet that it lost its lease sends one more tile (it
    showed the tile refining while it still held the lease). Its tile writes are fenced like
    its job-row writes: the RunPod job id the new owner recorded (and re-polls) stays on the
    tile row, the tile's state is not touched again, and the RunPod job whose id nobody could
    record is cancelled at once instead of running to be paid for."""
    with emulator(workers=2, latency_s=1.0) as emu:
        settings = job_settings(**runpod_settings(emu))
        svc = build_job_service(settings)  # not started: the test plays both runners
        job, _ = svc.submit(png(32), filename="rock.png", params=small_params())
        store = svc.store
        store.put_tiles(job.id, [NewTile(0, 0, 0, 64, 64)])
        assert store.claim(job.id, "stalled", lease_s=60) is not None

        class Stalls(JobRun):
            def tile_started(self, stage: str, index: int) -> None:
                super().tile_started(stage, index)
                # then the job changed hands; the new owner recorded the RunPod job it
                # re-polls for tile 0
                store.mutate(job.id, lambda _row: {"owner": "new-owner"})
                store.update_tile(job.id, 0, remote_job_id="rp-of-new-owner", cache_key="k0")

        stalled = Stalls(RunContext(settings, store, svc.artifacts), job.id, "stalled",
                         threading.Event())
        work = TileWork(0, np.full((64, 64, 3), 90, np.uint8), "", 7)

        async def stalled_sends_a_tile() -> None:
            backend = RunPodBackend(settings)
            try:  # no stop check before the tile is in: only the writes can stop it
                await refine_tiles(backend, [work], RefineOptions(), svc.artifacts,
                                   observer=stalled, poll_s=30)
            finally:
                await backend.aclose()

        with pytest.raises(LeaseLost):
            asyncio.run(stalled_sends_a_tile())
        stats = emu.stats("upscale")
    tile = store.get_tiles(job.id)[0]
    assert (tile.remote_job_id, tile.cache_key, tile.status) == ("rp-of-new-owner", "k0",
                                                                 "refining")
    assert stats["submitted"] == 1 and stats["canceled"] == 1  # not left running, unrecorded


@pytest.mark.slow  # 7-24 s: the fast tier leaves it to CI
def test_tiles_a_runner_finished_after_losing_its_lease_are_paid_for_once(
        job_settings: Any, tmp_path: Path) -> None:
    """The stalled runner's tiles on RunPod finish into the cache after it lost its lease;
    their cost writes are refused. The new owner, started only then, takes them from the cache
    instead of re-polling, and their GPU time and price land on the job once (kept with each
    cached tile): sixteen tiles' worth, sixteen RunPod jobs."""
    latency = 1.5
    with emulator(workers=4, latency_s=latency) as emu:
        settings, stalled, job_id = _stalled_with_tiles_on_runpod(job_settings, emu)
        cached = settings.data_dir / "artifacts" / "refined"
        wait_until(lambda: len(list(cached.rglob("*.npy"))) == emu.stats("upscale")[
            "submitted"], 30, "the stalled runner's tiles cached")
        assert stalled.get(job_id).cost.execution_s == 0  # its cost writes were refused
        new_owner = build_job_service(settings)
        new_owner.start()
        try:
            done = _finished(new_owner, job_id, 60)
        finally:
            new_owner.stop()
            stalled.stop()
        stats = emu.stats("upscale")
    n_tiles = 16
    assert done.status == JobStatus.succeeded and done.attempts == 2, done.error
    assert stats["canceled"] == 0 and stats["submitted"] == n_tiles
    assert done.cost.runpod_jobs == n_tiles
    # sixteen tiles' GPU time, each counted once: what the endpoint billed
    assert n_tiles * latency <= done.cost.execution_s
    assert done.cost.execution_s == pytest.approx(stats["execution_ms"] / 1000,
                                                  abs=0.001 * n_tiles), stats
    price = job_settings().runpod_price_per_gpu_second
    assert done.cost.usd == pytest.approx(done.cost.execution_s * price, rel=1e-6)
    _check_rock(tmp_path / "repo" / "rock_x2.png")


@pytest.mark.slow  # 7-24 s: the fast tier leaves it to CI
def test_captions_in_flight_at_a_crash_are_resumed_and_every_runpod_job_is_counted(
        job_settings: Any, tmp_path: Path) -> None:
    """kill -9 while captions are on the GPU: the next attempt picks them up by their RunPod
    ids (an acceptance run paid 6 of 81 twice), and the job's cost counts every RunPod job the
    endpoints saw (it counted 160 where they saw 168)."""
    with emulator(workers=2, latency_s=0.05, caption_latency_s=1.0) as emu:
        settings = job_settings(**runpod_settings(emu))
        submitter = build_job_service(settings)  # not started: the subprocess runs the jobs
        data, params = png(96), small_params().model_copy(update={"caption": True})
        job, _ = submitter.submit(data, filename="rock.png", params=params)
        n_tiles = 16
        env = {**os.environ, **runpod_env(emu), "AAT_DATA_DIR": str(settings.data_dir),
               "AAT_LEASE_S": "2"}

        def captions_in_flight() -> bool:
            row = submitter.store.get(job.id)
            ids = [r["id"] for r in row.remote_jobs if r["kind"] == "caption"]
            done = {t.idx for t in submitter.store.get_tiles(job.id) if t.caption}
            waiting = [r for r in row.remote_jobs if r["kind"] == "caption"
                       and r["tile"] not in done]
            # every caption RunPod accepted has its id recorded, and some are not back yet;
            # and every tile sent to be refined has its id recorded too
            refining = sum(1 for t in submitter.store.get_tiles(job.id) if t.remote_job_id)
            return (bool(waiting) and len(ids) == emu.stats("caption")["submitted"] >= 3
                    and refining == tiles_sent(emu.stats("upscale")))

        first = embedded_process(env)
        try:
            hold_when(lambda: emu.stats("caption")["submitted"] >= 3, emu, "caption",
                      "three captions sent")
            kill_when_quiet(first.pid, captions_in_flight, what="captions in flight")
        finally:
            first.kill()
            first.wait()
        emu.scale("caption", 2)
        second = embedded_process(env)
        try:
            done = _finished(submitter, job.id, 90)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait()
        captions, upscales = emu.stats("caption"), emu.stats("upscale")
    assert done.status == JobStatus.succeeded and done.attempts == 2
    assert captions["submitted"] == n_tiles  # no caption paid twice
    assert max(captions["request_keys"].values()) == 1
    assert upscales["submitted"] == n_tiles
    assert done.cost.runpod_jobs == captions["submitted"] + upscales["submitted"]


def test_a_style_image_travels_with_every_tile(job_settings: Any, emu: EmulatorServer) -> None:
    from service.core.errors import ParamsError

    svc = _service(job_settings, emu)
    data = png(48)
    with pytest.raises(ParamsError, match="upload it first"):
        svc.submit(data, filename="a.png", params=small_params(style_image_sha256="0" * 64,
                                                               ip_adapter_scale=0.5))
    plain, _ = svc.submit(data, filename="a.png", params=small_params())
    _finished(svc, plain.id)
    style = svc.add_style_image(png(16, seed=9))
    styled, _ = svc.submit(data, filename="a.png", params=small_params(
        style_image_sha256=style, ip_adapter_scale=0.5))
    done = _finished(svc, styled.id)
    svc.stop()
    assert done.status == JobStatus.succeeded, done.error
    # same tiles and seeds, but the style image changes every request: nothing from the cache
    stats = emu.stats("upscale")
    assert stats["submitted"] == 8 and len(stats["request_keys"]) == 8


def test_seam_fix_tiles_are_refined_after_the_blend(job_settings: Any,
                                                    emu: EmulatorServer) -> None:
    svc = _service(job_settings, emu)
    job, _ = svc.submit(png(64), filename="a.png", params=small_params(seam_fix="band"))
    done = _finished(svc, job.id)
    svc.stop()
    assert done.status == JobStatus.succeeded, done.error
    seam = done.stages["seam_fix"]
    assert seam.total > 0 and seam.done == seam.total
    assert emu.stats("upscale")["submitted"] == done.stages["refine"].total + seam.total


def test_ambiguous_submissions_are_counted_as_possibly_billed(job_settings: Any) -> None:
    """RunPod queued the job but answered 502: the retry is a second job. The job's record
    shows it: every job the endpoints saw is either counted or possibly billed."""
    with emulator(workers=2, faults=Faults.parse("ghost=1:2", retry_after_s=0.01)) as emu:
        svc = _service(job_settings, emu)
        job, _ = svc.submit(png(64), filename="a.png", params=small_params())
        done = _finished(svc, job.id)
        svc.stop()
        seen = emu.stats("upscale")["submitted"] + emu.stats("caption")["submitted"]
    assert done.status == JobStatus.succeeded
    assert done.cost.possibly_billed == 2
    assert done.cost.runpod_jobs + done.cost.possibly_billed == seen
