"""Spritesheet layouts from grids and game-tool metadata, and metadata written back scaled;
Unity ``.meta`` edits that keep every byte but the pixel quantities."""

from __future__ import annotations

import json

import pytest

from service.core.errors import ParamsError
from service.core.sheets import SheetParams, layout_for, read_cells, scale_metadata
from service.core.unity_meta import guid_of, new_meta, scale_meta, sprite_rects

UNITY_META = (
    "fileFormatVersion: 2\n"
    "guid: 00000000000000001000000000000000\n"
    "TextureImporter:\n"
    "  internalIDToNameTable:\n"
    "  - first:\n"
    "      213: 21300000\n"
    "    second: hero_0\n"
    "  serializedVersion: 13\n"
    "  mipmaps:\n"
    "    enableMipMap: 0\n"
    "  bumpmap:\n"
    "    flipGreenChannel: 0\n"
    "  maxTextureSize: 2048\n"
    "  textureSettings:\n"
    "    serializedVersion: 2\n"
    "    filterMode: 0\n"
    "  spriteMode: 2\n"
    "  spriteExtrude: 1\n"
    "  spriteMeshType: 1\n"
    "  alignment: 0\n"
    "  spritePivot: {x: 0.5, y: 0.5}\n"
    "  spritePixelsToUnits: 16\n"
    "  spriteBorder: {x: 2, y: 3, z: 4, w: 5}\n"
    "  platformSettings:\n"
    "  - serializedVersion: 3\n"
    "    buildTarget: DefaultTexturePlatform\n"
    "    maxTextureSize: 32\n"
    "    textureCompression: 0\n"
    "  - serializedVersion: 3\n"
    "    buildTarget: Standalone\n"
    "    maxTextureSize: 2048\n"
    "  spriteSheet:\n"
    "    serializedVersion: 2\n"
    "    sprites:\n"
    "    - serializedVersion: 2\n"
    "      name: hero_0\n"
    "      rect:\n"
    "        serializedVersion: 2\n"
    "        x: 0\n"
    "        y: 16\n"
    "        width: 16\n"
    "        height: 16\n"
    "      alignment: 0\n"
    "      pivot: {x: 0.5, y: 0.5}\n"
    "      border: {x: 1, y: 1, z: 1, w: 1}\n"
    "      outline:\n"
    "      - - {x: -8, y: 8}\n"
    "        - {x: 8, y: -8.5}\n"
    "      physicsShape: []\n"
    "      tessellationDetail: 0\n"
    "      spriteID: 5e97eb03825dee720800000000000000\n"
    "      internalID: 21300000\n"
    "    - serializedVersion: 2\n"
    "      name: hero_1\n"
    "      rect:\n"
    "        serializedVersion: 2\n"
    "        x: 16\n"
    "        y: 16\n"
    "        width: 16\n"
    "        height: 16\n"
    "      pivot: {x: 0.5, y: 0}\n"
    "      border: {x: 0, y: 0, z: 0, w: 0}\n"
    "      spriteID: 6f97eb03825dee720800000000000000\n"
    "  userData: \n"
    "  assetBundleName: \n"
)


def test_unity_meta_scaled_keeps_guid_and_every_other_byte() -> None:
    out, notes = scale_meta(UNITY_META.replace("\n", "\r\n"), 4, max_side=128)
    assert guid_of(out) == "00000000000000001000000000000000"  # digit-only GUID untouched
    lines = out.split("\r\n")
    assert "  spritePixelsToUnits: 64" in lines
    assert "  spriteBorder: {x: 8, y: 12, z: 16, w: 20}" in lines
    assert "      border: {x: 4, y: 4, z: 4, w: 4}" in lines
    assert "      pivot: {x: 0.5, y: 0.5}" in lines and "  spritePivot: {x: 0.5, y: 0.5}" in lines
    assert "      - - {x: -32, y: 32}" in lines and "        - {x: 32, y: -34}" in lines
    assert "    maxTextureSize: 128" in lines and "  maxTextureSize: 2048" in lines
    assert "maxTextureSize raised to 128" in notes[0]
    assert "  userData: " in lines  # trailing space kept, no null
    assert "      spriteID: 5e97eb03825dee720800000000000000" in lines
    assert sprite_rects(out) == [(0, 64, 64, 64), (64, 64, 64, 64)]
    changed = [(a, b) for a, b in zip(UNITY_META.split("\n"), lines, strict=True) if a != b]
    # PPU, spriteBorder, one non-zero border, 7 non-zero rect values, 2 outline points and one
    # maxTextureSize: nothing else moved
    assert len(changed) == 13
    assert all(a.split(":")[0] == b.split(":")[0] for a, b in changed)


def test_new_meta_for_a_new_file_gets_a_new_guid_and_same_settings() -> None:
    out = new_meta(UNITY_META)
    assert guid_of(out) != guid_of(UNITY_META) and len(guid_of(out) or "") == 32
    assert out.replace(guid_of(out) or "", "") == UNITY_META.replace(guid_of(UNITY_META) or "", "")


def test_unity_rects_become_top_left_cells() -> None:
    fmt, cells = read_cells("hero.png.meta", UNITY_META, height=32)
    assert fmt == "unity" and cells == [(0, 0, 16, 16), (16, 0, 16, 16)]


def _aseprite(rotated: bool = False) -> str:
    frames = {f"hero {i}.aseprite": {
        "frame": {"x": 1 + i * 18, "y": 1, "w": 16, "h": 16}, "rotated": rotated,
        "trimmed": True, "spriteSourceSize": {"x": -1, "y": 0, "w": 16, "h": 16},
        "sourceSize": {"w": 17, "h": 16}, "duration": 100} for i in range(3)}
    meta = {"app": "https://www.aseprite.org/", "version": "1.3", "image": "hero.png",
            "format": "RGBA8888", "size": {"w": 56, "h": 18}, "scale": "1",
            "frameTags": [{"name": "walk", "from": 0, "to": 2, "direction": "forward"}],
            "slices": [{"name": "hit", "keys": [{"frame": 0, "bounds": {"x": 2, "y": 3, "w": 4,
                                                                        "h": 5},
                                                 "pivot": {"x": 1, "y": 2}}]}]}
    return json.dumps({"frames": frames, "meta": meta}, indent=1)


def test_aseprite_json_cells_and_scaled_write_back() -> None:
    fmt, cells = read_cells("hero.json", _aseprite(), height=18)
    assert fmt == "aseprite" and cells == [(1, 1, 16, 16), (19, 1, 16, 16), (37, 1, 16, 16)]
    text, _ = scale_metadata(fmt, _aseprite(), 3, image_name="hero_x3.png")
    data = json.loads(text)
    first = data["frames"]["hero 0.aseprite"]
    assert first["frame"] == {"x": 3, "y": 3, "w": 48, "h": 48}
    assert first["spriteSourceSize"] == {"x": -3, "y": 0, "w": 48, "h": 48}
    assert first["sourceSize"] == {"w": 51, "h": 48} and first["duration"] == 100
    assert data["meta"]["size"] == {"w": 168, "h": 54} and data["meta"]["scale"] == "1"
    assert data["meta"]["image"] == "hero_x3.png"
    assert data["meta"]["frameTags"][0] == {"name": "walk", "from": 0, "to": 2,
                                            "direction": "forward"}
    key = data["meta"]["slices"][0]["keys"][0]
    assert key["bounds"] == {"x": 6, "y": 9, "w": 12, "h": 15} and key["pivot"] == {"x": 3, "y": 6}


def test_texturepacker_array_with_rotated_frame() -> None:
    text = json.dumps({"frames": [
        {"filename": "a", "frame": {"x": 0, "y": 0, "w": 10, "h": 20}, "rotated": True},
        {"filename": "b", "frame": {"x": 20, "y": 0, "w": 10, "h": 20}, "rotated": False}],
        "meta": {"app": "https://www.codeandweb.com/texturepacker", "size": {"w": 30, "h": 20}}})
    fmt, cells = read_cells("atlas.json", text, height=20)
    assert fmt == "texturepacker" and cells == [(0, 0, 20, 10), (20, 0, 10, 20)]


GODOT_TRES = """[gd_resource type="SpriteFrames" load_steps=4 format=3 uid="uid://djfre4iy8jd0k"]

[ext_resource type="Texture2D" uid="uid://c0opc2hociaip" path="res://actor_sheet.png" id="1_a0oxm"]

[sub_resource type="AtlasTexture" id="AtlasTexture_m3wjt"]
atlas = ExtResource("1_a0oxm")
region = Rect2(0, 0, 24, 44)

[sub_resource type="AtlasTexture" id="AtlasTexture_b"]
atlas = ExtResource("1_a0oxm")
region = Rect2(24, 0, 24, 44)
margin = Rect2(1, 2, 3, 4)

[resource]
animations = [{"frames": [{"duration": 1.0, "texture": SubResource("AtlasTexture_m3wjt")}], "loop": true, "name": &"ani_1", "speed": 5.0}]
"""


def test_godot_sprite_frames_regions() -> None:
    fmt, cells = read_cells("actor.tres", GODOT_TRES, height=44)
    assert fmt == "godot" and cells == [(0, 0, 24, 44), (24, 0, 24, 44)]
    text, _ = scale_metadata("godot", GODOT_TRES, 2)
    assert "region = Rect2(48, 0, 48, 88)" in text and "margin = Rect2(2, 4, 6, 8)" in text
    assert 'uid="uid://djfre4iy8jd0k"' in text and '"speed": 5.0' in text
    assert text.count("\n") == GODOT_TRES.count("\n")


@pytest.mark.parametrize(("sheet", "size", "cells"), [
    ({"grid": "2x2"}, (32, 32), [(0, 0, 16, 16), (16, 0, 16, 16), (0, 16, 16, 16),
                                 (16, 16, 16, 16)]),
    ({"grid": "2x1", "margin": 1, "spacing": 2}, (36, 18), [(1, 1, 16, 16), (19, 1, 16, 16)]),
    ({"cell": "16x16", "spacing": 2}, (34, 16), [(0, 0, 16, 16), (18, 0, 16, 16)]),
])
def test_grid_layouts(sheet: dict, size: tuple[int, int], cells: list) -> None:
    layout = layout_for(SheetParams.model_validate(sheet), *size)
    assert list(layout.cells) == cells


@pytest.mark.parametrize(("sheet", "message"), [
    ({"grid": "3x1"}, "does not divide"),
    ({"cells": [[0, 0, 20, 20], [10, 10, 20, 20]]}, "overlap"),
    ({"cells": [[0, 0, 40, 20]]}, "outside"),
])
def test_bad_layouts_are_refused_clearly(sheet: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message) as info:
        layout_for(SheetParams.model_validate(sheet), 32, 32)
    assert info.value.code == "sheet_invalid"


def test_sheet_params_need_exactly_one_way() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SheetParams.model_validate({"grid": "2x2", "cell": "8x8"})
    with pytest.raises(ValueError):
        SheetParams.model_validate({"grid": "2by2"})
