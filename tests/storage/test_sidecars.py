"""Engine-aware write-back through ``deliver``: Unity ``.meta`` kept and scaled, a new ``.meta``
for a new file, Godot ``.import`` untouched, sheet JSON beside the result, Git LFS with the real
git-lfs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.core.jobs import TargetSpec
from service.core.unity_meta import guid_of, sprite_rects
from service.storage.game_repo import SidecarSpec, deliver
from tests.core.test_sheets import GODOT_TRES, UNITY_META, _aseprite

GODOT_IMPORT = """[remap]

importer="texture"
type="CompressedTexture2D"
uid="uid://c0opc2hociaip"
path="res://.godot/imported/hero.png-0123456789abcdef.ctex"

[deps]

source_file="res://art/hero.png"

[params]

compress/mode=0
process/size_limit=0
"""


def _repo(tmp_path: Path) -> Path:
    art = tmp_path / "repo" / "art"
    art.mkdir(parents=True, exist_ok=True)
    (art / "hero.png").write_bytes(b"old pixels")
    return tmp_path / "repo"


def _deliver(settings: Any, naming: str = "replace", factor: float = 4, keep: bool = True,
             data: bytes = b"new pixels") -> Any:
    return deliver(settings, TargetSpec(repo="game", path="art/hero.png", naming=naming), data,
                   ext=".png", label=f"_x{factor:g}", job_id="j_sidecar",
                   sidecars=SidecarSpec(factor=factor, max_side=128, keep_game_size=keep))


def test_replace_keeps_unity_guid_scales_ppu_and_borders_and_leaves_godot_import(
        job_settings: Any, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "art/hero.png.meta").write_text(UNITY_META, newline="")
    (repo / "art/hero.png.import").write_text(GODOT_IMPORT)
    import_before = (repo / "art/hero.png.import").stat()
    done = _deliver(job_settings())
    meta = (repo / "art/hero.png.meta").read_text()
    assert guid_of(meta) == "00000000000000001000000000000000"
    assert "  spritePixelsToUnits: 64\n" in meta
    assert "  spriteBorder: {x: 8, y: 12, z: 16, w: 20}\n" in meta
    assert sprite_rects(meta) == [(0, 64, 64, 64), (64, 64, 64, 64)]
    assert (repo / "art/hero.png.import").read_text() == GODOT_IMPORT
    assert (repo / "art/hero.png.import").stat().st_mtime_ns == import_before.st_mtime_ns
    assert done.sidecars.written == ["art/hero.png.meta"]
    assert any("GUID kept" in n for n in done.sidecars.notes)
    assert any("Godot .import left" in n for n in done.sidecars.notes)
    # identical bytes again: nothing is touched, the .meta is not scaled twice
    again = _deliver(job_settings())
    assert not again.written and (repo / "art/hero.png.meta").read_text() == meta


def test_without_same_size_ppu_stays_and_rects_still_scale(job_settings: Any,
                                                           tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "art/hero.png.meta").write_text(UNITY_META)
    _deliver(job_settings(), keep=False, factor=2)
    meta = (repo / "art/hero.png.meta").read_text()
    assert "  spritePixelsToUnits: 16\n" in meta
    assert sprite_rects(meta) == [(0, 32, 32, 32), (32, 32, 32, 32)]


def test_new_file_beside_the_source_gets_its_own_meta_with_a_new_guid(
        job_settings: Any, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "art/hero.png.meta").write_text(UNITY_META)
    (repo / "art/hero.json").write_text(_aseprite())
    done = _deliver(job_settings(), naming="suffix")
    assert done.rel == "art/hero_x4.png"
    assert (repo / "art/hero.png.meta").read_text() == UNITY_META  # the source's is untouched
    new = (repo / "art/hero_x4.png.meta").read_text()
    guid = guid_of(new)
    assert guid and guid != guid_of(UNITY_META) and len(guid) == 32
    assert "  spritePixelsToUnits: 64\n" in new
    sheet = json.loads((repo / "art/hero_x4.json").read_text())
    assert sheet["meta"]["image"] == "hero_x4.png" and sheet["meta"]["size"] == {"w": 224, "h": 72}
    assert json.loads((repo / "art/hero.json").read_text())["meta"]["size"] == {"w": 56, "h": 18}
    # a later delivery of new pixels keeps the GUID the new file already has
    _deliver(job_settings(), naming="suffix", data=b"newer pixels")
    assert guid_of((repo / "art/hero_x4.png.meta").read_text()) == guid


def test_godot_tres_is_not_rewritten_by_delivery(job_settings: Any, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "art/hero.tres").write_text(GODOT_TRES)
    done = _deliver(job_settings())
    assert (repo / "art/hero.tres").read_text() == GODOT_TRES
    assert done.sidecars.written == []


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(repo.parent / "gitconfig"),
           "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


@pytest.fixture
def lfs_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = _repo(tmp_path)
    (tmp_path / "gitconfig").write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")  # git-lfs's package installs the filter there
    for key, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@example.com"),
                       ("GIT_COMMITTER_NAME", "t"), ("GIT_COMMITTER_EMAIL", "t@example.com")):
        monkeypatch.setenv(key, value)
    _git(repo, "init", "-q")
    (repo / ".gitattributes").write_text("*.png filter=lfs diff=lfs merge=lfs -text\n")
    (repo / "art/hero.png.meta").write_text(UNITY_META)
    return repo


def test_git_lfs_routing_is_reported_and_the_commit_stores_a_pointer(
        job_settings: Any, lfs_repo: Path) -> None:
    _git(lfs_repo, "lfs", "install", "--local")
    _git(lfs_repo, "add", ".")
    _git(lfs_repo, "commit", "-qm", "art")
    done = _deliver(job_settings(git_commit=True), data=b"upscaled pixels " * 100)
    assert done.sidecars.lfs
    assert any("routed to Git LFS" in n and "pointer" in n for n in done.sidecars.notes)
    assert "art/hero.png" in _git(lfs_repo, "lfs", "ls-files", "--name-only")
    blob = _git(lfs_repo, "cat-file", "-p", "HEAD:art/hero.png")
    assert blob.startswith("version https://git-lfs.github.com/spec/v1")
    shown = _git(lfs_repo, "show", "--stat", "--format=%B", "HEAD")
    assert "art/hero.png.meta" in shown and "Pipeline-Job: j_sidecar" in shown


def test_lfs_route_without_the_filter_installed_warns(job_settings: Any, lfs_repo: Path) -> None:
    done = _deliver(job_settings())
    assert done.sidecars.lfs
    assert any("git lfs install" in n for n in done.sidecars.notes)


def test_a_unity_multi_sprite_meta_beside_the_source_gives_the_cells(tmp_path: Path) -> None:
    from PIL import Image

    from service.storage.sidecars import sheet_beside

    repo = tmp_path / "repo"
    (repo / "art").mkdir(parents=True)
    Image.new("RGBA", (32, 32)).save(repo / "art/hero.png")
    (repo / "art/hero.png.meta").write_text(UNITY_META)
    found = sheet_beside(repo, "art/hero.png")
    assert found is not None and found.cells == [(0, 0, 16, 16), (16, 0, 16, 16)]  # y from top
    assert sheet_beside(repo, "../outside.png") is None
    (repo / "art/single.png").write_bytes((repo / "art/hero.png").read_bytes())
    assert sheet_beside(repo, "art/single.png") is None  # no metadata: not a sheet


FRAMES_TRES = """[gd_resource type="SpriteFrames" load_steps=5 format=3 uid="uid://djfre4iy8jd0k"]

[ext_resource type="Texture2D" uid="uid://c0opc2hociaip" path="res://art/hero.png" id="1_a0oxm"]
[ext_resource type="Texture2D" uid="uid://bbbbbbbbbbbbb" path="res://art/other.png" id="2_other"]

[sub_resource type="AtlasTexture" id="AtlasTexture_a"]
atlas = ExtResource("1_a0oxm")
region = Rect2(0, 0, 16, 16)

[sub_resource type="AtlasTexture" id="AtlasTexture_b"]
atlas = ExtResource("1_a0oxm")
region = Rect2(16, 0, 16, 16)

[sub_resource type="AtlasTexture" id="AtlasTexture_c"]
atlas = ExtResource("2_other")
region = Rect2(8, 8, 8, 8)

[resource]
animations = [{"frames": [{"duration": 1.0, "texture": SubResource("AtlasTexture_a")}], "loop": true, "name": &"walk", "speed": 5.0}]
"""


def test_godot_sprite_frames_of_a_replaced_sheet_are_scaled_other_atlases_kept(
        job_settings: Any, tmp_path: Path) -> None:
    from PIL import Image

    from service.storage.sidecars import sheet_beside

    repo = _repo(tmp_path)
    (repo / "project.godot").write_text("[application]\n")
    Image.new("RGBA", (32, 16)).save(repo / "art/hero.png")
    (repo / "art/walk.tres").write_text(FRAMES_TRES)
    found = sheet_beside(repo, "art/hero.png")
    assert found is not None and found.cells == [(0, 0, 16, 16), (16, 0, 16, 16)]
    done = _deliver(job_settings(), factor=2)
    text = (repo / "art/walk.tres").read_text()
    assert "region = Rect2(32, 0, 32, 32)" in text and "region = Rect2(0, 0, 32, 32)" in text
    assert "region = Rect2(8, 8, 8, 8)" in text  # another image's atlas: untouched
    assert 'uid="uid://djfre4iy8jd0k"' in text and text.count("\n") == FRAMES_TRES.count("\n")
    assert "art/walk.tres" in done.sidecars.written
    assert any("2 atlas regions scaled x2" in n for n in done.sidecars.notes)
    # a new file beside the source: the resource keeps pointing at the source, untouched
    (repo / "art/walk.tres").write_text(FRAMES_TRES)
    done = _deliver(job_settings(), naming="suffix", factor=2)
    assert (repo / "art/walk.tres").read_text() == FRAMES_TRES
    assert any("walk.tres cuts hero.png" in n for n in done.sidecars.notes)
