"""Re-running chosen tiles of an upscale job over real HTTP: uvicorn on loopback, the embedded
executor, tiles refined and captioned by the echo worker on the RunPod emulator (loopback).
The tiles a rerun keeps are cached from the moment it exists and never show another state."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apitest_helpers import running_app, sse_events, wait_terminal
from PIL import Image

from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler

KEY = "emu-key"
SMALL = {"scale": "2", "tile_size": "64", "overlap": "16", "upscaler": "lanczos", "seed": "7"}


def _png(seed: int, width: int = 48, height: int = 48) -> bytes:
    """Noise; 48x48 is 96x96 once pre-upscaled: four 64 px tiles."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    # four workers, 0.3 s per tile: a job stays running long enough to be watched
    echo = resolve_handler("echo")
    with EmulatorServer({
        "upscale": EndpointConfig(handler=echo, workers=4, latency_s=0.3),
        "caption": EndpointConfig(handler=echo, workers=4, latency_s=0.01),
    }, api_key=KEY) as emu:
        yield emu


@pytest.fixture
def recorded() -> Iterator[tuple[EmulatorServer, list[tuple[str, str]]]]:
    """The echo worker (four workers, 0.05 s per tile), and each tile it is sent, in order:
    (tile index, prompt)."""
    sent: list[tuple[str, str]] = []
    echo = resolve_handler("echo")

    async def upscale(job: dict[str, Any]) -> dict[str, Any]:
        sent.extend((t["tile_id"], t["prompt"]) for t in job["input"].get("tiles") or [])
        return dict(await echo(job))

    with EmulatorServer({
        "upscale": EndpointConfig(handler=upscale, workers=4, latency_s=0.05),
        "caption": EndpointConfig(handler=echo, workers=4, latency_s=0.01),
    }, api_key=KEY) as emu:
        yield emu, sent


def _server(emu: EmulatorServer, root: Path, **extra: Any) -> Any:
    from service.settings import load_settings

    (root / "repo").mkdir()
    return running_app(load_settings(
        data_dir=root / "data", repos={"game": root / "repo"}, backend="runpod",
        runpod_api_key=KEY, runpod_base_url=emu.url, runpod_upscale_endpoint_id="upscale",
        runpod_caption_endpoint_id="caption", runpod_backoff_base_s=0.05,
        runpod_poll_min_s=0.02, runpod_poll_max_s=0.2, job_threads=1, **extra))


def _submit(client: httpx.Client, seed: int, name: str) -> dict[str, Any]:
    resp = client.post("/v1/jobs", content=_png(seed), params={
        "filename": name, "caption": "true", **SMALL}, headers={"Content-Type": "image/png"})
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def test_kept_tiles_of_a_rerun_are_cached_from_the_start_and_never_flicker(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    """Re-running tile 1: tiles 0, 2 and 3 are cached (kept from the earlier result) the moment
    the rerun job exists, with the seed they were refined with, and its event stream never
    reports them in another state (the studio showed them queued, refining, then cached);
    tile 1 goes from queued to done, and is the only one paid for."""
    with _server(emulator, tmp_path) as server, server.client() as client:
        job = _submit(client, 1, "rock.png")
        assert wait_terminal(client, job["id"])["status"] == "succeeded"
        before = client.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
        assert [t["state"] for t in before] == ["done"] * 4
        _submit(client, 2, "other.png")  # holds the one runner thread: the rerun waits queued
        rerun = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [1]})
        assert rerun.status_code == 202, rerun.text
        again = rerun.json()
        at_once = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
        assert client.get(f"/v1/jobs/{again['id']}").json()["status"] == "queued"
        assert [t["state"] for t in at_once] == ["cached", "queued", "cached", "cached"]
        assert [t["seed"] for t in at_once if t["index"] != 1] == [
            t["seed"] for t in before if t["index"] != 1]
        events = sse_events(client, again["id"], tiles=True)
        final = wait_terminal(client, again["id"])
        after = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
    states: dict[int, list[str]] = {}
    for name, data in events:
        if name == "tiles":
            for t in data["tiles"]:
                states.setdefault(t["index"], []).append(t["state"])
    assert final["status"] == "succeeded", final.get("error")
    assert {i: s for i, s in states.items() if i != 1} == {
        0: ["cached"], 2: ["cached"], 3: ["cached"]}  # told once, never changed
    assert states[1][0] == "queued" and states[1][-1] == "done", states[1]
    assert [t["state"] for t in after] == ["cached", "done", "cached", "cached"]
    assert after[1]["seed"] != before[1]["seed"]
    assert final["cost"]["runpod_jobs"] == 1  # only the chosen tile was refined


def _states(events: list[tuple[str, dict[str, Any]]]) -> dict[int, list[str]]:
    states: dict[int, list[str]] = {}
    for name, data in events:
        if name == "tiles":
            for t in data["tiles"]:
                states.setdefault(t["index"], []).append(t["state"])
    return states


def test_a_rerun_refines_only_the_chosen_tiles_and_an_edited_prompt_waits_for_its_tile(
        recorded: tuple[EmulatorServer, list[tuple[str, str]]], db_url: str,
        tmp_path: Path) -> None:
    """Tile 7's prompt is edited but tile 7 is not chosen: re-running tiles 3 and 5 sends
    those two to the worker and no other; tile 7 keeps its pixels (its span of the result is
    the same byte for byte), stays cached throughout and shows the edited prompt, which the
    worker receives once tile 7 is chosen. Each rerun names the job it was made from
    (``rerun_of``). On SQLite and on PostgreSQL."""
    emu, sent = recorded
    with _server(emu, tmp_path, database_url=db_url) as server, server.client() as client:
        resp = client.post("/v1/jobs", content=_png(3, 224, 32), params={
            "filename": "strip.png", "caption": "true", **SMALL},
            headers={"Content-Type": "image/png"})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert wait_terminal(client, job["id"])["status"] == "succeeded"
        before = client.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
        assert len(before) >= 9 and {t["y"] for t in before} == {0}  # one row of tiles
        first = _pixels(client.get(f"/v1/jobs/{job['id']}/result").content)
        edited = client.patch(f"/v1/jobs/{job['id']}/tiles/7",
                              json={"prompt": "mossy stone, edited"})
        assert edited.status_code == 200, edited.text
        sent.clear()

        rerun = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [3, 5]})
        assert rerun.status_code == 202, rerun.text
        again = rerun.json()
        assert (job["rerun_of"], again["rerun_of"], again["retry_of"]) == (None, job["id"], None)
        states = _states(sse_events(client, again["id"], tiles=True))
        final = wait_terminal(client, again["id"])
        assert final["status"] == "succeeded", final.get("error")
        assert final["rerun_of"] == job["id"]  # stored, not only in the 202's body
        assert sorted(index for index, _ in sent) == ["3", "5"]  # tile 7 was not refined
        assert final["cost"]["runpod_jobs"] == 2
        assert states[7] == ["cached"]  # told once, never refining
        after = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
        assert (after[7]["state"], after[7]["seed"]) == ("cached", before[7]["seed"])
        assert after[7]["prompt"] == "mossy stone, edited"  # kept for when it is chosen
        second = _pixels(client.get(f"/v1/jobs/{again['id']}/result").content)
        x, w = before[7]["x"], before[7]["w"]  # its neighbours 6 and 8 were not chosen either
        assert second[:, x:x + w].tobytes() == first[:, x:x + w].tobytes()
        sent.clear()

        third = client.post(f"/v1/jobs/{again['id']}/rerun", json={"tiles": [7]}).json()
        done = wait_terminal(client, third["id"])
        assert done["status"] == "succeeded", done.get("error")
        assert done["rerun_of"] == again["id"]  # the rerun it was made from, not the first job
        listed = {j["id"]: j["rerun_of"] for j in client.get("/v1/jobs").json()["items"]}
        assert listed == {job["id"]: None, again["id"]: job["id"], third["id"]: again["id"]}
        assert [index for index, _ in sent] == ["7"]
        assert "mossy stone, edited" in sent[0][1]  # the edited prompt, now that it is chosen
        last = client.get(f"/v1/jobs/{third['id']}/tiles").json()["tiles"]
        assert [t["state"] for t in last] == [
            "done" if t["index"] == 7 else "cached" for t in before]
