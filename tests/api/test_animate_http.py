"""The ``animate`` job kind over real HTTP: ``POST /v1/animations`` on a uvicorn server with
the embedded executor, frames from the emulated animate worker (RunPod emulator on loopback).
A user submits a sprite, follows the job's events, downloads a sheet with the declared frame
count and its metadata, finds the set delivered beside the source; can cancel mid-way
(nothing written); and a bad motion is refused at submit."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apitest_helpers import LiveServer, running_app, sse_events, wait_terminal
from PIL import Image
from sprites import H, W, knight_png

from service.core.sheet_writers import recorded_frames
from service.core.sheets import read_cells
from service.settings import Settings
from workers.emulator import EmulatorServer, EndpointConfig, Faults, resolve_handler

KEY = "emu-key"


def sprite_bytes() -> bytes:
    return knight_png()


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer({
        "anim": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4),
        # one worker, 0.3 s per frame: a job is still generating when the user cancels
        "anim-slow": EndpointConfig(handler=resolve_handler("animate-echo"), workers=1,
                                    latency_s=0.3),
        # four workers, 0.3 s per frame: eight frames keep a job running for 0.6 s or more
        "anim-steady": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4,
                                      latency_s=0.3),
        # the first frame fails for good after 0.2 s; the three beside it would take 2 s each
        # (room for a loaded machine to see the failure and cancel them), later ones 0.2 s
        "anim-fails": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4,
                                     latency_s=0.2, faults=Faults.parse("fatal=1:1,slow=1:3",
                                                                        slow_factor=10)),
    }, api_key=KEY) as emu:
        yield emu


@pytest.fixture
def recorded() -> Iterator[tuple[EmulatorServer, list[tuple[str, str]]]]:
    """The animate echo worker on endpoint ``anim``, and each frame it is sent, in order:
    (frame id, prompt)."""
    sent: list[tuple[str, str]] = []
    echo = resolve_handler("animate-echo")

    def animate(job: dict[str, Any]) -> dict[str, Any]:
        if job["input"].get("action") == "animate":
            sent.append((job["input"]["frame_id"], job["input"]["prompt"]))
        return dict(echo(job))

    with EmulatorServer({"anim": EndpointConfig(handler=animate, workers=4)},
                        api_key=KEY) as emu:
        yield emu, sent


def _server(emu: EmulatorServer, root: Path, endpoint: str, **extra: Any) -> Any:
    from service.settings import load_settings

    repo = root / "repo"
    (repo / "sprites").mkdir(parents=True)
    (repo / "sprites" / "hero.png").write_bytes(sprite_bytes())
    return running_app(load_settings(
        data_dir=root / "data", repos={"game": repo}, backend="none",
        runpod_api_key=KEY, runpod_base_url=emu.url, runpod_animate_endpoint_id=endpoint,
        animate_edit_side=64, runpod_poll_min_s=0.02, runpod_backoff_base_s=0.05, **extra))


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
        assert job["params"] is None  # no upscale parameters pretending to apply
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
        over = _submit(client, motion="walk", naming="replace")  # the sheet over its sprite
        assert over.status_code == 422 and "over its own sprite" in over.json()["detail"]
        assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


def test_a_setup_no_frame_could_run_on_is_refused_at_submit(emulator: EmulatorServer,
                                                             tmp_path: Path) -> None:
    """RunPod's public endpoint without a bucket: a 503 naming what to configure (the watcher
    waits and tries again; the studio shows it), instead of a job queued to fail."""
    with _server(emulator, tmp_path, "anim", animate_backend="public") as server, \
            server.client() as client:
        refused = _submit(client, motion="walk")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "edit_needs_url"
        assert "AAT_ARTIFACTS_URL" in refused.json()["detail"]
        assert client.get("/v1/jobs").json()["items"] == []
    assert sorted(p.name for p in (tmp_path / "repo" / "sprites").iterdir()) == ["hero.png"]


def _cells(png: bytes, n: int) -> list[np.ndarray]:
    sheet = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    assert sheet.shape == (H, W * n, 4)
    return [sheet[:, i * W:(i + 1) * W] for i in range(n)]


def test_frames_are_tiles_and_a_rerun_changes_only_the_chosen_cells(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim") as server, server.client() as client:
        job = _submit(client, motion="walk", frames="8").json()
        first = wait_terminal(client, job["id"])
        assert first["status"] == "succeeded", first.get("error")
        # the frames are the job's tiles: one per frame, in its cell, with prompt and seed
        tiles = client.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
        assert [t["index"] for t in tiles] == list(range(8))
        assert [(t["x"], t["y"], t["w"], t["h"]) for t in tiles] == [
            (i * W, 0, W, H) for i in range(8)]
        assert {t["state"] for t in tiles} == {"done"}
        assert all(t["seed"] is not None and "walking" in t["caption"] for t in tiles)
        assert all(t["timings"]["animate"] >= t["timings"]["animate_gpu"] >= 0 for t in tiles)
        assert len({t["seed"] for t in tiles}) == 8
        before = client.get(f"/v1/jobs/{job['id']}/result").content
        repo = tmp_path / "repo" / "sprites"
        assert (repo / "hero_walk.png").read_bytes() == before
        webp_before = (repo / "hero_walk.webp").read_bytes()

        # a frame takes a prompt for the next rerun, like a tile
        patched = client.patch(f"/v1/jobs/{job['id']}/tiles/5",
                               json={"prompt": "walking, arms raised high"})
        assert patched.status_code == 200 and patched.json()["prompt"].endswith("raised high")
        bad = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [3, 8]})
        assert bad.status_code == 422 and bad.json()["code"] == "frame_unknown"
        assert "8" in bad.json()["detail"]

        rerun = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [3, 5]})
        assert rerun.status_code == 202, rerun.text
        again = rerun.json()
        assert again["id"] != job["id"] and again["kind"] == "animate"
        assert again["rerun_of"] == job["id"]
        assert rerun.headers["Location"] == f"/v1/jobs/{again['id']}"
        events = sse_events(client, again["id"], tiles=True)
        states: dict[int, list[str]] = {}
        for name, data in events:
            if name == "tiles":
                for t in data["tiles"]:
                    states.setdefault(t["index"], []).append(t["state"])
        assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"
        assert sorted(states) == list(range(8))
        # the chosen frames were generated again (done); the others were kept (cached)
        assert {i: s[-1] for i, s in states.items()} == {
            i: "done" if i in (3, 5) else "cached" for i in range(8)}, states
        final = wait_terminal(client, again["id"])
        assert final["stages"]["animate"] == {"done": 8, "total": 8}
        assert final["cost"]["runpod_jobs"] == 2  # only the two chosen frames were generated

        after = client.get(f"/v1/jobs/{again['id']}/result").content
        old_cells, new_cells = _cells(before, 8), _cells(after, 8)
        for i in range(8):  # pixel-wise: the chosen cells differ, the others are identical
            same = np.array_equal(old_cells[i], new_cells[i])
            assert same == (i not in (3, 5)), i
        new_tiles = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
        assert [t["seed"] == o["seed"] for t, o in zip(new_tiles, tiles, strict=True)] == [
            i not in (3, 5) for i in range(8)]
        assert new_tiles[5]["prompt"].endswith("raised high")
        assert [bool(t["timings"]) for t in new_tiles] == [i in (3, 5) for i in range(8)]

        # re-delivered beside the source: the sheet as served, metadata parsing and agreeing
        assert (repo / "hero_walk.png").read_bytes() == after
        fmt, rects = read_cells("hero_walk.json", (repo / "hero_walk.json").read_text(), H)
        assert fmt == "aseprite" and rects == [(i * W, 0, W, H) for i in range(8)]
        recorded = recorded_frames((repo / "hero_walk.json").read_text(), 8)
        assert recorded == [(int(i in (3, 5)), t["seed"]) for i, t in enumerate(new_tiles)]
        assert 'res://sprites/hero_walk.png' in (repo / "hero_walk.tres").read_text()
        assert (repo / "hero_walk.webp").read_bytes() != webp_before  # the preview moved on
        assert final["output"]["files"]["hero_walk.webp"] != first["output"]["files"][
            "hero_walk.webp"]


def test_kept_frames_of_a_rerun_are_cached_from_the_start_and_never_flicker(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    """Regenerating frames 3 and 5: the six kept frames are ``cached`` (the studio's "kept")
    the moment the rerun job exists, and its event stream never reports them in any other
    state (the studio showed them queued, then done; then done like the generated ones); the
    two chosen ones go from queued to done, and only they are done at the end."""
    with _server(emulator, tmp_path, "anim-steady", job_threads=1) as server, \
            server.client() as client:
        job = _submit(client, motion="walk", frames="8").json()
        assert wait_terminal(client, job["id"])["status"] == "succeeded"
        # another sprite's job holds the one runner thread, its frames waiting for a GPU
        # (the endpoint scaled to zero until the rerun was seen queued; its 0.6 s of frames
        # alone could end first on a loaded machine): the rerun waits in the queue
        emulator.scale("anim-steady", 0)
        busy = client.post("/v1/animations", content=sprite_bytes(), params={
            "filename": "other.png", "motion": "walk", "frames": "8", "seed": "99"},
            headers={"Content-Type": "image/png"})
        assert busy.status_code == 202, busy.text
        rerun = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [3, 5]})
        assert rerun.status_code == 202, rerun.text
        again = rerun.json()
        at_once = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
        assert client.get(f"/v1/jobs/{again['id']}").json()["status"] == "queued"
        assert [t["state"] for t in at_once] == [
            "queued" if i in (3, 5) else "cached" for i in range(8)]
        emulator.scale("anim-steady", 4)
        events = sse_events(client, again["id"], tiles=True)
        final = wait_terminal(client, again["id"])
        frames = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
    states: dict[int, list[str]] = {}
    for name, data in events:
        if name == "tiles":
            for t in data["tiles"]:
                states.setdefault(t["index"], []).append(t["state"])
    assert final["status"] == "succeeded", final.get("error")
    assert {i: s for i, s in states.items() if i not in (3, 5)} == {
        i: ["cached"] for i in range(8) if i not in (3, 5)}  # told once, never changed
    for i in (3, 5):
        assert states[i][0] == "queued" and states[i][-1] == "done", states[i]
    assert [t["state"] for t in frames] == [
        "done" if i in (3, 5) else "cached" for i in range(8)]
    assert [t["seed"] for t in frames if t["index"] not in (3, 5)] == [
        t["seed"] for t in at_once if t["index"] not in (3, 5)]  # the seeds they were made with
    assert final["cost"]["runpod_jobs"] == 2  # only the chosen frames were generated
    # and only they cost: the kept cells carry what they cost the first job, not this one
    # (the job's GPU time is its two frames', not "under three frames' 0.3 s": on a loaded
    # machine the emulated worker's own time on top of the 0.3 s is more than one frame's)
    gpu = {t["index"]: t["timings"].get("animate_gpu") for t in frames}
    assert [i for i, s in gpu.items() if s is not None] == [3, 5], gpu
    assert gpu[3] >= 0.3 and gpu[5] >= 0.3
    assert final["cost"]["execution_s"] == pytest.approx(gpu[3] + gpu[5], abs=0.002)


def test_a_frame_whose_prompt_was_edited_keeps_its_cell_until_it_is_chosen(
        recorded: tuple[EmulatorServer, list[tuple[str, str]]], tmp_path: Path) -> None:
    """Frame 6 gets a new edit prompt but is not chosen: regenerating frames 3 and 5 sends
    those two to the worker and no other; cell 6 of the sheet stays the same byte for byte,
    frame 6 is kept (cached) throughout and shows the new prompt, which the worker receives once
    frame 6 is chosen."""
    emu, sent = recorded
    with _server(emu, tmp_path, "anim") as server, server.client() as client:
        job = _submit(client, motion="walk", frames="8").json()
        assert wait_terminal(client, job["id"])["status"] == "succeeded"
        before = client.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
        first = _cells(client.get(f"/v1/jobs/{job['id']}/result").content, 8)
        patched = client.patch(f"/v1/jobs/{job['id']}/tiles/6",
                               json={"prompt": "walking, waving a torch"})
        assert patched.status_code == 200, patched.text
        sent.clear()

        rerun = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [3, 5]})
        assert rerun.status_code == 202, rerun.text
        again = rerun.json()
        events = sse_events(client, again["id"], tiles=True)
        final = wait_terminal(client, again["id"])
        assert final["status"] == "succeeded", final.get("error")
        assert sorted(frame for frame, _ in sent) == ["frame-3", "frame-5"]
        assert final["cost"]["runpod_jobs"] == 2
        assert [t["state"] for name, data in events if name == "tiles"
                for t in data["tiles"] if t["index"] == 6] == ["cached"]  # told once
        after = client.get(f"/v1/jobs/{again['id']}/tiles").json()["tiles"]
        assert (after[6]["state"], after[6]["seed"]) == ("cached", before[6]["seed"])
        assert after[6]["prompt"] == "walking, waving a torch"
        second = _cells(client.get(f"/v1/jobs/{again['id']}/result").content, 8)
        assert second[6].tobytes() == first[6].tobytes()
        sent.clear()

        third = client.post(f"/v1/jobs/{again['id']}/rerun", json={"tiles": [6]}).json()
        done = wait_terminal(client, third["id"])
        assert done["status"] == "succeeded", done.get("error")
        assert [frame for frame, _ in sent] == ["frame-6"]
        assert "waving a torch" in sent[0][1]  # the new prompt, now that the frame is chosen
        # frames kept by the rerun before are kept again (cached), the chosen one is done
        assert [t["state"] for t in client.get(f"/v1/jobs/{third['id']}/tiles").json()[
            "tiles"]] == ["done" if i == 6 else "cached" for i in range(8)]


def test_rerun_of_a_running_animate_job_is_a_conflict(emulator: EmulatorServer,
                                                      tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim-slow") as server, server.client() as client:
        job = _submit(client, motion="run", frames="4").json()
        busy = client.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [1]})
        assert busy.status_code == 409 and busy.json()["code"] == "not_ready"
        client.post(f"/v1/jobs/{job['id']}/cancel")
        assert wait_terminal(client, job["id"])["status"] == "canceled"


def test_a_failed_frame_cancels_the_frames_in_flight(emulator: EmulatorServer,
                                                     tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim-fails") as server, server.client() as client:
        job = _submit(client, motion="walk", frames="8").json()
        final = wait_terminal(client, job["id"])
        assert final["status"] == "failed"
        assert final["error"]["code"] == "worker_fatal"
        assert re.match(r"frame [1-4] of 8: injected permanent failure",
                        final["error"]["message"])
        stats = emulator.stats("anim-fails")
        # four frames were in flight (the job's concurrency); the three still running when
        # the first failed were cancelled on the endpoint: no GPU time spent on them
        assert stats["submitted"] == 4, stats
        assert stats["canceled"] == 3 and stats["by_status"] == {"FAILED": 1, "CANCELLED": 3}
        assert final["cost"]["runpod_jobs"] == 4
        tiles = client.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
        assert {t["state"] for t in tiles} == {"failed"}  # no frame finished
        assert sorted(p.name for p in (tmp_path / "repo" / "sprites").iterdir()) == [
            "hero.png"]

        # retried on the server: a new animate job, same sprite, parameters and target
        retried = client.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202, retried.text
        new = retried.json()
        assert new["id"] != job["id"] and new["kind"] == "animate"
        assert (new["retry_of"], new["rerun_of"]) == (job["id"], None)
        assert new["animation"] == job["animation"] and new["target"] == job["target"]
        assert new["input"]["sha256"] == job["input"]["sha256"]
        done = wait_terminal(client, new["id"])
        assert done["status"] == "succeeded", done.get("error")  # the fault fired only once
        assert (tmp_path / "repo" / "sprites" / "hero_walk.png").is_file()
        refused = client.post(f"/v1/jobs/{new['id']}/retry")
        assert (refused.status_code, refused.json()["code"]) == (409, "job_succeeded")


def test_an_animate_job_costs_its_gpu_seconds(emulator: EmulatorServer, tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim-slow") as server, server.client() as client:
        job = _submit(client, motion="idle", frames="4").json()
        final = wait_terminal(client, job["id"])
        assert final["status"] == "succeeded", final.get("error")
        cost = final["cost"]
        assert cost["runpod_jobs"] == 4 and cost["possibly_billed"] == 0
        assert 4 * 0.3 <= cost["execution_s"] < 4 * 0.3 + 2  # 0.3 s of "GPU" per frame
        price = Settings.model_fields["runpod_price_per_gpu_second"].default
        assert cost["usd"] == pytest.approx(cost["execution_s"] * price, rel=1e-6)
        assert cost["usd"] > 0
        listed = client.get("/v1/jobs").json()["items"][0]  # shown like an upscale job's
        assert listed["cost"] == cost


def test_a_file_the_service_did_not_write_keeps_the_whole_set_out(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    with _server(emulator, tmp_path, "anim") as server, server.client() as client:
        mine = tmp_path / "repo" / "sprites" / "hero_walk.tres"
        mine.write_text("[gd_resource] hand-made")  # the artist's own SpriteFrames
        job = _submit(client, motion="walk", frames="4").json()
        final = wait_terminal(client, job["id"])
        assert final["status"] == "failed"
        assert final["error"]["code"] == "delivery_conflict"
        assert "hero_walk.tres" in final["error"]["message"]
        assert sorted(p.name for p in mine.parent.iterdir()) == ["hero.png", "hero_walk.tres"]
        assert mine.read_text() == "[gd_resource] hand-made"
