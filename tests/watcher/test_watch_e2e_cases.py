"""How artists really save files, against the real service (``aat up`` + emulated RunPod) and
the real watcher process: slow writers, saves by rename, overwrites, deletes, changes after
success, corrupt images, a service outage, results written by the watcher itself, no loops.

One service and one watcher serve the whole module; each test works in its own folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from watch_helpers import drop, png_bytes
from watch_service import Service, WatcherProcess, start_emulator, wait_for_scans, wait_until

from watcher.ledger import Ledger

pytestmark = pytest.mark.slow  # a service, the emulator and watcher processes per module

TERMINAL = ("succeeded", "failed", "canceled")


@dataclass
class Rig:
    art: Path
    game: Path
    inplace: Path
    service: Service
    watcher: WatcherProcess
    ledger: Ledger

    def jobs_for(self, name: str) -> list[dict]:
        return [j for j in self.service.jobs() if j["input"]["filename"] == name]

    def state(self, path: Path) -> str | None:
        entry = self.ledger.get(path)
        return entry.state if entry else None

    def done(self, path: Path, timeout: float = 20) -> None:
        wait_until(lambda: self.state(path) == "done", timeout,
                   f"{path.name} done (state {self.state(path)})")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("watch")
    art, game = home / "art", home / "game"
    art.mkdir()
    game.mkdir()
    (art / ".aat.toml").write_text('repo = "game"\nscale = 2\n')
    inplace = home / "inplace"  # a repo that is also a watched folder (see the loop test)
    inplace.mkdir()
    emu = start_emulator(workers=2)
    service = Service(home, {"game": game, "inplace": inplace}, emu).start()
    watcher = WatcherProcess(home, service.url, [art], {"game": game}, stable_s=0.6,
                             scan_s=2.0).start()
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        yield Rig(art, game, inplace, service, watcher, ledger)
    finally:
        ledger.close()
        watcher.stop()
        service.stop()
        emu.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _size(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        return img.size


def test_slow_writer_gives_one_job_after_the_last_chunk(rig: Rig) -> None:
    src = rig.art / "slow" / "cliff.png"
    src.parent.mkdir()
    data = png_bytes(1, size=48)
    step = len(data) // 5 + 1
    with src.open("wb") as fh:
        # five chunks over ~1.2 s, longer than the stable window (0.6 s); the pauses leave
        # 0.35 s for a loaded machine to oversleep before a half-written file looks stable
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            time.sleep(0.25)
    rig.done(src)
    jobs = rig.jobs_for("cliff.png")
    assert len(jobs) == 1
    assert jobs[0]["input"]["sha256"] == _sha(data)  # the whole file, not a prefix
    assert jobs[0]["output"]["backend"] == "runpod"  # refined on the emulated endpoint
    assert _size(rig.game / "slow" / "cliff_x2.png") == (96, 96)


def test_a_gif_is_taken_like_rest_takes_it(rig: Rig) -> None:
    src = rig.art / "anim" / "spin.gif"
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(21, size=10))).convert("P").save(buf, format="GIF")
    drop(src, buf.getvalue())
    rig.done(src)
    [job] = rig.jobs_for("spin.gif")
    assert job["input"]["format"] == "GIF"
    out = rig.game / "anim" / "spin_x2.png"  # GIF is read, the result is PNG
    assert _size(out) == (20, 20) and rig.ledger.get(src).output_path == "anim/spin_x2.png"


def test_save_by_rename_overwrite_change_and_delete(rig: Rig) -> None:
    src = rig.art / "props" / "crate.png"
    out = rig.game / "props" / "crate_x2.png"
    drop(src, png_bytes(2))  # temp name + rename: only a `moved` event
    rig.done(src)
    first = out.read_bytes()

    src.write_bytes(png_bytes(3, size=12))  # overwrite in place, after success
    wait_until(lambda: len(rig.jobs_for("crate.png")) == 2, 20, "a second job for crate.png")
    rig.done(src)
    wait_until(lambda: out.read_bytes() != first, 10, "the new result delivered")
    assert _size(out) == (24, 24)

    same = src.read_bytes()
    src.write_bytes(same)  # the same bytes saved again: new mtime, same content
    wait_for_scans(rig.ledger, 2)  # two full scans (2 s apart): longer than the stable window
    assert len(rig.jobs_for("crate.png")) == 2

    src.unlink()
    wait_until(lambda: not rig.ledger.get(src).present, 10, "the delete noticed")
    assert out.is_file()  # a deleted source leaves its delivered result alone
    assert len(rig.jobs_for("crate.png")) == 2


def test_a_file_changed_while_its_job_runs_ends_with_the_newest_result(rig: Rig) -> None:
    src = rig.art / "busy" / "barrel.png"
    drop(src, png_bytes(8, size=40))
    wait_until(lambda: rig.state(src) in ("submitted", "done"), 15, "barrel.png submitted")
    drop(src, png_bytes(9, size=20))  # a new version while the first may still run
    wait_until(lambda: len(rig.jobs_for("barrel.png")) == 2, 20, "a job for the new version")
    rig.done(src)
    jobs = sorted(rig.jobs_for("barrel.png"), key=lambda j: j["created_at"])
    out = rig.game / "busy" / "barrel_x2.png"
    wait_until(lambda: out.is_file() and _size(out) == (40, 40), 10, "the newest result")
    # the superseded job, if it still ran, must not land afterwards: wait until it has ended
    # (the service delivers; an ended job writes nothing more) and one more full scan
    wait_until(lambda: rig.service.job(jobs[0]["id"])["status"] in TERMINAL, 30,
               "the superseded job ended")
    wait_for_scans(rig.ledger, 1)
    assert _sha(out.read_bytes()) == rig.service.job(jobs[1]["id"])["output"]["sha256"]


def test_corrupt_image_fails_once_with_the_reason_and_is_retried_on_request(rig: Rig) -> None:
    bad = rig.art / "broken" / "moss.png"
    bad.parent.mkdir()
    good = png_bytes(4)
    bad.write_bytes(good[: len(good) // 2])  # a copier that died half-way
    wait_until(lambda: rig.state(bad) == "failed", 15, "moss.png failed")
    status = rig.watcher.command("--status")
    assert status.returncode == 0
    assert "moss.png" in status.stdout and "image_corrupt" in status.stdout
    wait_for_scans(rig.ledger, 2)  # two more full scans: never retried in a loop
    entry = rig.ledger.get(bad)
    assert entry is not None and entry.state == "failed" and entry.job_id is None
    assert rig.jobs_for("moss.png") == []

    again = rig.watcher.command("--retry", str(bad))  # on request: the service decides
    assert again.returncode == 0 and "1 file" in again.stdout
    wait_until(lambda: rig.state(bad) == "failed" and rig.ledger.get(bad).attempts == 0
               and rig.ledger.get(bad).error_code is not None, 15, "the retry answered")
    assert rig.watcher.command("--retry", str(rig.art / "nothing.png")).returncode == 2

    bad.write_bytes(good)  # fixed by the artist: a new version, a new job
    rig.done(bad)
    assert len(rig.jobs_for("moss.png")) == 1


def test_suffix_results_beside_the_sources_are_never_taken_as_inputs(
        tmp_path: Path, rig: Rig) -> None:
    # A second watcher whose repo *is* the watched folder: results land beside the sources.
    art = rig.inplace
    (art / ".aat.toml").write_text('repo = "inplace"\nscale = 2\n')
    watcher = WatcherProcess(tmp_path, rig.service.url, [art], {"inplace": art},
                             stable_s=0.3, scan_s=1.0).start()
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        for i in range(3):
            drop(art / f"leaf_{i}.png", png_bytes(50 + i))
        wait_until(lambda: ledger.counts()["done"] == 3, 20, "3 sources done")
        wait_for_scans(ledger, 3)  # several scans with the results in the watched folder
        names = sorted(p.name for p in art.glob("*.png"))
        assert names == ["leaf_0.png", "leaf_0_x2.png", "leaf_1.png", "leaf_1_x2.png",
                         "leaf_2.png", "leaf_2_x2.png"]
        assert ledger.counts()["done"] == 3 and len(ledger.entries()) == 3
    finally:
        ledger.close()
        watcher.stop()


def test_remote_service_results_are_downloaded_and_written_by_the_watcher(
        tmp_path: Path, rig: Rig) -> None:
    art, local_repo = tmp_path / "remote-art", tmp_path / "checkout"
    art.mkdir()
    (art / ".aat.toml").write_text('repo = "game"\nnaming = "mirror"\nmirror_dir = "hd"\n')
    watcher = WatcherProcess(tmp_path, rig.service.url, [art], {"game": local_repo},
                             stable_s=0.3, delivery="download").start("--polling")
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        drop(art / "walls" / "brick.png", png_bytes(60))
        wait_until(lambda: ledger.counts()["done"] == 1, 20, "brick.png done")
        out = local_repo / "hd" / "walls" / "brick.png"
        job = rig.jobs_for("brick.png")[0]
        assert job["target"] is None  # the service wrote nothing; the watcher did
        assert _sha(out.read_bytes()) == job["output"]["sha256"]
        assert not (rig.game / "hd").exists()
        assert [p.name for p in out.parent.iterdir()] == ["brick.png"]  # no temp files left
        assert "observer: polling, delivery: download" in watcher.log.read_text()

        first = out.read_bytes()
        drop(art / "walls" / "brick.png", png_bytes(62))  # a new version: our result replaced
        wait_until(lambda: out.read_bytes() != first and ledger.counts()["done"] == 1, 20,
                   "brick.png's new result written")
        [newer] = [j for j in rig.jobs_for("brick.png")
                   if j["input"]["sha256"] == _sha(png_bytes(62))]
        assert _sha(out.read_bytes()) == newer["output"]["sha256"]

        handmade = local_repo / "hd" / "walls" / "stone.png"  # the artist's own HD version
        handmade.write_bytes(b"painted by hand")
        drop(art / "walls" / "stone.png", png_bytes(61))
        wait_until(lambda: ledger.counts()["failed"] == 1, 20, "stone.png refused")
        entry = ledger.get(art / "walls" / "stone.png")
        assert entry is not None and entry.error_code == "delivery_conflict"
        assert "--retry" in (entry.error_message or "")
        assert handmade.read_bytes() == b"painted by hand"
    finally:
        ledger.close()
        watcher.stop()


def test_service_down_for_a_while_loses_nothing(rig: Rig) -> None:
    rig.service.stop()
    files = [rig.art / "outage" / f"rock_{i}.png" for i in range(20)]
    for i, path in enumerate(files):
        drop(path, png_bytes(100 + i))
    wait_until(lambda: all(rig.state(p) == "pending" for p in files), 15, "20 files pending")
    wait_until(lambda: any((e := rig.ledger.get(p)) and e.error_code for p in files), 15,
               "the outage recorded")
    status = rig.watcher.command("--status")
    assert "service_unavailable" in status.stdout
    rig.service.start()  # same port, same database
    for path in files:
        rig.done(path, timeout=40)
    jobs = [j for j in rig.service.jobs() if j["input"]["filename"].startswith("rock_")]
    assert len(jobs) == 20
    for i in range(20):
        assert (rig.game / "outage" / f"rock_{i}_x2.png").is_file()


def test_sigterm_stops_the_watcher_gracefully(rig: Rig) -> None:
    assert rig.watcher.terminate() == 0
    assert "watcher stopped" in rig.watcher.log.read_text()


def test_aat_up_runs_the_watcher_when_folders_are_configured(tmp_path: Path) -> None:
    art, game = tmp_path / "inbox", tmp_path / "repo"
    art.mkdir()
    game.mkdir()
    (art / ".aat.toml").write_text('repo = "game"\ntarget_dir = "tex"\n')
    service = Service(tmp_path, {"game": game}, None)
    service.env.update({"AAT_WATCH_FOLDERS": json.dumps([str(art)]),
                        "AAT_WATCH_STABLE_S": "0.3"})
    service.start()
    try:
        drop(art / "ui" / "button.png", png_bytes(70))
        out = game / "tex" / "ui" / "button_x2.png"
        wait_until(out.is_file, 20, f"{out} written by aat up's watcher")
        assert _size(out) == (16, 16)
        assert len(service.jobs()) == 1
    finally:
        service.stop()


def test_a_wrong_token_keeps_files_waiting_with_the_reason(tmp_path: Path) -> None:
    art, game = tmp_path / "art", tmp_path / "game"
    art.mkdir()
    game.mkdir()
    (art / ".aat.toml").write_text('repo = "game"\n')
    service = Service(tmp_path, {"game": game}, None)
    service.env["AAT_API_TOKEN"] = "s3cret-token-for-tests"
    service.start()
    watcher = WatcherProcess(tmp_path, service.url, [art], {"game": game}, stable_s=0.3)
    watcher.env["AAT_API_TOKEN"] = "wrong-token"
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        watcher.start()
        src = drop(art / "gem.png", png_bytes(80))
        wait_until(lambda: (e := ledger.get(src)) is not None and e.error_code == "unauthorized",
                   20, "the 401 recorded")
        status = watcher.command("--status").stdout
        assert "unauthorized" in status and "wrong-token" not in status
        assert "wrong-token" not in watcher.log.read_text()  # secrets never logged
        watcher.terminate()
        watcher.env["AAT_API_TOKEN"] = "s3cret-token-for-tests"
        watcher.start()
        wait_until(lambda: ledger.counts()["done"] == 1, 20, "gem.png done with the right token")
        assert (game / "gem_x2.png").is_file()
    finally:
        ledger.close()
        watcher.stop()
        service.stop()
