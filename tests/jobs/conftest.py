"""Fixtures of the job tests: `aat runner` subprocesses on the real Redis with emulated RunPod
endpoints, the store on SQLite or on real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_helpers import emulator, runpod_env, runpod_settings
from pg_helpers import empty_pg_schema

from service.jobs.service import JobService, build_job_service
from workers.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
AAT = [sys.executable, "-c", "from service.cli import main; main()"]


class Runners:
    """`aat runner` processes, each in its own process group (killed as a whole host would be)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def start(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"runner-{len(self.procs)}.log", "wb")  # noqa: SIM115
        self.logs.append(log)
        proc = subprocess.Popen([*AAT, "runner", "-c", str(concurrency), "--loglevel", "INFO"],
                                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()


@pytest.fixture(params=["sqlite", "postgres"])
def celery_setup(request: pytest.FixtureRequest, job_settings: Any, tmp_path: Path,
                 redis_queue: tuple[str, str]) -> Iterator[Callable[..., Any]]:
    started: list[tuple[Runners, EmulatorServer, JobService]] = []

    def make(workers: int = 8, latency_s: float = 0.05) -> tuple[JobService, Runners, Any]:
        if request.param == "postgres":
            db = _fresh_pg(request)
        else:
            db = f"sqlite:///{tmp_path / 'jobs.db'}"
        broker, queue = redis_queue
        emu = emulator(workers=workers, latency_s=latency_s)
        emu.start()
        settings = job_settings(database_url=db, broker_url=broker, celery_queue=queue,
                                **runpod_settings(emu))
        svc = build_job_service(settings)
        env = {**os.environ, **runpod_env(emu), "AAT_DATA_DIR": str(settings.data_dir),
               "AAT_DATABASE_URL": db, "AAT_BROKER_URL": broker, "AAT_CELERY_QUEUE": queue,
               "AAT_LEASE_S": "2", "AAT_REPOS": f'{{"game": "{tmp_path / "repo"}"}}'}
        runners = Runners(env, tmp_path)
        started.append((runners, emu, svc))
        return svc, runners, emu

    yield make
    for runners, emu, svc in started:
        runners.stop()
        svc.stop()
        emu.stop()


def _fresh_pg(request: pytest.FixtureRequest) -> str:
    return empty_pg_schema(request.getfixturevalue("pg_url"))
