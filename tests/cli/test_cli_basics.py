"""The `aat` entry point as a user first meets it: `--help` lists every command and each
command's own `--help` works; `aat doctor` on a fresh data dir says what to fix in plain words
and never prints a secret."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from proc_helpers import aat_service, free_port, scrubbed_env

from service.cli.errors import SETUP

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["upscale", "upscalers", "watch", "runner", "gc", "up", "serve", "submit", "jobs",
            "status", "cancel", "retry", "doctor", "emulate", "models", "animate"]
RUNPOD_KEY = "rpa_doctor_test_KEY_5f3a91"
API_TOKEN = "tok_doctor_test_SECRET_8c2d"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = scrubbed_env()  # a clean user, not this machine's setup
    env.update({"AAT_DATA_DIR": str(data_dir), "COLUMNS": "200",
                "AAT_SERVER_URL": f"http://127.0.0.1:{free_port()}"}, **extra)
    return env


def aat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_every_command_and_each_help_works(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    top = aat(env, "--help")
    assert top.returncode == 0, top.stderr
    listed = {line.strip("│ ").split(" ")[0] for line in top.stdout.splitlines()}
    assert set(COMMANDS) <= listed, top.stdout
    for command in [*COMMANDS, "models list", "models upload", "models delete"]:
        out = aat(env, *command.split(), "--help")
        assert out.returncode == 0, f"aat {command} --help: {out.stderr}"
        assert "Usage:" in out.stdout and command.split()[-1] in out.stdout
    assert not (tmp_path / "data").exists()  # help touches nothing


def test_doctor_on_a_fresh_data_dir_says_what_to_fix(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    out = aat(_env(data), "doctor")
    assert out.returncode == 1  # the API is not running: something to fix
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if line.strip()}
    assert lines["settings"].split()[0] == "ok" and "token not set" in lines["settings"]
    assert "created at first start" in lines["store"]
    assert "no GPU backend" in lines["gpu"] and "RUNPOD_API_KEY" in lines["gpu"]
    assert lines["api"].split()[0] == "FAIL"
    assert "not reachable" in lines["api"] and "start it with `aat up`" in lines["api"]
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize(("extra", "missing"), [
    ({"RUNPOD_API_KEY": RUNPOD_KEY}, "RUNPOD_UPSCALE_ENDPOINT_ID is not"),
    ({"RUNPOD_UPSCALE_ENDPOINT_ID": "abc123"}, "RUNPOD_API_KEY is not"),
])
def test_doctor_names_the_missing_half_of_a_runpod_setup_and_hides_secrets(
        tmp_path: Path, extra: dict[str, str], missing: str) -> None:
    out = aat(_env(tmp_path / "data", AAT_API_TOKEN=API_TOKEN, **extra), "doctor")
    gpu = next(line for line in out.stdout.splitlines() if line.split()[1:2] == ["gpu"])
    assert missing in gpu, out.stdout
    assert "API token set" in out.stdout
    assert RUNPOD_KEY not in out.stdout + out.stderr
    assert API_TOKEN not in out.stdout + out.stderr


def test_secrets_never_reach_the_service_log_even_at_debug(tmp_path: Path, runpod_emulator) -> None:
    """`aat up --log-level debug` with a RunPod key and an API token: a job refined on the
    (emulated) RunPod endpoint and a LoRA listing use both secrets; the log shows neither."""
    import io
    import time

    import httpx
    import numpy as np
    from PIL import Image

    emu = runpod_emulator(workers=2)
    port = free_port()
    env = _env(tmp_path / "data", AAT_PORT=str(port), AAT_SERVER_URL=f"http://127.0.0.1:{port}",
               AAT_API_TOKEN=API_TOKEN, RUNPOD_API_KEY=emu.api_key, AAT_BACKEND="runpod",
               AAT_RUNPOD_BASE_URL=emu.url, RUNPOD_UPSCALE_ENDPOINT_ID="upscale",
               RUNPOD_CAPTION_ENDPOINT_ID="caption", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "up.log"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    deadline = time.monotonic() + 60
    with aat_service("up", "--log-level", "debug", env=env, port=port, cwd=tmp_path,
                     log=log_path), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as http:
        buf = io.BytesIO()
        pixels = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, "PNG")
        job = http.post("/v1/jobs", params={"filename": "a.png", "scale": 2,
                                            "tile_size": 64, "overlap": 16},
                        content=buf.getvalue(), headers={"Content-Type": "image/png"})
        assert job.status_code == 202, job.text
        while (state := http.get(f"/v1/jobs/{job.json()['id']}").json())["status"] in (
                "queued", "running"):
            assert time.monotonic() < deadline + 60, state
            time.sleep(0.1)
        assert state["status"] == "succeeded", state
        assert http.get("/v1/models").status_code == 200
    assert emu.stats("upscale")["submitted"] >= 1  # the key really was used
    text = log_path.read_text()
    assert "DEBUG" in text  # the most talkative level was on
    assert emu.api_key not in text and API_TOKEN not in text


@pytest.mark.parametrize("command", ["up", "serve", "runner"])
def test_an_unreachable_job_store_is_one_line_not_a_crash(tmp_path: Path, command: str) -> None:
    """A wrong AAT_DATABASE_URL (real PostgreSQL, missing database): the command stops at once
    with `error [store_unavailable]` naming the setting, instead of a traceback or a runner
    that keeps retrying."""
    env = _env(tmp_path / "data", AAT_PORT=str(free_port()),
               AAT_BROKER_URL="redis://127.0.0.1:6379/0", AAT_CELERY_QUEUE="aat-test-nostore",
               AAT_DATABASE_URL="postgresql+psycopg://postgres:pw-9q2@127.0.0.1:5432/aat_missing")
    out = aat(env, command)
    assert out.returncode == SETUP, out.stdout + out.stderr  # fix the settings
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error [store_unavailable]: "), out.stderr
    assert "aat_missing" in last and "does not exist" in last and "AAT_DATABASE_URL" in last
    assert "Traceback" not in out.stdout + out.stderr
    assert "pw-9q2" not in out.stdout + out.stderr  # the password is not shown


def test_a_port_already_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = aat(_env(tmp_path / "data", AAT_PORT=str(port)), "up")
    assert out.returncode == SETUP, out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"error [port_in_use]: cannot listen on 127.0.0.1:{port} ")
    assert "--port" in out.stderr and "Traceback" not in out.stdout + out.stderr


def _aat_without(env: dict[str, str], blocked: list[str], *args: str
                 ) -> subprocess.CompletedProcess[str]:
    """`aat ARGS` in a Python where the modules in ``blocked`` are not installed (what a user
    who installed only the README's `.[sr]` extra has)."""
    code = ("import sys\n"
            f"for name in {blocked!r}:\n"
            "    sys.modules[name] = None  # import raises ModuleNotFoundError\n"
            f"sys.argv = ['aat', *{list(args)!r}]\n"
            "from service.cli import main\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("blocked", "command", "extra"), [
    (["uvicorn"], ["up"], "service"),
    (["celery"], ["runner"], "service"),
    (["sqlalchemy"], ["gc"], "service"),
    (["watchdog"], ["watch"], "watcher"),
])
def test_a_missing_extra_names_the_install_command(tmp_path: Path, blocked: list[str],
                                                   command: list[str], extra: str) -> None:
    out = _aat_without(_env(tmp_path / "data"), blocked, *command)
    assert out.returncode == SETUP, out.stderr
    assert out.stderr.strip() == (
        f"error [missing_extra]: this command needs the '{extra}' extra ({blocked[0]} is not "
        f"installed); install it with: pip install 'ai-assets-toolbox[{extra}]' "
        f"(from a clone: .venv/bin/pip install -e '.[{extra}]')")


def test_doctor_without_the_service_extra_says_which_to_install(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    out = _aat_without(_env(data), ["sqlalchemy"], "doctor")
    store = next(line for line in out.stdout.splitlines() if line.split()[1:2] == ["store"])
    assert store.split()[0] == "FAIL"
    assert "pip install 'ai-assets-toolbox[service]'" in store, store


def test_aat_up_with_a_missing_watch_folder_stops_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "art" / "inbox"
    out = aat(_env(tmp_path / "data", AAT_PORT=str(free_port()),
                   AAT_WATCH_FOLDERS=f'["{missing}"]'), "up")
    assert out.returncode == SETUP, out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error [config_invalid]: watch folder {missing} does not exist; create it or fix "
        "AAT_WATCH_FOLDERS")
    assert "Traceback" not in out.stdout + out.stderr
