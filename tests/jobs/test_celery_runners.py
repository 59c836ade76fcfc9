"""A Celery job runner killed with SIGKILL mid-job (real Redis, emulated RunPod, store on SQLite
and on real PostgreSQL): another runner finishes the job and no tile is paid twice."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_helpers import (
    expected_echo_pixels,
    hold_when,
    kill_when_quiet,
    pixels,
    png,
    quiet_moment,
    refined,
    small_params,
    wait_until,
)

from service.core.jobs import JobStatus, TargetSpec
from service.jobs.service import JobService

pytestmark = pytest.mark.slow  # real Celery runner processes


def _finished(svc: JobService, job_id: str, timeout: float) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, timeout, "job end")


def test_runner_killed_mid_job_the_job_still_succeeds_without_paying_twice(
        celery_setup: Callable[..., Any], tmp_path: Path) -> None:
    svc, runners, emu = celery_setup(workers=3, latency_s=0.4)
    first = runners.start(1)
    data, params = png(96), small_params()
    job, _ = svc.submit(data, filename="rock.png", params=params,
                        target=TargetSpec(repo="game", path="rock.png"))
    # the whole runner host dies: main process and child
    hold_when(lambda: refined(svc, job.id) >= 4, emu, "upscale", "four tiles refined")
    kill_when_quiet(first.pid, lambda: quiet_moment(svc, emu, job.id, 4), group=True)
    assert first.wait(timeout=10) == -signal.SIGKILL
    emu.scale("upscale", 3)
    mid = svc.get(job.id)
    assert mid.status == JobStatus.running and mid.stages["refine"].done < 16
    in_flight = [t for t in svc.store.get_tiles(job.id)
                 if t.remote_job_id and t.status != "refined"]
    assert in_flight  # paid-for RunPod jobs the next attempt must pick up, not resubmit
    runners.start(1)
    done = _finished(svc, job.id, 90)
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 2
    stats = emu.stats("upscale")
    assert stats["submitted"] == 16 and max(stats["request_keys"].values()) == 1
    out = pixels((tmp_path / "repo" / "rock_x2.png").read_bytes())
    assert np.array_equal(out, expected_echo_pixels(data, params, 7))
