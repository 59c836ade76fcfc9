"""Fifty jobs at once on two `aat runner` processes (real Redis, emulated RunPod), store on
SQLite and on real PostgreSQL: all succeed, outputs correct, no tile paid twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_helpers import expected_echo_pixels, pixels, png, small_params, wait_until

from service.core.jobs import JobStatus, TargetSpec
from service.jobs.service import JobService

pytestmark = pytest.mark.slow  # real Celery runner processes


def _finished(svc: JobService, job_id: str, timeout: float) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, timeout, "job end")


def test_fifty_jobs_with_two_runners_all_succeed(celery_setup: Callable[..., Any],
                                                 tmp_path: Path) -> None:
    svc, runners, emu = celery_setup(workers=8, latency_s=0.02)
    runners.start(2)
    runners.start(2)
    params = small_params()
    inputs = {f"tex/rock_{i:02d}.png": png(48, seed=i) for i in range(50)}
    jobs = {path: svc.submit(data, filename=Path(path).name, params=params,
                             target=TargetSpec(repo="game", path=path))[0]
            for path, data in inputs.items()}
    assert len({j.id for j in jobs.values()}) == 50
    deadline = time.monotonic() + 150
    for job in jobs.values():
        done = _finished(svc, job.id, max(1.0, deadline - time.monotonic()))
        assert done.status == JobStatus.succeeded, done.error
    for path, data in inputs.items():
        out = tmp_path / "repo" / path.replace(".png", "_x2.png")
        assert np.array_equal(pixels(out.read_bytes()), expected_echo_pixels(data, params, 7))
    stats = emu.stats("upscale")
    assert stats["submitted"] == 50 * 4 and max(stats["request_keys"].values()) == 1
    assert {svc.get(j.id).attempts for j in jobs.values()} == {1}
