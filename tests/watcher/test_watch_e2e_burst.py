"""1,000 files dropped in bursts into nested folders, the watcher SIGKILLed and restarted in the
middle: every file becomes exactly one job and every result lands in the mirrored place.

Real processes: ``aat up`` (API + embedded executor) with its GPU backend on the RunPod
emulator, and ``python -m watcher``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image
from watch_helpers import drop, png_bytes
from watch_service import Service, WatcherProcess, start_emulator, wait_until

from watcher.ledger import Ledger

BURSTS = 10
PER_BURST = 100


def _path(art: Path, n: int) -> Path:
    return art / f"zone{n % 5}" / f"set{(n // 5) % 4}" / f"tex_{n:04d}.png"


def _with_job(ledger: Ledger) -> int:
    counts = ledger.counts()
    return counts["submitted"] + counts["done"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_thousand_files_with_a_killed_watcher_are_each_processed_once(tmp_path: Path) -> None:
    art, game = tmp_path / "art", tmp_path / "game"
    art.mkdir()
    game.mkdir()
    # asset_type: 8x8 noise would pass for pixel art, which never reaches the GPU endpoint
    (art / ".aat.toml").write_text('repo = "game"\ntarget_dir = "textures"\nscale = 2\n'
                                   'asset_type = "texture"\n')
    emu = start_emulator(workers=8)
    service = Service(tmp_path, {"game": game}, emu, job_threads=8).start()
    watcher = WatcherProcess(tmp_path, service.url, [art], {"game": game}, stable_s=0.3)
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        watcher.start()
        for burst in range(BURSTS):
            if burst == 4:  # kill mid-flight: some files done, some submitted, some settling
                wait_until(lambda: _with_job(ledger) >= 150, 60, "150 files submitted")
                watcher.kill()
                assert _with_job(ledger) < 4 * PER_BURST  # work was left unfinished
            if burst == 7:
                watcher.start()  # restarted: the start-up scan finds what arrived meanwhile
            for i in range(PER_BURST):
                n = burst * PER_BURST + i
                drop(_path(art, n), png_bytes(n))
            time.sleep(0.15)

        total = BURSTS * PER_BURST
        # a bound for a loaded machine: 1,000 jobs took 87-162 s on quiet ones
        wait_until(lambda: ledger.counts()["done"] == total, 360,
                   f"{total} files done (now {ledger.counts()}; log {watcher.log})", 0.5)
        assert ledger.counts() == {"pending": 0, "submitted": 0, "done": total, "failed": 0}

        jobs = service.jobs()
        names = sorted(j["input"]["filename"] for j in jobs)
        assert len(jobs) == total  # exactly once: no job lost, none submitted twice
        assert names == sorted(f"tex_{n:04d}.png" for n in range(total))
        assert all(j["status"] == "succeeded" for j in jobs)
        # one tile per file: the GPU endpoint ran each file once, none again after the kill
        assert emu.stats("upscale")["submitted"] == total
        assert sum(j["cost"]["runpod_jobs"] for j in jobs) == total
        for n in range(total):
            rel = _path(art, n).relative_to(art)
            out = game / "textures" / rel.parent / f"tex_{n:04d}_x2.png"
            assert out.is_file(), f"missing result {out}"
            if n % 97 == 0:
                with Image.open(io.BytesIO(out.read_bytes())) as img:
                    assert img.size == (16, 16)
        assert watcher.terminate() == 0
    finally:
        ledger.close()
        watcher.stop()
        service.stop()
        emu.stop()
