"""Atomic writes: readers see the old bytes or the new ones, and failures leave nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from service.core.atomic import TEMP_SUFFIX, atomic_write, temp_path_for


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
