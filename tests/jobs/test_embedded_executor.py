"""The embedded executor: a stop puts running jobs back in the queue, a restart finishes them,
and a job that keeps killing its runner is failed instead of looping forever."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jobs_helpers import emulator, png, runpod_settings, small_params, wait_until

from service.core.jobs import JobStatus, TargetSpec
from service.jobs.service import build_job_service


def test_stop_requeues_the_running_job_and_a_restart_finishes_it(
        job_settings: Any, tmp_path: Path) -> None:
    with emulator(workers=2, latency_s=0.5) as emu:
        settings = job_settings(**runpod_settings(emu))
        svc = build_job_service(settings)
        svc.start()
        job, _ = svc.submit(png(64), filename="rock.png", params=small_params(),
                            target=TargetSpec(repo="game", path="rock.png"))
        wait_until(lambda: (st := svc.get(job.id).stages.get("refine")) and st.done >= 1, 30,
                   "first tile")
        svc.stop()
        stopped = svc.get(job.id)
        assert stopped.status == JobStatus.queued
        assert not (tmp_path / "repo" / "rock_x2.png").exists()
        again = build_job_service(settings)
        again.start()
        done = wait_until(lambda: (j := again.get(job.id)).status.terminal and j, 60, "end")
        again.stop()
        stats = emu.stats("upscale")
    assert done.status == JobStatus.succeeded and done.attempts == 2
    assert (tmp_path / "repo" / "rock_x2.png").exists()
    assert max(stats["request_keys"].values()) == 1


def test_a_job_that_keeps_crashing_its_runner_is_failed(job_settings: Any) -> None:
    settings = job_settings(job_max_attempts=2, lease_s=1.5)
    svc = build_job_service(settings)
    job, _ = svc.submit(png(), filename="a.png", params=small_params())
    for crash in range(2):  # two runners claimed it and died without a word
        assert svc.store.claim(job.id, f"dead-{crash}", lease_s=0.01) is not None
        time.sleep(0.05)
    svc.start()
    done = wait_until(lambda: (j := svc.get(job.id)).status.terminal and j, 30, "end")
    svc.stop()
    assert done.status == JobStatus.failed and done.attempts == 3
    assert done.error.code == "too_many_attempts" and "interrupted 2 times" in done.error.message


def test_a_gpu_loop_cancelled_under_the_job_requeues_it_at_once(
        job_settings: Any, monkeypatch: Any) -> None:
    """An ``asyncio.CancelledError`` escaping the GPU loop used to leave the job `running`
    until its lease expired (minutes); now the job is queued again at once."""
    import asyncio

    from service.jobs import runner

    settings = job_settings(lease_s=600)
    svc = build_job_service(settings)
    job, _ = svc.submit(png(), filename="a.png", params=small_params())

    def torn_down(*_args: Any, **_kw: Any) -> None:
        raise asyncio.CancelledError()

    monkeypatch.setattr(runner, "run_job", torn_down)
    assert runner.run_one(svc.executor.ctx, job.id) == JobStatus.queued.value
    row = svc.store.get(job.id)
    assert row is not None and row.status == JobStatus.queued.value
    assert row.lease_until is None
    monkeypatch.undo()
    svc.start()  # and a runner can take it again and finish it
    done = wait_until(lambda: (j := svc.get(job.id)).status.terminal and j, 30, "end")
    svc.stop()
    assert done.status == JobStatus.succeeded and done.attempts == 2


def test_a_job_whose_input_this_runner_cannot_read_fails_in_one_clear_line(
        job_settings: Any, tmp_path: Path) -> None:
    """A runner with another data directory used to fail the job as internal_error with a raw
    FileNotFoundError; now the error names the cause and says the file may be sent again."""
    api = build_job_service(job_settings())  # the host that took the submission
    job, _ = api.submit(png(), filename="a.png", params=small_params())
    runner = build_job_service(job_settings(data_dir=tmp_path / "elsewhere",
                                            database_url=api.settings.effective_database_url))
    runner.start()
    done = wait_until(lambda: (j := runner.get(job.id)).status.terminal and j, 30, "end")
    runner.stop()
    assert done.status == JobStatus.failed and done.error is not None
    assert done.error.code == "input_missing" and done.error.retryable
    message = done.error.message
    assert "AAT_DATA_DIR" in message and "a.png again" in message
    assert "\n" not in message and "Errno" not in message and "internal" not in message
