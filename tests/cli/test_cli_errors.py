"""The one error -> exit-status rule of every `aat` command, and what a newcomer meets first:
one-line errors for bad options, help that fits 80 columns without cutting a summary, plain
progress lines when stderr is not a terminal, clients that follow AAT_PORT, and settings
errors that blame the right source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.errors import FAILED, INTERRUPTED, SETUP, USAGE, Interrupted, exit_status
from service.cli.upscale import STAGES
from service.core.errors import (
    AatError,
    BackendAuthError,
    BackendUnavailable,
    ConfigError,
    DeliveryError,
    ImageError,
    NotFound,
    ParamsError,
    PathError,
    error_for_code,
)

ROOT = Path(__file__).resolve().parents[2]
SPRITE = ROOT / "examples" / "sprite.png"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update(AAT_DATA_DIR=str(tmp / "data"), AAT_CONFIG=str(tmp / "none.toml"), **extra)
    return env


def aat(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _replied(code: str, status: int) -> AatError:
    err = error_for_code(code, "the service said no")
    err.http_status = status
    return err


@pytest.mark.parametrize(("exc", "status"), [
    (ParamsError("--scale: must be at most 8"), USAGE),
    (ImageError("truncated", code="image_truncated"), USAGE),
    (PathError("no such file", code="path_not_found"), USAGE),
    (_replied("not_found", 404), USAGE),  # an id the service does not know
    (_replied("invalid_params", 422), USAGE),
    (_replied("conflict", 409), USAGE),
    (ConfigError("AAT_PORT is not a number"), SETUP),
    (ConfigError("port taken", code="port_in_use"), SETUP),
    (ConfigError("db down", code="store_unavailable"), SETUP),
    (AatError("needs the 'service' extra", code="missing_extra"), SETUP),
    (_replied("unauthorized", 401), SETUP),
    (_replied("forbidden", 403), SETUP),
    (BackendAuthError("RunPod refused the API key"), SETUP),
    (_replied("service_unavailable", 503), FAILED),
    (_replied("backend_unavailable", 503), FAILED),
    (BackendUnavailable("RunPod is down"), FAILED),
    (DeliveryError("disk full"), FAILED),
    (AatError("job failed", code="worker_error"), FAILED),
    (NotFound("no failed file at x.png in the watch ledger"), USAGE),
    (Interrupted("stopped; out.png was not written"), INTERRUPTED),
    (KeyboardInterrupt(), INTERRUPTED),
])
def test_one_rule_maps_every_error_to_a_documented_status(exc: BaseException,
                                                          status: int) -> None:
    assert exit_status(exc) == status


def test_a_bad_option_value_is_one_line_not_a_usage_box(tmp_path: Path) -> None:
    out_png = tmp_path / "out.png"
    bad = aat(_env(tmp_path), "upscale", str(SPRITE), "-o", str(out_png), "--scale", "abc")
    assert bad.returncode == USAGE, bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()], bad.stderr
    assert bad.stderr.startswith("error [invalid_params]: "), bad.stderr
    assert "'--scale'" in bad.stderr and "aat upscale --help" in bad.stderr
    assert "Usage:" not in bad.stderr and "╭" not in bad.stderr
    assert not out_png.exists()

    unknown = aat(_env(tmp_path), "jobs", "--frobnicate")
    assert unknown.returncode == USAGE
    assert unknown.stderr.startswith("error [usage]: No such option: --frobnicate")
    assert unknown.stderr.count("\n") == 1

    missing = aat(_env(tmp_path), "status")
    assert missing.returncode == USAGE and missing.stderr.startswith("error [usage]: Missing ")


def test_help_fits_80_columns_without_cutting_a_summary(tmp_path: Path) -> None:
    top = aat(_env(tmp_path, COLUMNS="80"), "--help")
    assert top.returncode == 0, top.stderr
    commands = top.stdout.split("Commands:")[1]
    assert "..." not in commands, top.stdout  # every command's summary is whole
    assert max(len(line) for line in top.stdout.splitlines()) <= 80
    for command in ("upscale", "submit", "up"):
        sub = aat(_env(tmp_path, COLUMNS="80"), command, "--help")
        assert sub.returncode == 0 and "…" not in sub.stdout, sub.stdout
        assert max(len(line) for line in sub.stdout.splitlines()) <= 80, sub.stdout


def test_help_loads_neither_settings_nor_httpx(tmp_path: Path) -> None:
    code = ("import sys\n"
            "sys.argv = ['aat', '--help']\n"
            "from service.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = ('httpx', 'pydantic_settings', 'service.settings', 'rich', 'PIL',\n"
            "         'sqlalchemy')\n"
            "print(','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.stderr.strip() == "", f"`aat --help` loaded: {out.stderr.strip()}"
    assert "upscale" in out.stdout


def test_upscale_prints_plain_progress_lines_naming_the_running_step(tmp_path: Path) -> None:
    out_png = tmp_path / "o.png"
    run = aat(_env(tmp_path), "upscale", str(SPRITE), "-o", str(out_png), "--scale", "2",
              "--upscaler", "lanczos")  # stderr is a pipe here, not a terminal
    assert run.returncode == 0, run.stderr
    lines = [line.split() for line in run.stderr.splitlines() if line.strip()]
    shown = [(words[0], next(w for w in words if w.endswith("%"))) for words in lines]
    steps = [(name, pct) for name, pct in shown if name in (*STAGES, "done")]
    # each line names the step that starts, with the share of steps finished before it
    assert steps == [("read", "0%"), ("decode", "16%"), ("pre-upscale", "33%"),
                     ("tiles", "50%"), ("encode", "66%"), ("write", "83%"),
                     ("done", "100%")], run.stderr
    inner = [name for name, pct in shown if name not in (*STAGES, "done")]
    assert all(pct == "50%" for name, pct in shown if name in inner), run.stderr  # in "tiles"
    assert run.stdout.startswith(f"wrote {out_png} ")
    quiet = aat(_env(tmp_path), "upscale", str(SPRITE), "-o", str(out_png), "-q", "--upscaler",
                "lanczos")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_clients_find_the_api_on_aat_port(tmp_path: Path) -> None:
    from service.settings import load_settings

    assert load_settings(port=9321).server_url == "http://127.0.0.1:9321"
    assert load_settings(port=9321, server_url="http://h:1").server_url == "http://h:1"
    down = aat(_env(tmp_path, AAT_PORT="9"), "jobs")  # port 9 (discard): nobody listens
    assert down.returncode == FAILED
    assert down.stderr.startswith("error [service_unavailable]: cannot reach the service at "
                                  "http://127.0.0.1:9 "), down.stderr


def test_watch_folders_as_a_plain_path_and_errors_that_blame_the_environment(
        tmp_path: Path) -> None:
    from service.settings import load_settings

    inbox, other = tmp_path / "inbox", tmp_path / "other"
    env = {"AAT_WATCH_FOLDERS": str(inbox)}
    old = {k: os.environ.get(k) for k in ("AAT_WATCH_FOLDERS", "AAT_REPOS")}
    try:
        os.environ.update(env)
        assert load_settings().watch_folders == [inbox]
        os.environ["AAT_WATCH_FOLDERS"] = f"{inbox}{os.pathsep}{other}"
        assert load_settings().watch_folders == [inbox, other]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bad = aat(_env(tmp_path, AAT_REPOS=str(tmp_path)), "watch", "--status")
    assert bad.returncode == SETUP
    assert bad.stderr.startswith("error [config_invalid]: invalid setting repos (AAT_REPOS) in "
                                 "the environment"), bad.stderr
    assert "aat.toml" not in bad.stderr and "none.toml" not in bad.stderr


def test_doctor_describes_runpod_endpoints_in_words(runpod_emulator, runpod_settings) -> None:
    from service.cli.doctor import check_gpu

    emulator = runpod_emulator(workers=3)
    found = check_gpu(runpod_settings(emulator))
    assert found.ok, found.detail
    assert found.detail == (
        "runpod: upscale endpoint upscale: workers 3 idle, 0 running; jobs 0 queued, 0 in "
        "progress, 0 failed; caption endpoint caption: workers 3 idle, 0 running; jobs 0 "
        "queued, 0 in progress, 0 failed")
    assert "{" not in found.detail and "'" not in found.detail


def test_readme_and_guides_write_plain_aat() -> None:
    """One spelling in the docs: `aat` (the README says once how to get it on PATH); only the
    fresh-clone one-liner, which runs before any activation, and systemd units that name the
    install path spell out `.venv/bin/aat`."""
    readme = (ROOT / "README.md").read_text().splitlines()
    spelled = [ln for ln in readme if ".venv/bin/aat" in ln and "activate" not in ln]
    assert len(spelled) == 1 and spelled[0].startswith("python3 -m venv .venv &&"), spelled
    assert any("`. .venv/bin/activate`" in ln for ln in readme)
    for page in sorted((ROOT / "docs").rglob("*.md")):
        if page.name == "deploy-systemd.md":
            continue
        assert ".venv/bin/aat" not in page.read_text(), page.name


def test_doctor_says_where_animations_get_their_frames(runpod_emulator, runpod_settings,
                                                        s3_server) -> None:
    """Not set up is fine; our worker's endpoint is asked for its health; RunPod's public
    endpoint without a bucket fails here, in words, not at the first animate job."""
    from service.cli.doctor import check_animate
    from workers.emulator import resolve_handler

    emulator = runpod_emulator(workers=2, endpoints=("anim",),
                               handler=resolve_handler("animate-echo"))
    bucket = s3_server.make_bucket()
    s3 = {"artifacts_url": f"s3://{bucket}/aat", "s3_endpoint_url": s3_server.endpoint_url,
          "s3_access_key_id": "test", "s3_secret_access_key": "test"}
    cases = [
        ({}, True, "not set up: set RUNPOD_ANIMATE_ENDPOINT_ID"),
        ({"runpod_animate_endpoint_id": "anim"}, True,
         "animate endpoint anim: workers 2 idle, 0 running; jobs 0 queued"),
        ({"runpod_animate_endpoint_id": "gone"}, False,
         "RunPod endpoint gone not found at"),
        ({"runpod_animate_endpoint_id": "gone"}, False,
         "check the endpoint id setting (RUNPOD_ANIMATE_ENDPOINT_ID)"),
        ({"animate_backend": "public"}, False,
         "no object store is configured: set AAT_ARTIFACTS_URL"),
        ({"animate_backend": "public", **s3}, True,
         f"RunPod's public endpoint qwen-image-edit, the sprite sent as a presigned URL from "
         f"s3://{bucket}/aat"),
    ]
    for overrides, ok, words in cases:
        found = check_animate(runpod_settings(emulator, **overrides))
        assert (found.ok, words in found.detail) == (ok, True), (overrides, found.detail)


def test_doctor_gives_the_local_backend_no_runpod_advice(tmp_path) -> None:
    """A machine without a CUDA GPU set to the local backend is told that, not to check a
    RunPod key it does not use."""
    from service.cli.doctor import check_gpu
    from service.settings import Settings

    found = check_gpu(Settings(data_dir=tmp_path, backend="local", local_device="cuda:7"))
    assert not found.ok and found.detail.startswith("local: "), found.detail
    assert "RUNPOD" not in found.detail, found.detail
