"""The studio's Animate view in a real Chromium against `aat up`, frames from the emulated
animate worker: submit a sprite from the form, watch its frames reach done in the strip, see
the preview play at the animation's FPS, download the sheet and its files; a bad file or a
bad motion shows its error and creates no job. Screenshots go to build/screenshots/."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from studiotest_helpers import RECORDER, wait_status

from service.core.sheets import read_cells

pytestmark = pytest.mark.slow  # a real browser (chromium) against aat up

W, H = 24, 32  # the sprite's, and so each frame's, size


def sprite(path: Path) -> Path:
    """A small transparent sprite: outlined body and a face on a clear background."""
    a = np.zeros((H, W, 4), np.uint8)
    a[4:28, 6:18] = (40, 40, 60, 255)
    a[5:27, 7:17] = (200, 80, 40, 255)
    a[8:12, 9:15] = (250, 220, 180, 255)
    Image.fromarray(a, "RGBA").save(path)
    return path


def job_count(studio: Any) -> int:
    with studio.client() as http:
        return len(http.get("/v1/jobs", params={"limit": 500}).json()["items"])


def frame_index(page: Any) -> int:
    return int(page.get_by_test_id("animation-preview").get_attribute("data-frame"))


def test_animate_from_the_form_watch_the_frames_play_and_download(studio, page, shot,
                                                                  tmp_path) -> None:
    page.add_init_script(RECORDER)
    hero = sprite(tmp_path / "hero.png")
    page.goto(studio.url + "/animate")
    expect(page.get_by_role("link", name="Animate")).to_have_attribute("aria-current", "page")
    page.get_by_test_id("animate-file").set_input_files(str(hero))
    expect(page.locator("#picked")).to_contain_text("hero.png: 24×32 px sprite")
    motion = page.get_by_label("Motion", exact=True)
    assert motion.evaluate("s => [...s.options].map(o => o.value)") == [
        "idle", "walk", "run", "attack", "jump", "hit", "death", "custom"]
    motion.select_option("walk")
    page.get_by_label("Frames", exact=True).fill("8")
    page.get_by_label("Frames per second").fill("12")
    page.get_by_label("Target repo").fill("game")
    page.get_by_label("Path in repo").fill("sprites/hero.png")
    (studio.repo / "sprites").mkdir(exist_ok=True)
    (studio.repo / "sprites" / "hero.png").write_bytes(hero.read_bytes())
    shot(page, "animate-form")

    page.get_by_test_id("submit-animation").click()
    page.wait_for_url(re.compile(r".*/jobs/j_[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    strip = page.get_by_test_id("frame-strip")
    expect(strip.get_by_test_id("frame")).to_have_count(8)
    wait_status(page, "succeeded")
    expect(page.locator("[data-testid=frame][data-state=done]")).to_have_count(8)
    changes = page.evaluate("window.__changes")
    states = {c["value"] for c in changes if c["attr"] == "data-state"}
    assert "done" in states, f"frame states did not change live: {states}"
    statuses = [c["value"] for c in changes if c["attr"] == "data-status"]
    assert statuses[-1] == "succeeded"

    # the preview plays at the chosen FPS, nearest-neighbour, and pauses
    preview = page.get_by_test_id("animation-preview")
    expect(preview).to_have_attribute("data-playing", "true")
    assert page.locator("#preview-fps").input_value() == "12", "FPS from the sheet's metadata"
    assert preview.evaluate("c => getComputedStyle(c).imageRendering") == "pixelated"
    assert preview.evaluate("c => [c.width, c.height]") == [W, H]
    seen = {frame_index(page)}
    for _ in range(3):  # the frame index advances by itself (each change waited for)
        page.wait_for_function("seen => !seen.includes(Number(document.querySelector("
                               "'[data-testid=animation-preview]').dataset.frame))",
                               arg=sorted(seen))
        seen.add(frame_index(page))
    assert len(seen) >= 4
    page.get_by_role("button", name="Pause").click()
    expect(preview).to_have_attribute("data-playing", "false")
    paused = frame_index(page)
    page.wait_for_timeout(300)  # 3+ frames at 12 fps: a playing preview would have moved
    assert frame_index(page) == paused
    page.get_by_role("button", name="Play").click()
    expect(preview).to_have_attribute("data-playing", "true")

    # each cell of the strip is the sheet's frame, drawn pixel for pixel
    with studio.client() as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        result = http.get(f"/v1/jobs/{job_id}/result").content
        meta = http.get(f"/v1/jobs/{job_id}/files/hero_walk.json").text
    sheet = np.asarray(Image.open(io.BytesIO(result)).convert("RGBA"))
    assert sheet.shape == (H, W * 8, 4)
    _, rects = read_cells("hero_walk.json", meta, H)
    cell = page.locator("[data-testid=frame][data-index='2'] canvas")
    drawn = cell.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, "
                          "c.height).data)")
    x, y, w, h = rects[2]
    expected = sheet[y:y + h, x:x + w]
    got = np.array(drawn, np.uint8).reshape(h, w, 4)
    opaque = expected[..., 3] == 255
    assert opaque.any() and np.array_equal(got[opaque], expected[opaque])
    shot(page, "animate-job")

    # downloads: the sheet as the API serves it, and its three companion files
    with page.expect_download() as info:
        page.get_by_test_id("download-result").click()
    assert Path(info.value.path()).read_bytes() == result
    assert info.value.suggested_filename == "hero_walk.png"
    links = page.get_by_test_id("download-file")
    assert sorted(links.evaluate_all("ls => ls.map(l => l.dataset.name)")) == [
        "hero_walk.json", "hero_walk.tres", "hero_walk.webp"]
    with page.expect_download() as info:
        page.locator("[data-testid=download-file][data-name='hero_walk.tres']").click()
    assert "res://sprites/hero_walk.png" in Path(info.value.path()).read_text()
    assert job["output"]["delivered_path"] == "sprites/hero_walk.png"
    expect(page.locator("#job-facts")).to_contain_text(
        "game: sprites/hero_walk.png, sprites/hero_walk.json")
    assert page.problems == []  # type: ignore[attr-defined]


def test_bad_file_or_motion_shows_its_error_and_creates_no_job(studio, page, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    before = job_count(studio)
    page.goto(studio.url + "/animate")
    page.get_by_test_id("animate-file").set_input_files(str(broken))
    page.get_by_test_id("submit-animation").click()
    error = page.get_by_test_id("error-message")
    error.wait_for(state="visible")
    assert re.search(r"error \[image_\w+\]", error.inner_text()), error.inner_text()

    page.get_by_test_id("animate-file").set_input_files(str(sprite(tmp_path / "hero.png")))
    page.get_by_label("Motion", exact=True).select_option("custom")  # with no description
    page.get_by_test_id("submit-animation").click()
    expect(error).to_contain_text("error [motion_unknown]")
    expect(error).to_contain_text("motion_text")
    assert page.url.rstrip("/").endswith("/animate")
    assert job_count(studio) == before
    assert page.problems == []  # type: ignore[attr-defined]
