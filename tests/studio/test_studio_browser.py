"""The studio in a real Chromium against `aat up` on emulated RunPod endpoints: submit and
watch every tile, download; edit a caption and re-run one tile; LoRA upload, list and delete;
cancel; a corrupt file's error; the CSP. Screenshots of each view go to build/screenshots/."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from studiotest_helpers import RECORDER, start_studio, wait_status

from service.pipeline.refine import derive_seed
from workers.emulator.echo import tint_amount

pytestmark = pytest.mark.slow  # a real browser (chromium) against aat up

SMALL = {"tile_size": 64, "overlap": 16}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def png(path: Path, width: int = 128, height: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8)).save(path)
    return path


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).astype(np.int16)


def submit(studio: Any, data: bytes, **params: Any) -> dict[str, Any]:
    with studio.client() as http:
        resp = http.post("/v1/jobs", content=data, params={**SMALL, **params},
                         headers={"Content-Type": "image/png"})
        assert resp.status_code in (200, 202), resp.text
        return dict(resp.json())


def test_submit_watch_every_tile_and_download(studio, page, shot, tmp_path, slow_gpus,
                                              gpus) -> None:
    page.add_init_script(RECORDER)
    image = tmp_path / "stone.png"
    image.write_bytes((EXAMPLES / "stone-tileable.png").read_bytes())
    page.goto(studio.url + "/")
    page.get_by_test_id("new-job-file").set_input_files(str(image))
    page.get_by_label("Tile size (px)").fill("64")
    page.get_by_label("Tile overlap (px)").fill("16")
    with studio.client() as http:
        planned = http.post("/v1/plan", json={"input_width": 128, "input_height": 128,
                                              "params": SMALL}).json()
    expect(page.locator("#plan-grid .tile")).to_have_count(len(planned["tiles"]))
    estimate = page.get_by_test_id("estimate")
    assert re.search(rf"{planned['estimate']['tiles']} GPU tiles", estimate.inner_text())
    shot(page, "new-job")

    gpus.hold()  # the tiles wait for a GPU until the page shows them captioning
    page.get_by_test_id("submit-job").click()
    page.wait_for_url(re.compile(r".*/jobs/j_[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.locator("[data-testid=tile][data-state=captioning]").first.wait_for()
    gpus.release()
    wait_status(page, "succeeded")
    tiles = page.get_by_test_id("tile")
    assert tiles.count() == len(planned["tiles"])
    expect(page.locator("[data-testid=tile]:not([data-state=done])")).to_have_count(0)
    changes = page.evaluate("window.__changes")
    seen = {c["value"] for c in changes if c["attr"] == "data-state"}
    assert "done" in seen and seen & {"captioning", "refining"}, \
        f"tile states did not change live from SSE: {seen}"
    statuses = [c["value"] for c in changes if c["attr"] == "data-status"]
    assert "running" in statuses and statuses[-1] == "succeeded"

    slider = page.get_by_test_id("compare-slider")
    page.get_by_role("button", name="1:1 pixels").click()
    assert slider.evaluate("s => getComputedStyle(s.querySelector('img')).imageRendering") \
        == "pixelated", "1:1 shows pixels with nearest-neighbour, not smoothed"
    after = page.locator("#compare-after")
    assert after.evaluate("i => i.naturalWidth") == 256, "1:1 shows every output pixel"
    page.get_by_role("button", name="Fit").click()
    assert "pixels" not in (slider.get_attribute("class") or "")
    tiles.nth(6).click()
    assert page.get_by_test_id("tile-caption").input_value().startswith("a 64x64 tile")
    facts = page.locator("#tile-facts").inner_text()
    assert re.search(r"Captioning\s+[\d.]+ s \(GPU [\d.]+ s\)", facts), facts
    assert re.search(r"Refining\s+[\d.]+ s \(GPU [\d.]+ s\)", facts), facts
    assert tiles.nth(6).get_attribute("aria-pressed") == "true"
    tiles.nth(7).click(modifiers=["Shift"])
    assert page.locator("[data-testid=tile][aria-pressed=true]").count() == 2
    shot(page, "job-view")

    with page.expect_download() as info:
        page.get_by_test_id("download-result").click()
    download = info.value
    with studio.client() as http:
        result = http.get(f"/v1/jobs/{job_id}/result")
    assert Path(download.path()).read_bytes() == result.content
    assert download.suggested_filename == "stone_x2.png"
    assert page.problems == []  # type: ignore[attr-defined]


def _seed_that_changes_tile(index: int) -> int:
    """A job seed for which re-running ``index`` tints it differently (echo worker)."""
    return next(s for s in range(1, 1000)
                if tint_amount(derive_seed(s, index, 1)) != tint_amount(derive_seed(s, index, 0)))


def test_edit_one_caption_and_rerun_only_that_tile(studio, page, shot) -> None:
    chosen = 4
    page.add_init_script(RECORDER)  # every page: the rerun's view records its tile states
    data = png(Path(studio.data_dir.parent) / "wall.png", seed=7).read_bytes()
    first = submit(studio, data, seed=_seed_that_changes_tile(chosen), colour_fix="none")
    page.goto(f"{studio.url}/jobs/{first['id']}")
    wait_status(page, "succeeded")
    tile = page.locator(f"[data-testid=tile][data-index='{chosen}']")
    tile.click()
    page.get_by_test_id("tile-caption").fill("mossy bricks, hand painted")
    page.get_by_test_id("save-caption").click()
    with studio.client() as http:
        deadline_tiles = http.get(f"/v1/jobs/{first['id']}/tiles").json()["tiles"]
    assert deadline_tiles[chosen]["prompt"] in (None, "mossy bricks, hand painted")
    page.get_by_test_id("rerun-tiles").click()
    page.wait_for_url(lambda url: "/jobs/j_" in url and not url.endswith(first["id"]))
    second_id = page.url.rsplit("/", 1)[1]
    wait_status(page, "succeeded")
    page.get_by_test_id("tile").first.wait_for()
    states = page.eval_on_selector_all("[data-testid=tile]",
                                       "ns => ns.map(n => [Number(n.dataset.index), n.dataset.state])")
    assert dict(states)[chosen] == "done"
    assert {s for i, s in states if i != chosen} == {"cached"}, states
    changes = [c for c in page.evaluate("window.__changes") if c["attr"] == "data-state"]
    flicker = [c for c in changes if c["index"] != str(chosen) and c["value"] != "cached"]
    assert not flicker, f"the kept tiles stay cached throughout: {changes}"
    made = page.locator("#job-facts").get_by_test_id("job-origin")
    expect(made).to_have_text(f"rerun of …{first['id'][-8:]}")
    assert made.get_by_role("link").get_attribute("href") == f"/jobs/{first['id']}"
    shot(page, "job-view-rerun")

    # the queue tells the rerun from the job it re-ran, and links back to that job
    page.goto(f"{studio.url}/jobs")
    rerun_row = page.locator(f"[data-testid=job-row][data-id='{second_id}']")
    first_row = page.locator(f"[data-testid=job-row][data-id='{first['id']}']")
    expect(rerun_row.get_by_test_id("job-origin")).to_have_text(
        f"rerun of …{first['id'][-8:]}")
    expect(first_row).to_be_visible()
    expect(first_row.get_by_test_id("job-origin")).to_have_count(0)
    shot(page, "queue-rerun")
    rerun_row.get_by_test_id("job-origin").get_by_role("link").click()
    page.wait_for_url(f"{studio.url}/jobs/{first['id']}")
    wait_status(page, "succeeded")
    expect(page.locator("#job-facts").get_by_test_id("job-origin")).to_have_count(0)

    with studio.client() as http:
        tiles = http.get(f"/v1/jobs/{second_id}/tiles").json()["tiles"]
        before = pixels(http.get(f"/v1/jobs/{first['id']}/result").content)
        after = pixels(http.get(f"/v1/jobs/{second_id}/result").content)
    assert tiles[chosen]["prompt"] == "mossy bricks, hand painted"
    t = tiles[chosen]
    changed = np.argwhere(np.any(before != after, axis=-1))
    assert len(changed), "the re-run tile did not change"
    ys, xs = changed[:, 0], changed[:, 1]
    assert xs.min() >= t["x"] and xs.max() < t["x"] + t["w"], "pixels outside the tile changed"
    assert ys.min() >= t["y"] and ys.max() < t["y"] + t["h"], "pixels outside the tile changed"
    assert page.problems == []  # type: ignore[attr-defined]


def test_each_tile_keeps_its_own_caption_when_several_are_rerun(studio, page) -> None:
    """The panel shows one tile's caption at a time: an edit goes to that tile only, and
    re-running several tiles never hands one tile's caption to the others."""
    first = submit(studio, png(Path(studio.data_dir.parent) / "captions.png", seed=11).read_bytes(),
                   seed=5)
    page.goto(f"{studio.url}/jobs/{first['id']}")
    wait_status(page, "succeeded")
    box = page.get_by_test_id("tile-caption")

    def pick(index: int, keys: str) -> None:
        page.locator(f"[data-testid=tile][data-index='{index}']").focus()
        page.keyboard.press(keys)

    pick(0, "Enter")
    box.fill("a mossy wall")
    page.get_by_test_id("save-caption").click()
    pick(5, "Control+Enter")
    expect(box).not_to_have_value("a mossy wall")
    box.fill("a wooden door")  # typed, not saved: the rerun saves it
    pick(9, "Control+Enter")  # shown, untouched
    pick(5, "Control+Enter")  # away from 5 ...
    pick(5, "Control+Enter")  # ... and back: the unsaved edit is still there
    expect(box).to_have_value("a wooden door")
    page.get_by_test_id("rerun-tiles").click()
    page.wait_for_url(lambda url: "/jobs/j_" in url and not url.endswith(first["id"]))
    second_id = page.url.rsplit("/", 1)[1]
    with studio.client() as http:
        before = {t["index"]: t for t in http.get(f"/v1/jobs/{first['id']}/tiles").json()["tiles"]}
        after = {t["index"]: t for t in http.get(f"/v1/jobs/{second_id}/tiles").json()["tiles"]}
    assert [after[i]["prompt"] for i in (0, 5, 9)] == ["a mossy wall", "a wooden door", None]
    assert before[9]["prompt"] is None and before[9]["caption"] == after[9]["caption"]
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_click_anywhere_in_a_tile_selects_that_tile_not_a_neighbour(studio, page, shot) -> None:
    """640x480 at 2x in 512 px tiles with 128 px overlap: the planner spaces the 3x3 tiles
    224 px apart (288 px overlap), so a tile's centre lies inside its neighbours too. Each
    tile's button answers only for its part of the overlaps (cut at their midlines), while its
    outline still shows the whole tile."""
    data = png(Path(studio.data_dir.parent) / "hits.png", 640, 480, seed=4).read_bytes()
    job = submit(studio, data, tile_size=512, overlap=128)
    page.goto(f"{studio.url}/jobs/{job['id']}")
    wait_status(page, "succeeded")
    with studio.client() as http:
        tiles = http.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
    assert len(tiles) == 9 and tiles[7]["y"] < tiles[4]["y"] + 256  # 4's centre is in 7 too
    buttons = page.get_by_test_id("tile")
    expect(buttons).to_have_count(9)
    page.get_by_test_id("tile-grid").evaluate("g => g.scrollIntoView()")  # all of it on screen
    grid = page.get_by_test_id("tile-grid").bounding_box()
    assert grid["y"] >= 0 and grid["y"] + grid["height"] <= 800, grid
    sx, sy = grid["width"] / 1280, grid["height"] / 960

    def on_page(x: float, y: float) -> tuple[float, float]:
        return grid["x"] + x * sx, grid["y"] + y * sy

    for t in tiles:  # the middle of each tile, then a point inside its overlap with the next
        page.mouse.click(*on_page(t["x"] + t["w"] / 2, t["y"] + t["h"] / 2))
        expect(page.locator("[data-testid=tile][aria-pressed=true]")).to_have_count(1)
        assert page.locator("[data-testid=tile][aria-pressed=true]").get_attribute(
            "data-index") == str(t["index"]), f"the centre of tile {t['index']} selected another"
    centre = tiles[4]
    page.mouse.click(*on_page(centre["x"] + centre["w"] / 2, centre["y"] + centre["h"] / 2))
    expect(page.locator("#panel-which")).to_contain_text("Tile 4 at")
    outline = buttons.nth(4).locator(".outline").bounding_box()
    assert abs(outline["width"] - 512 * sx) < 2 and abs(outline["height"] - 512 * sy) < 2, \
        "the selected tile's outline is the whole tile"
    assert abs(outline["x"] - on_page(centre["x"], 0)[0]) < 2
    boxes = [buttons.nth(i).bounding_box() for i in range(9)]
    for i, a in enumerate(boxes):  # the hit areas meet and never overlap
        for b in boxes[i + 1:]:
            overlap_w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
            overlap_h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
            assert overlap_w < 1 or overlap_h < 1, (a, b)
    assert abs(sum(b["width"] * b["height"] for b in boxes) - grid["width"] * grid["height"]) \
        < 0.01 * grid["width"] * grid["height"], "together they cover the image"
    shot(page, "job-view-tile-hit-areas")
    assert page.problems == []  # type: ignore[attr-defined]


def safetensors_bytes(values: int = 4) -> bytes:
    header = json.dumps({"lora_up.weight": {"dtype": "F32", "shape": [values],
                                            "data_offsets": [0, 4 * values]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * values)


def test_lora_chunked_upload_list_refusal_and_delete(studio, page, shot, tmp_path) -> None:
    lora = tmp_path / "moss_style.safetensors"
    lora.write_bytes(safetensors_bytes(640 * 1024))  # 2.5 MiB: three 1 MiB chunks
    chunks: list[str] = []
    page.on("request", lambda r: chunks.append(r.url)
            if r.method == "PUT" and "/v1/models/uploads/" in r.url else None)
    fake = tmp_path / "evil.safetensors"
    fake.write_bytes(b"\x80\x04 pickle pretending to be safetensors")
    page.add_init_script(RECORDER)
    page.goto(studio.url + "/loras")
    page.get_by_test_id("lora-file").set_input_files(str(lora))
    row = page.locator("[data-testid=lora-row][data-name='moss_style.safetensors']")
    row.wait_for()
    assert "B" in row.inner_text()
    with studio.client() as http:
        names = [m["name"] for m in http.get("/v1/models").json()["models"]]
    assert "moss_style.safetensors" in names
    assert len(chunks) == 3, chunks
    assert [c.rsplit("offset=", 1)[1] for c in chunks] == ["0", "1048576", "2097152"]
    shot(page, "loras")

    page.get_by_test_id("lora-file").set_input_files(str(fake))
    error = page.get_by_test_id("error-message")
    error.wait_for(state="visible")
    assert "model_invalid" in error.inner_text()
    assert page.locator("[data-testid=lora-row][data-name='evil.safetensors']").count() == 0

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_test_id("lora-delete").click()
    row.wait_for(state="detached")
    with studio.client() as http:
        names = [m["name"] for m in http.get("/v1/models").json()["models"]]
    assert "moss_style.safetensors" not in names
    assert page.problems == []  # type: ignore[attr-defined]


def test_cancel_a_running_job(studio, page, shot, slow_gpus) -> None:
    data = png(Path(studio.data_dir.parent) / "big.png", 256, 256, seed=3).read_bytes()
    job = submit(studio, data)
    page.goto(f"{studio.url}/jobs/{job['id']}")
    wait_status(page, "running")
    page.locator("[data-testid=tile][data-state=captioning], "
                 "[data-testid=tile][data-state=refining]").first.wait_for()
    page.get_by_test_id("cancel-job").click()
    wait_status(page, "canceled")
    assert page.get_by_test_id("cancel-job").is_hidden()
    # the tiles cut short (in flight or waiting) say so; none looks queued as if it would run
    expect(page.locator("[data-testid=tile]:not([data-state=done]):not([data-state=cached])"
                        ":not([data-state=canceled])")).to_have_count(0)
    assert page.locator("[data-testid=tile][data-state=canceled]").count() > 0
    shot(page, "job-view-canceled")
    with studio.client() as http:
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"
        states = [t["state"] for t in http.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]]
    assert set(states) <= {"done", "cached", "canceled"} and "canceled" in states, states
    page.get_by_test_id("retry-job").click()  # a new job, same input and params
    page.wait_for_url(lambda url: "/jobs/j_" in url and not url.endswith(job["id"]))
    retried = page.url.rsplit("/", 1)[1]
    with studio.client() as http:
        again = http.get(f"/v1/jobs/{retried}").json()
        assert again["input"]["sha256"] == job["input"]["sha256"]
        same = {k: v for k, v in job["params"].items() if k != "asset_reason"}
        assert {k: again["params"][k] for k in same} == same
        http.post(f"/v1/jobs/{retried}/cancel")
    # until it has stopped: a retry of the same input and params while it still runs is
    # answered with it (dedupe), and the queue would show no new row
    wait_status(page, "canceled")
    page.goto(f"{studio.url}/jobs")
    row = page.locator(f"[data-testid=job-row][data-id='{job['id']}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "canceled"
    retried_row = page.locator(f"[data-testid=job-row][data-id='{retried}']")
    expect(retried_row.get_by_test_id("job-origin")).to_have_text(f"retry of …{job['id'][-8:]}")
    shot(page, "queue")
    before = page.get_by_test_id("job-row").count()
    row.get_by_role("button", name="Retry").click()
    expect(page.get_by_test_id("job-row")).to_have_count(before + 1)
    newest = page.get_by_test_id("job-row").first
    assert newest.get_attribute("data-id") not in (job["id"], retried)
    with studio.client() as http:
        third = http.get(f"/v1/jobs/{newest.get_attribute('data-id')}").json()
        assert third["input"]["sha256"] == job["input"]["sha256"]
        http.post(f"/v1/jobs/{third['id']}/cancel")
    assert page.problems == []  # type: ignore[attr-defined]


def test_asset_type_spritesheet_grid_and_style_image_from_the_form(studio, page, tmp_path) -> None:
    sheet = png(tmp_path / "walk_sheet.png", 128, 64, seed=5)
    page.goto(studio.url + "/")
    page.get_by_test_id("new-job-file").set_input_files(str(sheet))
    page.get_by_label("Tile size (px)").fill("64")
    page.get_by_label("Tile overlap (px)").fill("16")
    page.get_by_label("Asset type").select_option("sprite")
    page.get_by_label("Spritesheet grid").fill("2x1")
    style = png(tmp_path / "moss_style.png", 32, 32, seed=9)
    page.get_by_test_id("style-file").set_input_files(str(style))
    expect(page.locator("#style-status")).to_contain_text("moss_style.png will guide")
    with studio.client() as http:
        planned = http.post("/v1/plan", json={"input_width": 128, "input_height": 64, "params": {
            **SMALL, "asset_type": "sprite", "sheet": "2x1"}}).json()
    expect(page.locator("#plan-grid .tile")).to_have_count(len(planned["tiles"]))
    page.get_by_test_id("submit-job").click()
    page.wait_for_url(re.compile(r".*/jobs/j_[0-9a-f]+$"))
    wait_status(page, "succeeded")
    with studio.client() as http:
        job = http.get(f"/v1/jobs/{page.url.rsplit('/', 1)[1]}").json()
    assert job["params"]["asset_type"] == "sprite"
    assert job["params"]["sheet"] is not None
    assert job["params"]["style_image_sha256"] == hashlib.sha256(style.read_bytes()).hexdigest()
    assert job["params"]["ip_adapter_scale"] == 0.5
    expect(page.get_by_test_id("tile")).to_have_count(len(planned["tiles"]))
    assert page.problems == []  # type: ignore[attr-defined]


def test_corrupt_file_shows_its_error_and_creates_no_job(studio, page, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with studio.client() as http:
        before = len(http.get("/v1/jobs", params={"limit": 500}).json()["items"])
    page.goto(studio.url + "/")
    page.get_by_test_id("new-job-file").set_input_files(str(broken))
    page.get_by_test_id("submit-job").click()
    error = page.get_by_test_id("error-message")
    error.wait_for(state="visible")
    assert re.search(r"error \[image_\w+\]: broken\.png: ", error.inner_text()), error.inner_text()
    assert page.url.rstrip("/") == studio.url
    with studio.client() as http:
        assert len(http.get("/v1/jobs", params={"limit": 500}).json()["items"]) == before
    assert page.problems == []  # type: ignore[attr-defined]


def test_several_files_each_show_their_outcome_and_go_into_a_folder(studio, page, shot,
                                                                    tmp_path) -> None:
    """Three files, one corrupt: the two good ones become jobs (linked), the corrupt one is
    named with its error, a second submit sends only what has no job yet; a path in the repo
    naming one file is refused before anything is sent, a folder takes each file by name."""
    chosen = [str(png(tmp_path / "scene.png", seed=21)), str(png(tmp_path / "scene2.png", seed=22))]
    broken = tmp_path / "corrupt.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    chosen.append(str(broken))

    def job_ids() -> set[str]:
        with studio.client() as http:
            return {j["id"] for j in http.get("/v1/jobs", params={"limit": 500}).json()["items"]}

    before = job_ids()
    page.goto(studio.url + "/")
    page.get_by_test_id("new-job-file").set_input_files(chosen)
    page.get_by_label("Tile size (px)").fill("64")
    page.get_by_label("Tile overlap (px)").fill("16")
    page.get_by_label("Target repo").fill("game")
    page.get_by_label("Path in repo").fill("textures/rock.png")
    page.get_by_test_id("submit-job").click()
    error = page.get_by_test_id("error-message")
    expect(error).to_contain_text('"textures/rock.png" names one file, but 3 images were chosen')
    assert job_ids() == before, "nothing is sent while the path names one file"

    page.get_by_label("Path in repo").fill("textures/")
    page.get_by_test_id("submit-job").click()
    rows = page.get_by_test_id("picked-file")
    expect(page.locator("[data-testid=picked-file][data-outcome]")).to_have_count(3)
    assert re.search(r"error \[image_\w+\]: corrupt\.png: .*\(2 of 3 files were submitted",
                     error.inner_text()), error.inner_text()
    outcome = {r.get_attribute("data-name"): r.get_attribute("data-outcome") for r in rows.all()}
    assert outcome == {"scene.png": "submitted", "scene2.png": "submitted", "corrupt.png": "failed"}
    assert "corrupt.png" in rows.nth(2).inner_text() and "[image_" in rows.nth(2).inner_text()
    links = {r.get_attribute("data-name"): r.get_by_role("link").get_attribute("href")
             for r in rows.all()[:2]}
    made = job_ids() - before
    assert {href.rsplit("/", 1)[1] for href in links.values()} == made and len(made) == 2
    with studio.client() as http:
        paths = {http.get(f"/v1/jobs/{i}").json()["target"]["path"] for i in made}
    assert paths == {"textures/scene.png", "textures/scene2.png"}
    assert page.url.rstrip("/") == studio.url
    shot(page, "new-job-several-files")

    expect(page.get_by_test_id("submit-job")).to_have_text("Upscale the other 1")
    page.get_by_test_id("submit-job").click()  # again: only the file without a job is sent
    expect(page.get_by_test_id("submit-job")).to_be_enabled()
    expect(error).to_contain_text("corrupt.png: ")
    assert job_ids() - before == made, "the files already submitted are not sent again"
    assert page.problems == []  # type: ignore[attr-defined]


def test_watch_folder_preset_lists_only_what_differs_from_the_defaults(studio, page) -> None:
    page.goto(studio.url + "/")
    page.get_by_label("Seed").fill("1234")
    page.get_by_label("Steps").fill("31")
    page.locator("summary", has_text="watch-folder preset").click()
    toml = page.locator("#preset-toml")
    expect(toml).to_be_visible()
    expect(toml).to_contain_text("seed = 1234")
    expect(toml).to_contain_text("steps = 31")
    keys = [line.split(" = ")[0] for line in toml.inner_text().splitlines() if line]
    assert sorted(keys) == ["seed", "steps"], f"defaults listed: {toml.inner_text()}"
    page.get_by_label("CFG scale").fill("7.5")
    expect(toml).to_contain_text("cfg_scale = 7.5")
    assert page.problems == []  # type: ignore[attr-defined]


def test_every_view_works_under_a_strict_csp(studio, page, shot) -> None:
    with studio.client() as http:
        resp = http.get("/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and resp.headers["x-frame-options"] == "DENY"
    assert "<script>" not in resp.text and " style=" not in resp.text
    page.add_init_script(RECORDER)
    page.goto(studio.url + "/system")
    page.locator("[data-check=store][data-ok=true]").wait_for()
    page.locator("[data-check=gpu][data-ok=true]").wait_for()
    shot(page, "system")
    for path in ("/", "/animate", "/jobs", "/loras", "/system"):
        page.goto(studio.url + path)
        page.wait_for_load_state("networkidle")
    assert page.problems == []  # type: ignore[attr-defined]


def test_system_page_shows_the_runner_running_a_job(studio, page, shot, tmp_path,
                                                   gpus) -> None:
    """The System page has `aat doctor`'s runners and artifacts rows; with a job running, the
    runners row says so and when its runner last heart-beat."""
    gpus.hold()  # the job stays running until the page has shown it
    job = submit(studio, png(tmp_path / "busy.png", 128, 128, seed=21).read_bytes())
    page.goto(studio.url + "/system")
    runners = page.locator("[data-check=runners][data-ok=true]")
    expect(runners).to_contain_text("2 job threads in this process (`aat up`)")
    expect(runners).to_contain_text(re.compile(r"1 job running, last heartbeat \d+\.\d s ago"))
    expect(page.locator("[data-check=artifacts][data-ok=true]")).to_contain_text(
        f"{studio.data_dir / 'artifacts'}: writable")
    shot(page, "system-running")
    with studio.client() as http:
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
        http.post(f"/v1/jobs/{job['id']}/cancel")
    expect(runners).not_to_contain_text("job running", timeout=30_000)
    assert page.problems == []  # type: ignore[attr-defined]


def test_login_with_the_token_and_refusal_without_it(tmp_path_factory, emulator, page,
                                                     shot) -> None:
    token = "studio-" + "k" * 32
    studio, proc = start_studio(tmp_path_factory.mktemp("locked"), emulator,
                                AAT_API_TOKEN=token)
    try:
        page.goto(studio.url + "/jobs")
        assert "/login?next=%2Fjobs" in page.url
        shot(page, "login")
        page.get_by_label("API token").fill("not-the-token")
        page.get_by_test_id("login-submit").click()
        assert page.get_by_test_id("error-message").inner_text().startswith("That is not")
        assert "/login" in page.url
        anon = page.context.request.get(studio.url + "/v1/jobs")
        assert anon.status == 401, "no session, no API"
        page.get_by_label("API token").fill(token)
        page.get_by_test_id("login-submit").click()
        page.wait_for_url(studio.url + "/jobs")
        cookie = next(c for c in page.context.cookies() if c["name"] == "aat_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == "", "scripts cannot read the session"
        with studio.client() as http:
            http.post("/v1/jobs", content=png(tmp_path_factory.mktemp("img") / "a.png")
                      .read_bytes(), params=SMALL, headers={"Content-Type": "image/png"})
        page.get_by_test_id("job-row").first.wait_for()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(re.compile(r".*/login$"))
        assert page.context.request.get(studio.url + "/v1/jobs").status == 401
        assert page.problems == []  # type: ignore[attr-defined]
    finally:
        proc.stop()


@pytest.fixture
def import_studio(tmp_path_factory, emulator) -> Iterator[tuple[Any, Any]]:
    """`aat up` whose CivitAI / Hugging Face are a loopback stand-in (plain http allowed for
    its two hosts only, by the explicit setting)."""
    from lora_standin import StandIn

    standin = StandIn(slow_bytes=4 * 1024 * 1024, slow_seconds=3.0).start()
    running, proc = start_studio(
        tmp_path_factory.mktemp("import-studio"), emulator,
        AAT_CIVITAI_BASE_URL=standin.site + "/civitai",
        AAT_HUGGINGFACE_BASE_URL=standin.site + "/hf",
        AAT_LORA_IMPORT_HTTP_HOSTS=json.dumps(standin.http_hosts))
    yield running, standin
    proc.stop()
    standin.stop()


def test_lora_import_by_url_shows_progress_then_the_row_and_its_trigger_words(
        import_studio, page, shot) -> None:
    studio, standin = import_studio
    page.goto(studio.url + "/loras")
    page.get_by_test_id("lora-import-url").fill(
        f"{standin.site}/civitai/models/10/slow-lora?modelVersionId=104")
    page.get_by_test_id("lora-import-start").click()
    item = page.locator("[data-testid=lora-import]").first
    expect(item).to_have_attribute("data-state", "downloading", timeout=20_000)
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-testid=lora-import-progress]');"
        " return p && p.value > 0 && p.value < 1; }", timeout=20_000)
    assert re.search(r"big_slow.safetensors — CivitAI version 104 \(v104, Illustrious\): "
                     r"[0-9.]+ [KM]B of 4.0 MB", item.inner_text())
    shot(page, "lora-import-progress")

    row = page.locator("[data-testid=lora-row][data-name='big_slow.safetensors']")
    row.wait_for(timeout=30_000)
    expect(item).to_have_attribute("data-state", "done")
    assert page.locator("[data-testid=lora-import-progress]").first.evaluate("p => p.value") == 1
    chip = row.locator("[data-testid=lora-trigger][data-word='slow words']")
    expect(chip).to_be_visible()
    shot(page, "lora-import-done")
    with studio.client() as http:
        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    assert listed["big_slow.safetensors"]["trigger_words"] == ["slow words"]

    # a click on a trigger word puts it into the next job's prompt, with its LoRA ticked
    chip.click()
    page.get_by_role("link", name="Open the new job.").click()
    prompt = page.locator("[data-param=prompt]")
    expect(prompt).to_have_value(re.compile(r"(^|, )slow words$"))
    lora = page.locator("#lora-picks [data-lora='big_slow.safetensors'] input[type=checkbox]")
    expect(lora).to_be_checked()

    # CivitAI wants a login for this one: the page says which setting to set
    page.goto(studio.url + "/loras")
    page.get_by_test_id("lora-import-url").fill(
        f"{standin.site}/civitai/api/download/models/103")
    page.get_by_test_id("lora-import-start").click()
    error = page.get_by_test_id("error-message")
    expect(error).to_contain_text("AAT_CIVITAI_TOKEN", timeout=20_000)
    expect(error).to_contain_text("import_unauthorized")
    expect(page.locator("[data-testid=lora-import][data-state=failed]")).to_have_count(1)
    assert page.locator("[data-testid=lora-row][data-name='private.safetensors']").count() == 0
    shot(page, "lora-import-refused")
    assert page.problems == []  # type: ignore[attr-defined]


def test_lora_import_cancel_button_stops_the_download_and_keeps_nothing(
        import_studio, emulator, page, shot) -> None:
    studio, standin = import_studio
    standin.hold_after = 64 * 1024  # the download cannot end before the click
    canceled_before = emulator.stats("upscale")["by_status"].get("CANCELLED", 0)
    page.goto(studio.url + "/loras")
    page.get_by_test_id("lora-import-url").fill(
        f"{standin.site}/civitai/models/10/slow-lora?modelVersionId=104")
    page.get_by_test_id("lora-import-name").fill("cancel_me.safetensors")
    page.get_by_test_id("lora-import-start").click()
    item = page.locator("[data-testid=lora-import]").first
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-testid=lora-import-progress]');"
        " return p && p.value > 0 && p.value < 1; }", timeout=20_000)
    expect(item).to_contain_text("CivitAI version 104 (v104, Illustrious)")
    shot(page, "lora-import-cancel")
    item.get_by_test_id("lora-import-cancel").click()
    expect(item).to_have_attribute("data-state", "canceled")
    expect(item).to_contain_text("canceled; nothing was kept")
    expect(item.get_by_test_id("lora-import-cancel")).to_have_count(0)
    deadline = time.monotonic() + 30
    while emulator.stats("upscale")["by_status"].get("CANCELLED", 0) == canceled_before:
        assert time.monotonic() < deadline, "the worker's job did not end"
        time.sleep(0.05)
    folder = emulator.test_lora_dir
    assert not (folder / "cancel_me.safetensors").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    while not standin.slow_downloads[-1].cut:  # the worker closed the connection
        assert time.monotonic() < deadline, "the worker kept downloading"
        time.sleep(0.05)
    page.reload()  # the import's end is kept by the service, not by the page
    expect(page.locator("[data-testid=lora-import]").first).to_have_attribute(
        "data-state", "canceled")
    assert page.locator("[data-testid=lora-row][data-name='cancel_me.safetensors']").count() == 0
    assert page.problems == []  # type: ignore[attr-defined]
