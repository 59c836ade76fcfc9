"""Atomic writes: readers see the old bytes or the new ones, and failures leave nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from service.core.atomic import TEMP_SUFFIX, atomic_write, atomic_write_set, temp_path_for


def test_creates_and_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "sprite.png"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sprite.png"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o600 == 0o600


def test_temp_name_is_hidden_next_to_the_target(tmp_path: Path) -> None:
    tmp = temp_path_for(tmp_path / "hero.png")
    assert tmp.parent == tmp_path and tmp.name.startswith(".hero.png.")
    assert tmp.name.endswith(TEMP_SUFFIX) and tmp != temp_path_for(tmp_path / "hero.png")


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "hero.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hero.png"]


def test_a_reader_holding_the_old_file_keeps_reading_it(tmp_path: Path) -> None:
    target = tmp_path / "tex.png"
    atomic_write(target, b"A" * 1000)
    with target.open("rb") as reader:
        atomic_write(target, b"B" * 10)
        assert reader.read() == b"A" * 1000  # the old inode is intact
    assert target.read_bytes() == b"B" * 10


def test_missing_folder_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "x.png", b"data")
    assert os.listdir(tmp_path) == []


def test_a_set_is_staged_whole_or_not_at_all(tmp_path: Path) -> None:
    sheet, meta = tmp_path / "hero_walk.png", tmp_path / "hero_walk.json"
    sheet.write_bytes(b"old sheet")
    meta.write_bytes(b"old meta")
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file, not a folder")
    with pytest.raises(OSError):  # the third file cannot be staged: nothing is swapped
        atomic_write_set([(sheet, b"new sheet"), (meta, b"new meta"),
                          (blocked / "hero_walk.tres", b"tres")])
    assert (sheet.read_bytes(), meta.read_bytes()) == (b"old sheet", b"old meta")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "hero_walk.json",
                                                          "hero_walk.png"]
    atomic_write_set([(sheet, b"new sheet"), (meta, b"new meta")])
    assert (sheet.read_bytes(), meta.read_bytes()) == (b"new sheet", b"new meta")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "hero_walk.json",
                                                          "hero_walk.png"]
