"""The ``animate`` job kind over real HTTP: ``POST /v1/animations`` on a uvicorn server with
the embedded executor, frames from the emulated animate worker (RunPod emulator on loopback).
A user submits a sprite, follows the job's events, downloads a sheet with the declared frame
count and its metadata, finds the set delivered beside the source; can cancel mid-way
(nothing written); and a bad motion is refused at submit."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apitest_helpers import LiveServer, running_app, sse_events, wait_terminal
from PIL import Image

from service.core.sheets import read_cells
from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler

KEY = "emu-key"
W, H = 24, 32  # the sprite's (and so each cell's) size


def sprite_bytes() -> bytes:
    a = np.zeros((H, W, 4), np.uint8)
    a[4:28, 6:18] = (40, 40, 60, 255)  # outline
    a[5:27, 7:17] = (200, 80, 40, 255)  # body
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer({
        "anim": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4),
        # one worker, 0.3 s per frame: a job is still generating when the user cancels
        "anim-slow": EndpointConfig(handler=resolve_handler("animate-echo"), workers=1,
                                    latency_s=0.3),
    }, api_key=KEY) as emu:
        yield emu


def _server(emu: EmulatorServer, root: Path, endpoint: str) -> Any:
    from service.settings import load_settings

    repo = root / "repo"
    (repo / "sprites").mkdir(parents=True)
    (repo / "sprites" / "hero.png").write_bytes(sprite_bytes())
    return running_app(load_settings(
        data_dir=root / "data", repos={"game": repo}, backend="none",
        runpod_api_key=KEY, runpod_base_url=emu.url, runpod_animate_endpoint_id=endpoint,
        animate_edit_side=64, runpod_poll_min_s=0.02, runpod_backoff_base_s=0.05))


def _submit(client: httpx.Client, **query: str) -> httpx.Response:
    return client.post("/v1/animations", content=sprite_bytes(), params={
        "filename": "hero.png", "target_repo": "game", "target_path": "sprites/hero.png",
        **query}, headers={"Content-Type": "image/png"})


def test_animate_job_submit_follow_and_download(emulator: EmulatorServer,
                                                tmp_path: Path) -> None:
    server: LiveServer
    with _server(emulator, tmp_path, "anim") as server, server.client() as client:
        resp = _submit(client, motion="walk", frames="8")
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["kind"] == "animate" and job["animation"]["frames"] == 8
        assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"

        events = sse_events(client, job["id"])
        assert events[-1][0] == "end"
        final = wait_terminal(client, job["id"])
        assert final["status"] == "succeeded", final.get("error")
        assert final["stages"]["animate"] == {"done": 8, "total": 8}
        assert final["output"]["frames"] == 8

        result = client.get(f"/v1/jobs/{job['id']}/result")
        assert result.status_code == 200
        assert 'filename="hero_walk.png"' in result.headers["content-disposition"]
        sheet = np.asarray(Image.open(io.BytesIO(result.content)).convert("RGBA"))
        assert sheet.shape == (H, W * 8, 4)  # 8 cells of the sprite's size in a row
        assert sheet[..., 3].min() == 0  # transparent where the key colour was

        files = final["output"]["files"]
        assert set(files) == {"hero_walk.json", "hero_walk.tres", "hero_walk.webp"}
        meta = client.get(f"/v1/jobs/{job['id']}/files/hero_walk.json")
        assert meta.status_code == 200
        fmt, rects = read_cells("hero_walk.json", meta.text, sheet.shape[0])
        assert fmt == "aseprite" and rects == [(i * W, 0, W, H) for i in range(8)]
        tres = client.get(f"/v1/jobs/{job['id']}/files/hero_walk.tres").text
        assert 'res://sprites/hero_walk.png' in tres
        assert client.get(f"/v1/jobs/{job['id']}/files/nope.json").status_code == 404

        repo = tmp_path / "repo" / "sprites"  # the set beside the source, sheet as served
        assert (repo / "hero_walk.png").read_bytes() == result.content
        assert {p.name for p in repo.iterdir()} == {
            "hero.png", "hero_walk.png", "hero_walk.json", "hero_walk.tres", "hero_walk.webp"}
        assert final["output"]["delivered_path"] == "sprites/hero_walk.png"

        again = _submit(client, motion="walk", frames="8")  # same sprite and params
        assert again.status_code == 200 and again.json()["id"] == job["id"]


def test_cancel_an_animate_job_writes_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim-slow") as server, server.client() as client:
        job = _submit(client, motion="run", frames="8").json()
        deadline = time.monotonic() + 60
        while True:  # wait for the first frame (counted), then cancel
            now = client.get(f"/v1/jobs/{job['id']}").json()
            if now["stages"].get("animate", {}).get("done", 0) >= 1:
                break
            assert now["status"] in ("queued", "running"), now
            assert time.monotonic() < deadline, now
            time.sleep(0.05)
        cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
        final = wait_terminal(client, job["id"])
        assert final["status"] == "canceled"
        assert final["stages"]["animate"]["done"] < 8  # stopped between frames
        assert client.get(f"/v1/jobs/{job['id']}/result").status_code == 409
        assert sorted(p.name for p in (tmp_path / "repo" / "sprites").iterdir()) == [
            "hero.png"]


def test_bad_motion_is_refused_at_submit(emulator: EmulatorServer, tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim") as server, server.client() as client:
        bad = _submit(client, motion="moonwalk")
        assert bad.status_code == 422
        assert bad.json()["code"] == "motion_unknown"
        assert "moonwalk" in bad.json()["detail"]
        frames = _submit(client, motion="walk", frames="40")
        assert frames.status_code == 422 and "frames" in frames.json()["detail"]
        assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued
