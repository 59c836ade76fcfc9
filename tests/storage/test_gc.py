"""`aat gc`: artifacts of old finished jobs go, those of recent or unfinished jobs stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from service.core.errors import NotFound
from service.core.jobs import JobStatus
from service.core.params import UpscaleParams
from service.jobs.service import build_job_service

ROOT = Path(__file__).resolve().parents[2]


def _png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), seed, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_gc_deletes_only_old_finished_artifacts(job_settings: Any, tmp_path: Path) -> None:
    settings = job_settings()
    svc = build_job_service(settings)
    svc.start()
    params = UpscaleParams(scale=2, tile_size=64, overlap=8, upscaler="lanczos", seed=1)
    old, _ = svc.submit(_png(10), filename="old.png", params=params)
    new, _ = svc.submit(_png(20), filename="new.png", params=params)
    for job in (old, new):
        deadline = time.monotonic() + 30
        while not svc.get(job.id).status.terminal and time.monotonic() < deadline:
            time.sleep(0.05)
    svc.stop()
    queued, _ = svc.submit(_png(30), filename="queued.png", params=params)  # never runs
    old_result, _ = svc.result(old.id)
    new_result, _ = svc.result(new.id)
    # age the old job and every artifact by 30 days
    from service.storage.job_store import utcnow

    svc.store.update(old.id, finished_at=utcnow().replace(year=utcnow().year - 1))
    month_ago = time.time() - 30 * 86400
    for path in svc.artifacts.files():
        os.utime(path, (month_ago, month_ago))
    env = {**os.environ, "AAT_DATA_DIR": str(settings.data_dir)}
    dry = subprocess.run([sys.executable, "-c", "from service.cli import main; main()", "gc",
                          "--days", "7", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    assert "1 old jobs; would free 2 files" in dry.stdout and old_result.exists()
    real = subprocess.run([sys.executable, "-c", "from service.cli import main; main()", "gc",
                           "--days", "7"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True)
    assert "freed 2 files" in real.stdout
    assert not old_result.exists() and new_result.exists()
    assert svc.get(queued.id).status == JobStatus.queued
    assert svc.artifacts.path("inputs", svc.get(queued.id).input.sha256, ".png").exists()
    try:
        svc.result(old.id)
        raise AssertionError("the old result should be gone")
    except NotFound as exc:
        assert "garbage-collected" in exc.message


def test_gc_keeps_a_cached_results_accounting_exactly_as_long_as_the_result(
        job_settings: Any) -> None:
    """Beside each cached tile or frame lies what the call that made it cost (a re-claimed job
    counts it from there): it stays while its result stays and goes with it, whatever its age."""
    import numpy as np

    from service.backends.base import CallAccounting
    from service.pipeline.refine import keep_spent, spent_key, spent_on
    from service.storage.gc import collect_garbage
    from service.storage.records import NewTile

    svc = build_job_service(job_settings())
    params = UpscaleParams(scale=2, tile_size=64, overlap=8, upscaler="lanczos", seed=1)
    job, _ = svc.submit(_png(40), filename="kept.png", params=params)  # queued: still in use
    kept, dropped = "a" * 64, "b" * 64
    svc.store.put_tiles(job.id, [NewTile(0, 0, 0, 16, 16, status="refined", cache_key=kept)])
    for key in (kept, dropped):
        svc.artifacts.put_array(key, np.zeros((4, 4, 3), np.uint8))
        keep_spent(svc.artifacts, key, CallAccounting(remote_job_ids=[f"rp-{key[0]}"],
                                                      execution_ms=1500, cost_usd=0.01))
    month_ago = time.time() - 30 * 86400
    for path in svc.artifacts.files():
        os.utime(path, (month_ago, month_ago))
    report = collect_garbage(svc.store, svc.artifacts, days=7)
    assert report.files == 2  # the unused result and its accounting
    assert svc.artifacts.get_array(kept) is not None
    assert spent_on(svc.artifacts, kept) == CallAccounting(
        remote_job_ids=["rp-a"], execution_ms=1500, cost_usd=0.01)
    assert svc.artifacts.get_array(dropped) is None
    assert svc.artifacts.get_text(spent_key(dropped)) is None
