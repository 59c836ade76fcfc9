"""Watch-folder presets that make animate jobs, against the real service (``aat up`` with the
emulated animate worker) and the real watcher process: a sprite dropped into a folder whose
``.aat.toml`` says ``kind = "animate"`` becomes a spritesheet with its Aseprite ``.json``,
Godot ``.tres`` and ``.webp`` preview beside it (written by the service, or by the watcher
from a remote service); the sheet and the preview, images in a watched folder, are never
taken as new inputs."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from watch_helpers import drop
from watch_service import Service, WatcherProcess, wait_for_scans, wait_until

from service.core.sheets import read_cells
from watcher.ledger import Ledger
from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler

pytestmark = pytest.mark.slow  # a service, the emulator and watcher processes
W, H = 24, 32
PRESET = 'repo = "{repo}"\nkind = "animate"\n[animate]\nmotion = "walk"\nframes = 4\n'


def sprite(seed: int) -> bytes:
    a = np.zeros((H, W, 4), np.uint8)
    a[4:28, 6:18] = (40, 40, 60, 255)
    a[5:27, 7:17] = (200, 80 + seed, 40, 255)
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    home = tmp_path_factory.mktemp("watch-animate")
    game = home / "game"
    game.mkdir()
    emu = EmulatorServer({"anim": EndpointConfig(handler=resolve_handler("animate-echo"),
                                                 workers=4)})
    emu.start()
    svc = Service(home, {"game": game}, None)
    svc.env.update({"RUNPOD_API_KEY": emu.api_key, "AAT_RUNPOD_BASE_URL": emu.url,
                    "RUNPOD_ANIMATE_ENDPOINT_ID": "anim", "AAT_ANIMATE_EDIT_SIDE": "64"})
    svc.start()
    try:
        yield svc, game
    finally:
        svc.stop()
        emu.stop()


def _check_set(folder: Path, stem: str) -> None:
    sheet = np.asarray(Image.open(folder / f"{stem}.png").convert("RGBA"))
    assert sheet.shape == (H, 4 * W, 4)
    _, rects = read_cells(f"{stem}.json", (folder / f"{stem}.json").read_text(), H)
    assert rects == [(i * W, 0, W, H) for i in range(4)]
    assert "SpriteFrames" in (folder / f"{stem}.tres").read_text()
    with Image.open(folder / f"{stem}.webp") as preview:
        assert preview.n_frames == 4


def test_a_sprite_in_an_animate_folder_gets_its_sheet_beside_it(
        tmp_path: Path, service: tuple[Service, Path]) -> None:
    svc, game = service
    art = game / "chars"  # results land in the watched folder itself
    art.mkdir()
    (art / ".aat.toml").write_text('target_dir = "chars"\n' + PRESET.format(repo="game"))
    watcher = WatcherProcess(tmp_path, svc.url, [art], {"game": game}, stable_s=0.3,
                             scan_s=1.0).start()
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        drop(art / "hero.png", sprite(1))
        wait_until(lambda: ledger.counts()["done"] == 1, 40, "hero.png done")
        wait_for_scans(ledger, 3)  # the sheet and the .webp are seen, and never taken
        assert sorted(p.name for p in art.iterdir() if not p.name.startswith(".")) == [
            "hero.png", "hero_walk.json", "hero_walk.png", "hero_walk.tres", "hero_walk.webp"]
        _check_set(art, "hero_walk")
        assert 'res://chars/hero_walk.png' in (art / "hero_walk.tres").read_text()
        [job] = svc.jobs()
        assert job["kind"] == "animate" and job["animation"]["frames"] == 4
        assert job["target"]["path"] == "chars/hero.png"
        assert ledger.counts()["done"] == 1 and len(ledger.entries()) == 1
        assert ledger.get(art / "hero.png").output_path == "chars/hero_walk.png"
    finally:
        ledger.close()
        watcher.stop()


def test_a_remote_service_animation_is_written_by_the_watcher(
        tmp_path: Path, service: tuple[Service, Path]) -> None:
    svc, _game = service
    art, checkout = tmp_path / "art", tmp_path / "checkout"
    art.mkdir()
    (art / ".aat.toml").write_text(PRESET.format(repo="game") + 'fps = 8\n')
    watcher = WatcherProcess(tmp_path, svc.url, [art], {"game": checkout}, stable_s=0.3,
                             delivery="download").start()
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        drop(art / "npc" / "guard.png", sprite(2))
        wait_until(lambda: ledger.counts()["done"] == 1, 40, "guard.png done")
        [job] = [j for j in svc.jobs() if j["input"]["filename"] == "guard.png"]
        assert job["target"] is None  # the service wrote nothing; the watcher did
        folder = checkout / "npc"
        assert sorted(p.name for p in folder.iterdir()) == [
            "guard_walk.json", "guard_walk.png", "guard_walk.tres", "guard_walk.webp"]
        _check_set(folder, "guard_walk")
        sheet = (folder / "guard_walk.png").read_bytes()
        assert hashlib.sha256(sheet).hexdigest() == job["output"]["sha256"]
        assert json.loads((folder / "guard_walk.json").read_text())["meta"]["frameTags"][0][
            "name"] == "walk"
    finally:
        ledger.close()
        watcher.stop()
