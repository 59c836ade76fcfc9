"""The daemon's loop driven tick by tick on real files and a real ledger (no service: the
port is closed, so submissions wait as they would during an outage)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from watch_helpers import drop, png_bytes

from service.core.errors import ConfigError
from service.settings import load_settings
from watcher.daemon import Watcher


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Watcher]:
    art = tmp_path / "art"
    art.mkdir()
    settings = load_settings(data_dir=tmp_path / "data", watch_folders=[art],
                             watch_stable_s=0.5, watch_scan_interval_s=1000,
                             server_url=f"http://127.0.0.1:{_closed_port()}")
    w = Watcher(settings)
    yield w
    w.close()


def test_a_file_is_taken_while_event_hints_keep_arriving(watcher: Watcher) -> None:
    art = watcher.roots[0]
    watcher.tick(1000.0)  # start-up full scan; the next one is 1000 s away
    src = drop(art / "props" / "crate.png", png_bytes(1))
    for now in (1000.1, 1000.4, 1000.7, 1001.0):  # an event hint on every tick
        watcher.hints.add(src.parent)
        watcher.tick(now)
    entry = watcher.ledger.get(src)
    assert entry is not None and entry.state == "pending"
    assert entry.error_code == "service_unavailable"  # the service is down: it waits
    assert watcher.ledger.counts()["pending"] == 1


def test_unchanged_files_are_not_taken_again_after_a_restart(watcher: Watcher,
                                                              tmp_path: Path) -> None:
    art = watcher.roots[0]
    src = drop(art / "a.png", png_bytes(2))
    watcher.tick(1000.0)
    watcher.tick(1000.3)
    watcher.tick(1000.6)
    first = watcher.ledger.get(src)
    assert first is not None
    watcher.close()
    again = Watcher(watcher.settings)  # as after a restart: same ledger
    try:
        again.tick(2000.0)
        assert len(again.stability) == 0  # same size and mtime: not even a candidate
        src.write_bytes(src.read_bytes())  # re-saved, same bytes
        again.hints.add(art)
        for now in (2000.1, 2000.4, 2000.7):
            again.hints.add(art)
            again.tick(now)
        entry = again.ledger.get(src)
        assert entry is not None and entry.version_key == first.version_key
        assert entry.mtime_ns != first.mtime_ns  # the stat moved on, the version did not
    finally:
        again.close()
        watcher.ledger = again.ledger  # the fixture closes this one again harmlessly


def test_the_periodic_full_scan_finds_files_whose_events_were_lost(watcher: Watcher) -> None:
    art = watcher.roots[0]
    watcher.tick(1000.0)
    src = drop(art / "deep" / "er" / "lost.png", png_bytes(3))  # no hint: the event was dropped
    for now in (1000.5, 1500.0):
        watcher.tick(now)
    assert watcher.ledger.get(src) is None  # nothing told us yet
    for now in (2000.0, 2000.3, 2000.6):  # the full scan is due at 2000
        watcher.tick(now)
    entry = watcher.ledger.get(src)
    assert entry is not None and entry.state == "pending"


def test_editing_a_preset_makes_its_files_a_new_version(watcher: Watcher) -> None:
    art = watcher.roots[0]
    src = drop(art / "a.png", png_bytes(4))
    for now in (1000.0, 1000.3, 1000.6):
        watcher.tick(now)
    before = watcher.ledger.get(src)
    assert before is not None
    (art / ".aat.toml").write_text("scale = 4\n")
    for now in (1001.0, 1001.3, 1001.6, 1001.9):
        watcher.hints.add(art)
        watcher.tick(now)
    after = watcher.ledger.get(src)
    assert after is not None and after.version_key != before.version_key
    (art / ".aat.toml").write_text("scale = [\n")  # broken: the folder's files fail with why
    for now in (1002.3, 1002.6, 1002.9, 1003.2):
        watcher.hints.add(art)
        watcher.tick(now)
    broken = watcher.ledger.get(src)
    assert broken is not None and broken.state == "failed"
    assert broken.error_code == "invalid_params" and ".aat.toml" in (broken.error_message or "")


def test_missing_or_unset_watch_folders_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AAT_WATCH_FOLDERS"):
        Watcher(load_settings(data_dir=tmp_path, watch_folders=[]))
    with pytest.raises(ConfigError, match="does not exist"):
        Watcher(load_settings(data_dir=tmp_path, watch_folders=[tmp_path / "nope"]))


def test_aat_watch_cli_explains_missing_folders_and_shows_status(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AAT_")}
    env.update({"AAT_DATA_DIR": str(tmp_path), "AAT_CONFIG": str(tmp_path / "none.toml")})
    aat = str(Path(sys.executable).parent / "aat")
    run = subprocess.run([aat, "watch"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 3  # setup: service.cli.errors.SETUP
    assert "AAT_WATCH_FOLDERS" in run.stderr
    status = subprocess.run([aat, "watch", "--status"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0
    assert status.stdout.splitlines()[0] == (
        "pending: 0  submitted: 0  done: 0  failed: 0  full scans: 0 (last never)")


def test_a_dead_observer_is_restarted_and_followed_by_a_full_scan(watcher: Watcher) -> None:
    import threading
    import time

    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30  # a bound, not a wait: a loaded machine is slow
        while watcher.observer is None or not watcher.observer.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = watcher.observer
        first.stop()  # as when a polling emitter dies on a vanished network share
        first.join()
        src = drop(watcher.roots[0] / "after.png", png_bytes(9))
        while watcher.ledger.get(src) is None:
            assert time.monotonic() < deadline, "file not taken after the observer died"
            time.sleep(0.05)
        assert watcher.observer_restarts == 1
        assert watcher.observer is not first and watcher.observer.is_alive()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_symlinked_file_is_refused_as_path_escape_and_listed_in_status(
        watcher: Watcher, tmp_path: Path) -> None:
    """Anyone who can write into a shared inbox must not be able to feed it any image the
    watcher's host can read: a link to a file is never followed, and says so."""
    from watcher.commands import status_lines

    art = watcher.roots[0]
    secret = drop(tmp_path / "private" / "concept.png", png_bytes(7))  # outside the folder
    link = art / "concept.png"
    link.symlink_to(secret)
    real = drop(art / "ok.png", png_bytes(8))
    for now in (1000.0, 1000.3, 1000.6, 1000.9):
        watcher.tick(now)
    entry = watcher.ledger.get(link)
    assert entry is not None and entry.state == "failed"
    assert entry.error_code == "path_escape"
    assert "symbolic link" in (entry.error_message or "")
    assert entry.sha256 != hashlib.sha256(secret.read_bytes()).hexdigest()  # never read
    ok = watcher.ledger.get(real)
    assert ok is not None and ok.state == "pending"  # the real file next to it goes on
    lines = status_lines(watcher.settings)
    assert any(line.startswith("failed") and str(link) in line and "[path_escape]" in line
               for line in lines), lines
    for now in (1001.2, 1001.5):  # the refusal is recorded once, not re-logged every scan
        watcher.full_scan(now)
        watcher.tick(now)
    again = watcher.ledger.get(link)
    assert again is not None and again.updated_at == entry.updated_at


def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(tmp_path: Path) -> None:
    from watcher.scan import LinkRefused, read_regular_file

    target = drop(tmp_path / "outside.png", png_bytes(3))
    path = tmp_path / "in.png"
    path.symlink_to(target)
    with pytest.raises(LinkRefused, match="symbolic link") as err:
        read_regular_file(path, 1 << 20)
    assert err.value.code == "path_escape"
    assert read_regular_file(target, 1 << 20) == target.read_bytes()


def test_a_file_over_the_upload_limit_is_refused_unread_and_left_in_place(
        tmp_path: Path) -> None:
    """A file larger than the service takes is never read into memory: it is recorded as
    failed with the service's own payload_too_large sentence, listed by `aat watch --status`,
    and stays where it is; the files next to it go on."""
    from service.core.errors import upload_too_large
    from watcher.commands import status_lines

    art = tmp_path / "art"
    limit = 4096
    settings = load_settings(data_dir=tmp_path / "data", watch_folders=[art],
                             watch_stable_s=0.5, watch_scan_interval_s=1000,
                             max_upload_bytes=limit,
                             server_url=f"http://127.0.0.1:{_closed_port()}")
    huge = drop(art / "huge.png", b"")
    with huge.open("r+b") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: large on paper, nothing on the disk
    ok = drop(art / "ok.png", png_bytes(8))
    watcher = Watcher(settings)
    try:
        for now in (1000.0, 1000.3, 1000.6, 1000.9):
            watcher.tick(now)
        entry = watcher.ledger.get(huge)
        assert entry is not None and entry.state == "failed"
        assert entry.error_code == "payload_too_large"
        assert upload_too_large(limit) in (entry.error_message or ""), entry.error_message
        assert huge.stat().st_size == 64 * 1024 * 1024, "left in place, untouched"
        fine = watcher.ledger.get(ok)
        assert fine is not None and fine.state == "pending"
        assert any(line.startswith("failed") and str(huge) in line
                   and "[payload_too_large]" in line for line in status_lines(settings))
        for now in (1001.2, 1001.5):  # recorded once, not again every scan
            watcher.full_scan(now)
            watcher.tick(now)
        again = watcher.ledger.get(huge)
        assert again is not None and again.updated_at == entry.updated_at
    finally:
        watcher.close()


def test_reading_stops_at_the_limit(tmp_path: Path) -> None:
    from watcher.scan import TooLarge, read_regular_file

    exact = drop(tmp_path / "exact.png", b"x" * 2048)
    assert read_regular_file(exact, 2048) == b"x" * 2048
    with pytest.raises(TooLarge) as err:
        read_regular_file(exact, 2047)
    assert err.value.code == "payload_too_large" and "AAT_MAX_UPLOAD_BYTES" in str(err.value)
