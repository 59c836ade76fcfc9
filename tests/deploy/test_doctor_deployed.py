"""`aat doctor` on a deployed stack: job runners alive (the Compose health check of a runner),
the artifact store writable, a subset of checks by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cli.doctor import run_checks

pytestmark = pytest.mark.slow  # a deployed stack: runners, moto_server, network namespaces

ROOT = Path(__file__).resolve().parents[2]
AAT = [sys.executable, "-c", "from service.cli import main; main()"]


@pytest.fixture
def stack_env(tmp_path: Path, redis_queue: tuple[str, str], monkeypatch) -> dict[str, str]:
    broker, queue = redis_queue
    env = {"AAT_BROKER_URL": broker, "AAT_CELERY_QUEUE": queue,
           "AAT_DATA_DIR": str(tmp_path / "data"), "AAT_CONFIG": str(tmp_path / "none.toml"),
           "AAT_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


def test_runners_check_fails_without_a_runner_and_passes_with_one(stack_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    [settings, none] = run_checks(["runners"])
    assert settings.ok and not none.ok and "no job runner on queue" in none.detail
    log = open(tmp_path / "runner.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*AAT, "runner", "-c", "1"], env={**os.environ, **stack_env},
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        found = run_checks(["runners"], this_host=True)[1]
        while not found.ok and time.monotonic() < deadline:
            found = run_checks(["runners"], this_host=True)[1]
        assert found.ok, (tmp_path / "runner.log").read_text()[-2000:]
        assert f"@{socket.gethostname()}" in found.detail and "1 alive" in found.detail
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_doctor_runs_the_named_checks_only(stack_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **stack_env}
    out = subprocess.run([*AAT, "doctor", "--check", "artifacts", "--check", "broker"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    names = [line.split()[1] for line in out.stdout.splitlines() if line.strip()]
    assert names == ["settings", "broker", "artifacts"]
    assert "writable" in out.stdout
    bad = subprocess.run([*AAT, "doctor", "--check", "disk"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error [invalid_params]: unknown check")
