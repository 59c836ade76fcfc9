"""Pre-upscaled images are kept: a re-run job does not run a model upscaler again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_helpers import png, small_params, wait_until

from service.jobs.service import build_job_service
from service.pipeline.pre_cache import CachedUpscaler, cached_upscaler
from service.storage.artifacts import LocalArtifactStore
from service.upscalers.registry import get_upscaler


class Counting:
    """The real anime4k upscaler, counting how often it actually runs."""

    def __init__(self) -> None:
        self.real = get_upscaler("anime4k")
        self.name, self.model, self.calls = self.real.name, self.real.model, 0

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str:
        return ""

    def upscale(self, rgb: np.ndarray, width: int, height: int, *,
                tileable: bool = False) -> np.ndarray:
        self.calls += 1
        return self.real.upscale(rgb, width, height, tileable=tileable)


def test_a_model_upscale_runs_once_per_input_and_size(tmp_path: Path) -> None:
    store, inner = LocalArtifactStore(tmp_path), Counting()
    cached = CachedUpscaler(inner, store)
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    first = cached.upscale(rgb, 64, 64)
    again = CachedUpscaler(inner, store).upscale(rgb, 64, 64)  # e.g. a resumed job
    other = cached.upscale(rgb, 96, 96)
    assert np.array_equal(first, again) and other.shape == (96, 96, 3)
    assert inner.calls == 2
    assert cached_upscaler(get_upscaler("lanczos"), store).name == "lanczos"  # not wrapped


def test_a_rerun_job_reuses_the_pre_upscale(job_settings: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.pipeline.pre_cache")
    svc = build_job_service(job_settings())
    svc.start()
    job, _ = svc.submit(png(32), filename="a.png", params=small_params(upscaler="anime4k"))
    wait_until(lambda: svc.get(job.id).status.terminal, 60, "first job")
    stored = [p for p in svc.artifacts.files() if "/pre/" in p.as_posix()]
    assert "from the cache" not in caplog.text
    rerun = svc.rerun(job.id, [0])
    done = wait_until(lambda: (j := svc.get(rerun.id)).status.terminal and j, 60, "re-run")
    svc.stop()
    assert done.status == "succeeded" and len(stored) == 1
    assert [p for p in svc.artifacts.files() if "/pre/" in p.as_posix()] == stored
    assert "pre-upscale 64x64 with anime4k from the cache" in caplog.text
    assert svc.result(job.id)[0].read_bytes() == svc.result(rerun.id)[0].read_bytes()
