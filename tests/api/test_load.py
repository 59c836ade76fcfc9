"""Concurrent load, bounded and on loopback: 30 submitters and 10 pollers for 30 s against a
real server process, once with the embedded executor (`aat up`) and once with Celery (`aat
serve` + two `aat runner` processes on Redis and PostgreSQL). No request may fail, every job
must end `succeeded`, and the p99 of `POST /v1/jobs` is printed (see docs/benchmarks.md)."""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apitest_helpers import env_for, start_runner
from pg_helpers import throwaway_pg_database
from PIL import Image
from proc_helpers import ServiceProcess, aat_service

pytestmark = pytest.mark.slow

SUBMITTERS, POLLERS, SECONDS = 30, 10, 30.0
TOKEN = "load-" + secrets.token_hex(16)
REDIS_TEST_URL = os.environ.get("AAT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _png(n: int) -> bytes:
    """A unique 24x16 image per submission (no two submissions dedupe into one job)."""
    rng = np.random.default_rng(n)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _server(command: str, env: dict[str, str], log: Path) -> ServiceProcess:
    """`aat COMMAND` (up or serve) on a free port, started and stopped by ``with``."""
    return aat_service(command, "--log-level", "warning", env={**env, "AAT_API_TOKEN": TOKEN},
                       log=log, new_session=True, poll_s=0.2)


def _load(url: str) -> dict[str, Any]:
    """Run the submitters and pollers for SECONDS; every job id, POST latencies, errors."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stop_at = time.monotonic() + SECONDS
    lock = threading.Lock()
    ids: list[str] = []
    post_ms: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))

    def submitter() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while time.monotonic() < stop_at:
                with lock:
                    n = next(counter)
                started = time.perf_counter()
                resp = http.post("/v1/jobs", params={"filename": f"s{n}.png", "scale": "2",
                                                     "upscaler": "lanczos"},
                                 content=_png(n), headers={"Content-Type": "image/png"})
                took = (time.perf_counter() - started) * 1000
                with lock:
                    if resp.status_code != 202:
                        errors.append(f"POST {resp.status_code}: {resp.text[:200]}")
                        continue
                    ids.append(resp.json()["id"])
                    post_ms.append(took)

    def poller(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while time.monotonic() < stop_at:
                with lock:
                    pick = rng.choice(ids) if ids else None
                resp = (http.get(f"/v1/jobs/{pick}") if pick and rng.random() < 0.7
                        else http.get("/v1/jobs", params={"limit": 20}))
                if resp.status_code != 200:
                    with lock:
                        errors.append(f"GET {resp.status_code}: {resp.text[:200]}")
                time.sleep(0.05)

    threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
    threads += [threading.Thread(target=poller, args=(i,)) for i in range(POLLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    return {"ids": ids, "post_ms": post_ms, "errors": errors}


def _all_done(url: str, ids: list[str], timeout: float) -> dict[str, int]:
    """Wait until every job has ended; the count per final status."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    pending = set(ids)
    final: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        while pending and time.monotonic() < deadline:
            for job_id in list(pending)[:200]:
                status = http.get(f"/v1/jobs/{job_id}").json()["status"]
                if status in ("succeeded", "failed", "canceled"):
                    final[status] = final.get(status, 0) + 1
                    pending.discard(job_id)
            time.sleep(0.2)
    final["unfinished"] = len(pending)
    return final


def _report(name: str, run: dict[str, Any], final: dict[str, int]) -> dict[str, Any]:
    lat = np.array(run["post_ms"])
    figures = {"executor": name, "jobs": len(run["ids"]), "errors": len(run["errors"]),
               "post_p50_ms": round(float(np.percentile(lat, 50)), 1),
               "post_p99_ms": round(float(np.percentile(lat, 99)), 1), "final": final}
    print("LOAD " + json.dumps(figures))  # noqa: T201 - the figures for docs/benchmarks.md
    return figures


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "data").mkdir()
    yield tmp_path


def test_load_against_the_embedded_executor(workdir: Path) -> None:
    env = env_for({"data_dir": workdir / "data", "config": workdir / "none.toml"})
    with _server("up", env, workdir / "up.log") as up:
        run = _load(up.url)
        final = _all_done(up.url, run["ids"], 240)
    figures = _report("embedded", run, final)
    assert run["errors"] == [], run["errors"][:5]
    assert figures["jobs"] >= SUBMITTERS  # every submitter got through at least once
    assert final == {"succeeded": len(run["ids"]), "unfinished": 0}


def test_load_against_celery_runners(workdir: Path) -> None:
    queue = f"aat-load-{secrets.token_hex(4)}"
    with throwaway_pg_database("aat_load") as database_url:
        values = {"data_dir": workdir / "data", "config": workdir / "none.toml",
                  "broker_url": REDIS_TEST_URL, "celery_queue": queue,
                  "database_url": database_url}
        env = env_for(values)
        runners = [start_runner({**env, "AAT_API_TOKEN": TOKEN}, workdir / f"runner{i}.log")
                   for i in range(2)]
        try:
            with _server("serve", env, workdir / "serve.log") as serve:
                run = _load(serve.url)
                final = _all_done(serve.url, run["ids"], 240)
        finally:
            for runner in runners:
                runner.kill()
    figures = _report("celery", run, final)
    assert run["errors"] == [], run["errors"][:5]
    assert figures["jobs"] >= SUBMITTERS
    assert final == {"succeeded": len(run["ids"]), "unfinished": 0}
