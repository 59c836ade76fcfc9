"""An animate job picked up again after its runner was interrupted, on the RunPod emulator:
frames whose RunPod jobs were already submitted are re-polled, never paid twice, and the sheet
is the one an uninterrupted run with the same seed makes.

- ``kill -9`` of the process running the job (`aat up`'s embedded executor) with frames on
  RunPod: the next process re-claims the job when its lease runs out and re-polls them;
- a runner stopping gracefully lets the frames in flight finish into the cache (as upscale
  tiles do) instead of cancelling them; the job goes back to the queue and the next start
  takes them from the cache;
- a runner that stalled and lost its lease to another one stops without cancelling the RunPod
  jobs the new owner is re-polling; the frames it finishes into the cache after that are
  taken from there by the new owner, with what they cost.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from jobs_helpers import embedded_process, hold_when, kill_when_quiet, wait_until
from PIL import Image
from proc_helpers import scrubbed_env
from pydantic import SecretStr
from sprites import knight_png

from service.backends.edit import WorkerEditBackend
from service.backends.runpod.client import PollPolicy, RunPodClient
from service.core.animate import AnimateParams
from service.core.jobs import JobStatus
from service.jobs.service import JobService, build_job_service
from service.pipeline import animate as pipe
from service.settings import Settings
from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler

KEY = "emu-key"
EDIT_SIDE = 64
LATENCY = 0.8  # "GPU" seconds per frame: frames are still on RunPod when the runner goes
LONG = 2.0
PARAMS = AnimateParams(motion="walk", frames=8, seed=11)
WORKERS = {"anim": 2, "anim-long": 4}


def sprite_png() -> bytes:
    return knight_png()


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer({
        # two workers and four frames in flight: two running, two queued at any moment
        "anim": EndpointConfig(handler=resolve_handler("animate-echo"), workers=WORKERS["anim"],
                               latency_s=LATENCY),
        # four workers, longer frames: the batch of four runs on after the lease has gone
        "anim-long": EndpointConfig(handler=resolve_handler("animate-echo"),
                                    workers=WORKERS["anim-long"],
                                    latency_s=LONG),
        "anim-ref": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4),
    }, api_key=KEY) as server:
        yield server


def _settings(job_settings: Any, emu: EmulatorServer, endpoint: str = "anim") -> Settings:
    return job_settings(runpod_api_key=KEY, runpod_base_url=emu.url,
                        runpod_animate_endpoint_id=endpoint, animate_edit_side=EDIT_SIDE,
                        runpod_poll_min_s=0.02, runpod_poll_max_s=0.2,
                        runpod_backoff_base_s=0.05)


def _uninterrupted_sheet(emu: EmulatorServer) -> np.ndarray:
    """The sheet the same sprite, parameters and seed make in one go (on another endpoint,
    so the counted one sees only the job's frames)."""
    sprite = np.asarray(Image.open(io.BytesIO(sprite_png())).convert("RGBA"))

    async def run() -> pipe.Animation:
        backend = WorkerEditBackend(RunPodClient(emu.url, "anim-ref", SecretStr(KEY),
                                                 poll=PollPolicy(0.02, 0.2, 60)))
        try:
            return await pipe.animate(sprite, PARAMS, backend, edit_side=EDIT_SIDE)
        finally:
            await backend.aclose()

    sheet = pipe.outputs(asyncio.run(run()), "ref")["ref.png"]
    return _rgba(sheet)


def _rgba(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def _in_flight(svc: JobService, emu: EmulatorServer, job_id: str, min_done: int,
               endpoint: str = "anim") -> bool:
    """``min_done`` frames are in, others are on RunPod, and every RunPod job the endpoint
    accepted has its id recorded on its frame (outside the milliseconds between ``/run``
    answering and the id being committed, in which a kill would pay that frame twice)."""
    stage = svc.get(job_id).stages.get("animate")
    if not stage or stage.done < min_done:
        return False
    tiles = svc.store.get_tiles(job_id)
    recorded = [t for t in tiles if t.remote_job_id]
    waiting = [t for t in recorded if t.status != "refined"]
    return bool(waiting) and len(recorded) == emu.stats(endpoint)["submitted"]


def _check_paid_once(done: Any, emu: EmulatorServer, endpoint: str = "anim",
                     latency: float = LATENCY) -> None:
    """The job succeeded at its second attempt and paid for each frame once."""
    assert done.status == JobStatus.succeeded and done.attempts == 2, done.error
    stats = emu.stats(endpoint)
    assert stats["submitted"] == PARAMS.frames, json.dumps(stats)  # no frame sent twice
    assert stats["canceled"] == 0, stats
    assert done.cost.runpod_jobs == PARAMS.frames and done.cost.possibly_billed == 0
    # each frame's GPU time counted once: exactly what the endpoint billed for its eight
    # frames (not "under nine frames' `latency`": the emulated worker's own time on top of
    # `latency`, 0.05-0.36 s over the eight at load 6, is the machine's, not the job's)
    assert PARAMS.frames * latency <= done.cost.execution_s
    assert done.cost.execution_s == pytest.approx(stats["execution_ms"] / 1000,
                                                  abs=0.001 * PARAMS.frames), stats
    price = Settings.model_fields["runpod_price_per_gpu_second"].default
    assert done.cost.usd == pytest.approx(done.cost.execution_s * price, rel=1e-6)


def _check_sheet(svc: JobService, job_id: str, emu: EmulatorServer) -> None:
    """The job's sheet is the one an uninterrupted run makes."""
    path, _ = svc.result(job_id)
    assert np.array_equal(_rgba(path.read_bytes()), _uninterrupted_sheet(emu))


def _ended(svc: JobService, job_id: str) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, 60, "job end")


def _four_frames_on_runpod(settings: Settings, emu: EmulatorServer,
                           endpoint: str = "anim") -> tuple[JobService, str]:
    """A started service running the sprite's animate job, once four frames (the job's
    concurrency) are on RunPod with their ids recorded, waiting for a GPU: the endpoint has
    no worker until :func:`_gpus_back`. (With the workers running, the moment with exactly
    four frames sent lasted until the first came back, and a loaded machine missed it or
    acted after it: a fifth frame went out.)"""
    emu.scale(endpoint, 0)
    svc = build_job_service(settings)
    svc.start()
    job, _ = svc.submit_animation(sprite_png(), filename="hero.png", params=PARAMS)
    wait_until(lambda: _in_flight(svc, emu, job.id, 0, endpoint)
               and emu.stats(endpoint)["submitted"] == 4, 30, "four frames on RunPod")
    return svc, job.id


def _gpus_back(emu: EmulatorServer, endpoint: str = "anim") -> None:
    emu.scale(endpoint, WORKERS[endpoint])


def _lose_lease(stalled: JobService, job_id: str) -> None:
    """The runner stalled past its lease: as a dead runner's, the job is up for re-claiming,
    and the stalled runner hears so at its next heartbeat."""
    stalled.store.mutate(job_id, lambda _row: {"owner": "stalled-runner-gone",
                                               "lease_until": 0.0})


def _run_to_end(settings: Settings, job_id: str, *stop_after: JobService,
                ) -> tuple[JobService, Any]:
    """A new service takes the job up and runs it to its end (then it and ``stop_after``
    stop): the service and the ended job."""
    svc = build_job_service(settings)
    svc.start()
    try:
        return svc, _ended(svc, job_id)
    finally:
        svc.stop()
        for other in stop_after:
            other.stop()


def test_frames_on_runpod_when_the_runner_is_killed_are_repolled_not_paid_twice(
        job_settings: Any, emu: EmulatorServer) -> None:
    settings = _settings(job_settings, emu)
    submitter = build_job_service(settings)  # not started: the subprocesses run the job
    job, _ = submitter.submit_animation(sprite_png(), filename="hero.png", params=PARAMS)
    env = scrubbed_env(AAT_DATA_DIR=str(settings.data_dir), AAT_LEASE_S="2",
                       RUNPOD_API_KEY=KEY, AAT_RUNPOD_BASE_URL=emu.url,
                       RUNPOD_ANIMATE_ENDPOINT_ID="anim", AAT_ANIMATE_EDIT_SIDE=str(EDIT_SIDE),
                       AAT_RUNPOD_POLL_MIN_S="0.02", AAT_RUNPOD_POLL_MAX_S="0.2")
    first = embedded_process(env)
    try:
        hold_when(lambda: (st := submitter.get(job.id).stages.get("animate")) and st.done >= 2,
                  emu, "anim", "two frames in")
        kill_when_quiet(first.pid, lambda: _in_flight(submitter, emu, job.id, 2),
                        what="frames on RunPod")
    finally:
        first.kill()
        first.wait()
    _gpus_back(emu)
    mid = submitter.get(job.id)
    assert mid.status == JobStatus.running and mid.stages["animate"].done < PARAMS.frames
    on_runpod = {t.idx: t.remote_job_id for t in submitter.store.get_tiles(job.id)
                 if t.remote_job_id and t.status != "refined"}
    assert on_runpod  # paid-for frames the next attempt must pick up, not submit again
    second = embedded_process(env)
    try:
        done = _ended(submitter, job.id)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait()
    _check_paid_once(done, emu)
    frames = {t.idx: t for t in submitter.store.get_tiles(job.id)}
    assert all(frames[i].remote_job_id == rid for i, rid in on_runpod.items())  # the same job
    assert {r["id"] for r in submitter.store.get(job.id).remote_jobs} == {
        t.remote_job_id for t in frames.values()}
    _check_sheet(submitter, job.id, emu)


def test_a_stopping_runner_lets_frames_in_flight_finish_and_the_next_start_keeps_them(
        job_settings: Any, emu: EmulatorServer) -> None:
    settings = _settings(job_settings, emu)
    svc, job_id = _four_frames_on_runpod(settings, emu)
    _gpus_back(emu)
    svc.stop()  # graceful: like SIGTERM to `aat up` or `aat runner`
    stopped = svc.get(job_id)
    stats = emu.stats("anim")
    assert stopped.status == JobStatus.queued  # back in the queue for the next start
    assert stats["canceled"] == 0 and stats["submitted"] == 4  # drained, nothing new sent
    assert stopped.stages["animate"].done == 4  # the four in flight finished and were kept

    again, done = _run_to_end(settings, job_id)
    _check_paid_once(done, emu)
    _check_sheet(again, job_id, emu)


def test_a_runner_that_lost_its_lease_leaves_the_frames_to_the_new_owner(
        job_settings: Any, emu: EmulatorServer) -> None:
    settings = _settings(job_settings, emu, "anim-long")
    stalled, job_id = _four_frames_on_runpod(settings, emu, "anim-long")
    _lose_lease(stalled, job_id)
    _gpus_back(emu, "anim-long")
    new_owner, done = _run_to_end(settings, job_id, stalled)
    _check_paid_once(done, emu, "anim-long", LONG)  # nothing cancelled, nothing sent twice
    _check_sheet(new_owner, job_id, emu)


def _cached_cells(settings: Settings) -> int:
    return len(list((settings.data_dir / "artifacts" / "refined").rglob("*.npy")))


def test_frames_a_runner_finished_after_losing_its_lease_are_paid_for_once(
        job_settings: Any, emu: EmulatorServer) -> None:
    """The stalled runner's four frames finish into the cache after it lost its lease, and
    their cost writes are refused. The new owner, started only then, takes them from the
    cache: their GPU time and price (kept with each cached cell) land on the job once, and
    the RunPod job count stays eight (it used to record four frames' GPU time of eight)."""
    settings = _settings(job_settings, emu, "anim-long")
    stalled, job_id = _four_frames_on_runpod(settings, emu, "anim-long")
    _lose_lease(stalled, job_id)
    _gpus_back(emu, "anim-long")
    wait_until(lambda: _cached_cells(settings) == 4, 30, "the stalled runner's frames cached")
    lost = stalled.get(job_id)
    assert lost.stages["animate"].done == 0 and lost.cost.execution_s == 0  # writes refused
    new_owner, done = _run_to_end(settings, job_id, stalled)
    _check_paid_once(done, emu, "anim-long", LONG)
    _check_sheet(new_owner, job_id, emu)
