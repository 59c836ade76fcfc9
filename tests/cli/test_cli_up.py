"""`aat up` as a real process, driven by the client commands as real processes: submit --wait
(progress from SSE, result written atomically), jobs, status, cancel, doctor, models, the
watcher wired into `aat up`, and one-line errors with exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import typer
from PIL import Image
from proc_helpers import ServiceProcess, aat_service, free_port, scrubbed_env

pytestmark = pytest.mark.slow  # aat up as a real process per test

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["-p", "tile_size=64", "-p", "overlap=16"]


def _png(path: Path, width: int = 40, height: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8)).save(path)
    return path


def _env(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    return scrubbed_env(AAT_DATA_DIR=str(tmp / "data"), AAT_PORT=str(port), AAT_BACKEND="none",
                        AAT_SERVER_URL=f"http://127.0.0.1:{port}", PYTHONUNBUFFERED="1",
                        **extra)


@pytest.fixture
def aat_up(tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """``aat_up(**env)`` starts `aat up` in a process and returns the env for clients."""
    services: list[ServiceProcess] = []

    def start(**extra: str) -> dict[str, str]:
        port = free_port()
        env = _env(tmp_path, port, **extra)
        services.append(aat_service("up", env=env, port=port, cwd=tmp_path,
                                    log=tmp_path / "up.log"))
        services[-1].start()
        return env

    yield start
    for svc in services:
        svc.stop()


def aat_process(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`aat ARGS` as its own process."""
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def aat(env: dict[str, str], *args: str, cwd: Path) -> Ran:
    """`aat ARGS` in this process (same code, same HTTP; saves the interpreter start-up)."""
    from typer.testing import CliRunner

    clean = {k: None for k in os.environ if k.startswith(("AAT_", "RUNPOD_"))}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(_cli_app(), list(args), env={**clean, **env})
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


@lru_cache(maxsize=1)
def _cli_app() -> typer.Typer:
    from service.cli import _assemble

    return _assemble()


def test_submit_wait_writes_the_result_next_to_the_file(aat_up, tmp_path: Path) -> None:
    env = aat_up()
    art = _png(tmp_path / "crate.png")
    done = aat_process(env, "submit", str(art), "--wait", "--scale", "2", *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "crate_x2.png"
    assert done.stdout.strip().splitlines()[-1] == str(out)
    with Image.open(out) as im:
        assert im.size == (80, 48) and im.mode == "RGBA"
    assert "submitted: j_" in done.stderr and "100%" in done.stderr
    job_id = done.stderr.split("submitted: ", 1)[1].split()[0]
    page = f"{env['AAT_SERVER_URL']}/jobs/{job_id}"
    assert f"watch it at {page}" in done.stderr, "aat submit names the job's studio page"
    assert httpx.get(page).status_code == 200
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".aat-tmp")]

    again = aat(env, "submit", str(art), "--wait", "--scale", "2", *SMALL, "-o",
                str(tmp_path / "copy.png"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already submitted" in again.stderr
    assert (tmp_path / "copy.png").read_bytes() == out.read_bytes()

    listed = aat(env, "jobs", "--json", cwd=tmp_path)
    items = json.loads(listed.stdout)["items"]
    assert len(items) == 1 and items[0]["status"] == "succeeded"
    job_id = items[0]["id"]
    table = aat_process({**env, "COLUMNS": "80"}, "jobs", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert job_id in table.stdout and "succeeded" in table.stdout  # ids copyable at 80 columns
    shown = aat(env, "status", job_id, cwd=tmp_path)
    assert shown.returncode == 0 and f"{job_id}  succeeded" in shown.stdout
    assert "output 80x48 png" in shown.stdout
    canceled = aat(env, "cancel", job_id, cwd=tmp_path)
    assert canceled.returncode == 0 and "succeeded" in canceled.stdout, "finished jobs stay"

    doctor = aat(env, "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout
    assert "ready" in doctor.stdout and "FAIL" not in doctor.stdout


def test_up_logs_json_lines_with_the_job_id_as_a_field(aat_up, tmp_path: Path) -> None:
    env = aat_up(AAT_LOG_FORMAT="json")
    done = aat(env, "submit", str(_png(tmp_path / "logged.png")), "--wait", "--scale", "2",
               *SMALL, "-o", str(tmp_path / "logged_x2.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(aat(env, "jobs", "--json", cwd=tmp_path).stdout)["items"][0]["id"]
    lines = [ln for ln in (tmp_path / "up.log").read_text().splitlines() if ln.strip()]
    # every log line, uvicorn's included, is JSON; the only other output is ncnn's native
    # per-tile progress (Real-ESRGAN writes "12.50%" to fd 2 itself, bypassing logging)
    records = [json.loads(ln) for ln in lines if not re.fullmatch(r"\d+\.\d+%", ln)]
    assert len(records) >= 3 and all(ln.startswith("{") or ln.endswith("%") for ln in lines)
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"].startswith("uvicorn") for r in records)
    mine = [r for r in records if r.get("job_id") == job_id]
    assert mine and any("claimed" in r["message"] for r in mine), records


def test_errors_are_one_line_with_exit_codes(aat_up, tmp_path: Path) -> None:
    env = aat_up()
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is text, not a picture")
    bad = aat(env, "submit", str(bogus), "--wait", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("error [image_corrupt]: ")
    assert not (tmp_path / "notes_x2.png").exists()

    lost = aat(env, "submit", str(_png(tmp_path / "b.png")), "--wait", "-o",
               str(tmp_path / "missing" / "b2.png"), cwd=tmp_path)
    assert lost.returncode == 2
    assert lost.stderr.startswith("error [path_not_found]: output folder "), lost.stderr
    assert json.loads(aat(env, "jobs", "--json", cwd=tmp_path).stdout)["items"] == [], \
        "refused before submitting: no job ran for a result with nowhere to go"

    params = aat(env, "submit", str(_png(tmp_path / "a.png")), "--scale", "40", cwd=tmp_path)
    assert params.returncode == 2 and params.stderr.startswith("error [invalid_params]: ")

    missing = aat(env, "status", "j_000000000000000000000000", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error [not_found]: ")
    for args in (["status", "../../metrics"], ["cancel", "../../v1/health"]):
        sneaky = aat(env, *args, cwd=tmp_path)  # an id never reaches another route
        assert sneaky.returncode == 2 and sneaky.stderr.startswith("error [not_found]: ")
    escape = aat(env, "models", "delete", "../x", cwd=tmp_path)
    assert escape.returncode == 2 and escape.stderr.startswith("error [path_forbidden]: ")

    models = aat(env, "models", "list", cwd=tmp_path)
    assert models.returncode == 1
    assert models.stderr.startswith("error [backend_unavailable]: no GPU backend configured")

    nowhere = {**env, "AAT_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    down = aat(nowhere, "jobs", cwd=tmp_path)
    assert down.returncode == 1 and down.stderr.startswith("error [service_unavailable]: ")
    assert "start it with `aat up`" in down.stderr
    doctor = aat(nowhere, "doctor", cwd=tmp_path)
    assert doctor.returncode == 1 and "start it with `aat up`" in doctor.stdout


def test_cancel_a_queued_job_and_token_auth(aat_up, tmp_path: Path) -> None:
    env = aat_up(AAT_API_TOKEN="cli-token-" + "z" * 20, AAT_JOB_THREADS="1")
    big = _png(tmp_path / "big.png", 320, 320, seed=3)
    blocker = aat(env, "submit", str(big), "--scale", "4", "-p", "tile_size=128", "-p",
                  "overlap=32", cwd=tmp_path)
    assert blocker.returncode == 0, blocker.stderr
    small = aat(env, "submit", str(_png(tmp_path / "s.png", seed=4)), *SMALL, cwd=tmp_path)
    job_id = small.stdout.strip()
    canceled = aat(env, "cancel", job_id, cwd=tmp_path)
    assert canceled.returncode == 0
    assert canceled.stdout.split() == [job_id, "canceled"], "one job thread: it was queued"
    assert aat(env, "cancel", blocker.stdout.strip(), cwd=tmp_path).returncode == 0
    shown = aat(env, "status", job_id, "--json", cwd=tmp_path)
    assert json.loads(shown.stdout)["status"] == "canceled"

    anon = {k: v for k, v in env.items() if k != "AAT_API_TOKEN"}
    refused = aat(anon, "jobs", cwd=tmp_path)
    assert refused.returncode == 3 and refused.stderr.startswith("error [unauthorized]: ")


def test_up_runs_the_watcher_when_folders_are_set(aat_up, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    repo = tmp_path / "game"
    inbox.mkdir()
    repo.mkdir()
    (inbox / ".aat.toml").write_text('repo = "game"\nscale = 2\ntile_size = 64\noverlap = 16\n')
    env = aat_up(AAT_WATCH_FOLDERS=json.dumps([str(inbox)]), AAT_WATCH_STABLE_S="0.2",
                 AAT_WATCH_SCAN_INTERVAL_S="0.5", AAT_REPOS=json.dumps({"game": str(repo)}))
    _png(inbox / "rock.png", 32, 32, seed=5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(repo.rglob("rock_x2.png")):
        time.sleep(0.2)
    found = list(repo.rglob("rock_x2.png"))
    assert found, (tmp_path / "up.log").read_text()[-3000:]
    with Image.open(io.BytesIO(found[0].read_bytes())) as im:
        assert im.size == (64, 64)
    assert env["AAT_WATCH_FOLDERS"]


def test_up_refuses_a_job_store_whose_jobs_celery_runners_take(
        tmp_path: Path, redis_queue: tuple[str, str], job_settings: Callable[..., Any]) -> None:
    """`aat up` (embedded executor, another data directory) pointed at a Celery fleet's job
    store used to claim the fleet's queued jobs and fail them as internal_error."""
    from service.core.params import UpscaleParams
    from service.jobs.service import build_job_service

    broker, queue = redis_queue
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    fleet = build_job_service(job_settings(database_url=db, broker_url=broker,
                                           celery_queue=queue))
    art = _png(tmp_path / "a.png")
    job, _ = fleet.submit(art.read_bytes(), filename="a.png",
                          params=UpscaleParams(caption=False, tile_size=64, overlap=16))
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    env = _env(laptop, free_port(), AAT_DATABASE_URL=db)
    proc = subprocess.Popen([sys.executable, "-c", "from service.cli import main; main()", "up"],
                            cwd=laptop, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if fleet.store.get(job.id).attempts:  # it took the fleet's job: the old behaviour
            break
        time.sleep(0.1)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    row = fleet.store.get(job.id)
    assert row.status.value == "queued" and row.attempts == 0, row.error
    assert proc.returncode not in (0, None), out
    errors = [line for line in out.splitlines() if line.startswith("error [")]
    assert errors and errors[0].startswith("error [store_in_use]:"), out
    assert "AAT_BROKER_URL" in errors[0] and "1 unfinished job" in errors[0]
    assert "Traceback" not in out
    fleet.stop()
