"""`aat deploy runpod` against the emulator's provisioning routes, over real HTTP: dry run,
create, update with no change, a real change, down; the requests it sent, the ids it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """# studio settings (this comment must survive)
backend = "runpod"

[repos]
game = "/srv/game"
"""


@pytest.fixture
def emu(runpod_emulator: Any) -> Any:
    return runpod_emulator(endpoints=("existing",))


def requests_since(emu: Any, start: int) -> list[dict[str, Any]]:
    log = httpx.get(f"{emu.root}/_emulator/provision/requests", timeout=10).json()
    return log[start:]


def count(emu: Any) -> int:
    return len(requests_since(emu, 0))


def mutations(log: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in log if r["method"] != "GET"]


def aat(tmp_path: Path, emu: Any, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AAT_", "RUNPOD_")) or k == "AAT_TEST_REDIS"}
    env.update({
        "PYTHONPATH": str(ROOT), "AAT_CONFIG": str(tmp_path / "aat.toml"),
        "AAT_DATA_DIR": str(tmp_path / "data"), "RUNPOD_API_KEY": emu.api_key,
        "AAT_RUNPOD_REST_URL": emu.url,
        "AAT_DEPLOY_UPSCALE_IMAGE": "registry.example/aat-upscale:0.1.0",
        "AAT_DEPLOY_CAPTION_IMAGE": "registry.example/aat-caption:0.1.0",
        "AAT_DEPLOY_NETWORK_VOLUME_ID": "vol_loras",
    })
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", "from service.cli import main; main()",
                           "deploy", "runpod", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_create_keep_update_down_cycle(emu: Any, tmp_path: Path) -> None:
    (tmp_path / "aat.toml").write_text(CONFIG)

    # --dry-run: a plan, and nothing but reads sent
    start = count(emu)
    dry = aat(tmp_path, emu, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would create template aat-upscale", "would create endpoint aat-upscale",
        "would create template aat-caption", "would create endpoint aat-caption"]
    assert mutations(requests_since(emu, start)) == []

    # create
    start = count(emu)
    made = aat(tmp_path, emu, "--write-config")
    assert made.returncode == 0, made.stderr
    sent = [r for r in requests_since(emu, start) if r["method"] != "GET"]
    assert [(r["method"], r["path"]) for r in sent] == [
        ("POST", "/v2/templates"), ("POST", "/v2/serverless"),
        ("POST", "/v2/templates"), ("POST", "/v2/serverless")]
    up_t, up_e, cap_t, cap_e = (r["body"] for r in sent)
    assert up_t == {"name": "aat-upscale", "image": "registry.example/aat-upscale:0.1.0",
                    "serverless": True, "startSsh": False, "startJupyter": False, "disk": 20,
                    "env": {}}
    templates = httpx.get(f"{emu.url}/templates", headers={"Authorization":
                          f"Bearer {emu.api_key}"}).json()["templates"]
    tid = {t["name"]: t["id"] for t in templates}
    assert up_e == {"name": "aat-upscale", "type": "QUEUE", "templateId": tid["aat-upscale"],
                    "gpu": {"pools": ["ADA_24", "AMPERE_48"], "count": 1},
                    "workers": {"min": 0, "max": 3, "idleTimeout": 5},
                    "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
                    "flashboot": "FLASHBOOT", "timeout": 600_000,
                    "networkVolumes": ["vol_loras"]}
    assert cap_t["image"] == "registry.example/aat-caption:0.1.0"
    assert cap_e["templateId"] == tid["aat-caption"] and "networkVolumes" not in cap_e
    config = tomllib.loads((tmp_path / "aat.toml").read_text())
    ids = {k: config[f"runpod_{k}_endpoint_id"] for k in ("upscale", "caption")}
    assert f"RUNPOD_UPSCALE_ENDPOINT_ID={ids['upscale']}" in made.stdout
    assert config["repos"] == {"game": "/srv/game"} and config["backend"] == "runpod"
    assert "this comment must survive" in (tmp_path / "aat.toml").read_text()
    # the endpoints it made serve RunPod's job API
    health = httpx.get(f"{emu.url}/{ids['upscale']}/health",
                       headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=10)
    assert health.status_code == 200 and "workers" in health.json()

    # again: nothing changes (the emulator added " -fb" to the names, as RunPod may)
    start = count(emu)
    again = aat(tmp_path, emu)
    assert again.returncode == 0, again.stderr
    assert mutations(requests_since(emu, start)) == []
    assert [line.split(" ")[0] for line in again.stdout.splitlines()[:4]] == ["keep"] * 4
    assert f"RUNPOD_CAPTION_ENDPOINT_ID={ids['caption']}" in again.stdout

    # a real change: only the field that differs is sent, to the same endpoints
    start = count(emu)
    bigger = aat(tmp_path, emu, AAT_DEPLOY_WORKERS_MAX="6")
    assert bigger.returncode == 0, bigger.stderr
    sent = [r for r in requests_since(emu, start) if r["method"] != "GET"]
    assert [(r["method"], r["path"], r["body"]) for r in sent] == [
        ("PATCH", f"/v2/serverless/{ids[k]}", {"workers": {"min": 0, "max": 6, "idleTimeout": 5}})
        for k in ("upscale", "caption")]
    assert "update endpoint aat-upscale -fb" in bigger.stdout

    # down: endpoints first, then their templates; the ids leave aat.toml
    start = count(emu)
    down = aat(tmp_path, emu, "--down", "--write-config")
    assert down.returncode == 0, down.stderr
    assert mutations(requests_since(emu, start)) == [
        ("DELETE", f"/v2/serverless/{ids['upscale']}"),
        ("DELETE", f"/v2/serverless/{ids['caption']}"),
        ("DELETE", f"/v2/templates/{tid['aat-upscale']}"),
        ("DELETE", f"/v2/templates/{tid['aat-caption']}")]
    config = tomllib.loads((tmp_path / "aat.toml").read_text())
    assert "runpod_upscale_endpoint_id" not in config and config["repos"]["game"] == "/srv/game"
    gone = httpx.get(f"{emu.url}/{ids['upscale']}/health",
                     headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=10)
    assert gone.status_code == 404
    auth = {"Authorization": f"Bearer {emu.api_key}"}
    for path, kind in ((f"templates/{tid['aat-upscale']}", "template"),
                       (f"serverless/{ids['caption']}", "endpoint")):
        missing = httpx.get(f"{emu.url}/{path}", headers=auth, timeout=10)
        assert missing.status_code == 404 and missing.json()["detail"].startswith(kind)
    assert aat(tmp_path, emu, "--down").stdout.strip() == "nothing to remove"


def test_errors_are_one_line_with_a_code(emu: Any, tmp_path: Path) -> None:
    no_image = aat(tmp_path, emu, AAT_DEPLOY_UPSCALE_IMAGE="", AAT_DEPLOY_CAPTION_IMAGE="")
    assert no_image.returncode == 3  # setup (service.cli.errors.SETUP)
    assert no_image.stderr.startswith("error [config_invalid]: nothing to deploy")
    bad_key = aat(tmp_path, emu, RUNPOD_API_KEY="wrong")
    assert bad_key.returncode == 3 and bad_key.stderr.startswith("error [backend_auth]")
    assert len(bad_key.stderr.strip().splitlines()) == 1


def test_the_emulator_refuses_what_runpod_refuses(emu: Any) -> None:
    auth = {"Authorization": f"Bearer {emu.api_key}"}
    bad = httpx.post(f"{emu.url}/serverless", json={"name": "x", "gpu": {"pools": ["ADA_24"]},
                                                    "cpu": [{"id": "c"}]}, headers=auth)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    errors = bad.json()["errors"]
    assert "type is required" in errors and "one of templateId or image is required" in errors
    assert "exactly one of gpu or cpu is required" in errors
    tpl = httpx.post(f"{emu.url}/templates", json={"name": "t", "image": "i:1"},
                     headers=auth).json()
    ep = httpx.post(f"{emu.url}/serverless", headers=auth, json={
        "name": "e", "type": "QUEUE", "templateId": tpl["id"], "gpu": {"pools": ["ADA_24"]},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}}).json()
    in_use = httpx.delete(f"{emu.url}/templates/{tpl['id']}", headers=auth)
    assert in_use.status_code == 400 and ep["id"] in in_use.json()["detail"]
    assert httpx.get(f"{emu.url}/serverless").status_code == 401
