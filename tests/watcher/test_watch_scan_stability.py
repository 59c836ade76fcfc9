"""Scanning and the stability gate, on real files."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from watch_helpers import drop, png_bytes

from service.core.errors import ImageError
from service.core.imaging import ImageLimits
from watcher.scan import FileStat, is_candidate_name, scan_tree, stat_file
from watcher.stability import StabilityTracker, check_image


@pytest.mark.parametrize(
    ("name", "taken"),
    [("rock.png", True), ("Rock.JPG", True), ("a.webp", True), ("t.tga", True),
     ("spin.gif", True), ("OLD.BMP", True), ("scan.tiff", False), ("rock.psd", False),
     ("rock.png.part", False), ("rock.png~", False), ("rock.tmp", False), (".rock.png", False),
     ("~$rock.png", False), ("Thumbs.db", False), ("notes.txt", False), ("x.png.crdownload", False),
     (".aat.toml", False)],
)
def test_candidate_names(name: str, taken: bool) -> None:
    assert is_candidate_name(name) is taken


def test_the_watcher_takes_every_file_the_service_takes_and_no_other() -> None:
    from service.core import formats

    for suffix in formats.INPUT_SUFFIXES:
        assert is_candidate_name(f"art{suffix}") and is_candidate_name(f"ART{suffix.upper()}")
    assert not any(is_candidate_name(f"x{s}") for s in (".tif", ".psd", ".exr", ".ico"))


def test_scan_finds_nested_images_and_skips_hidden_temp_and_excluded(tmp_path: Path) -> None:
    drop(tmp_path / "a.png", png_bytes(1))
    drop(tmp_path / "props" / "deep" / "b.png", png_bytes(2))
    (tmp_path / "props" / "c.png.part").write_bytes(b"half")
    (tmp_path / ".hidden" / "d.png").parent.mkdir()
    (tmp_path / ".hidden" / "d.png").write_bytes(png_bytes(3))
    drop(tmp_path / "out" / "e.png", png_bytes(4))
    found = scan_tree(tmp_path, excluded=(tmp_path / "out",))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == ["a.png", "props/deep/b.png"]
    sig = found[tmp_path / "a.png"]
    assert sig.size == (tmp_path / "a.png").stat().st_size
    assert scan_tree(tmp_path / "missing") == {}


def test_tracker_needs_the_window_and_two_checks() -> None:
    tr = StabilityTracker(window_s=1.0)
    p = Path("/x/a.png")
    assert tr.observe(p, FileStat(10, 1), now=0.0) is False
    assert tr.observe(p, FileStat(10, 1), now=0.5) is False  # too soon
    assert tr.observe(p, FileStat(20, 2), now=1.2) is False  # grew: the clock restarts
    assert tr.observe(p, FileStat(20, 2), now=2.0) is False
    assert tr.observe(p, FileStat(20, 2), now=2.3) is True
    assert p not in tr  # taken: no longer tracked
    assert tr.observe(p, FileStat(0, 3), now=3.0) is False
    assert tr.observe(p, FileStat(0, 3), now=9.0) is False  # empty files are never stable
    tr.observe(p, None, now=9.5)
    assert len(tr) == 0


def test_slow_writer_is_taken_once_after_the_last_chunk(tmp_path: Path) -> None:
    data = png_bytes(7, size=64)
    target = tmp_path / "slow.png"
    chunks = [data[i:i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    done_at: list[float] = []

    def writer() -> None:
        with target.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                done_at[:] = [time.monotonic()]
                time.sleep(0.25)  # 0.35 s short of the window: room to oversleep under load

    tracker = StabilityTracker(window_s=0.6)
    thread = threading.Thread(target=writer)
    thread.start()
    taken: list[float] = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and not taken:
        now = time.monotonic()
        if tracker.observe(target, stat_file(target), now):
            taken.append(now)
        time.sleep(0.05)
    thread.join()
    assert len(taken) == 1
    assert taken[0] >= done_at[0] + 0.6  # not before the last write stood still for 0.6 s
    assert check_image(target.read_bytes(), "slow.png") == (64, 64)


def test_check_image_rejects_truncated_and_garbage() -> None:
    good = png_bytes(3, size=32)
    assert check_image(good, "ok.png") == (32, 32)
    with pytest.raises(ImageError) as exc:
        check_image(good[: len(good) // 2], "half.png")
    assert exc.value.code == "image_corrupt" and "half.png" in exc.value.message
    with pytest.raises(ImageError) as exc:
        check_image(b"definitely not an image", "junk.png")
    assert exc.value.code == "image_corrupt"
    with pytest.raises(ImageError) as exc:
        check_image(b"", "empty.png")
    assert exc.value.code == "image_empty"


def _flat_png(side: int) -> bytes:
    """A real, complete greyscale PNG of ``side`` x ``side`` black pixels: a few hundred
    kilobytes that decode to ``side``² bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    packer, row = zlib.compressobj(9), b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0,
                                                              0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_decompression_bomb_in_the_inbox_is_refused_before_it_is_decoded() -> None:
    """13000 x 13000 pixels in a few hundred kB: under Pillow's own limit, so only the
    service's input limits stop the watcher from decoding 169 MB to check it."""
    bomb = _flat_png(13_000)
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageError) as exc:
        check_image(bomb, "moss.png")
    assert exc.value.code == "image_bomb" and "moss.png" in exc.value.message
    with pytest.raises(ImageError) as exc:
        check_image(_flat_png(100), "tile.png", ImageLimits(max_input_pixels=50 * 50))
    assert exc.value.code in ("image_bomb", "image_too_large")
