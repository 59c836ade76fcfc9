"""The animate vocabulary and frame maths: prompts per motion, keying without fringes, one
anchor, palette distance, and sheet metadata that the readers of service.core.sheets parse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from sprites import knight_rgba

from service.core import frames as fr
from service.core.animate import MOTIONS, AnimateParams, frame_prompts, frame_seed, poses
from service.core.errors import ParamsError
from service.core.sheet_writers import aseprite_json, godot_sprite_frames
from service.core.sheets import godot_cells, read_cells

KEY = (0, 255, 0)


def sprite() -> np.ndarray:
    return knight_rgba()


@pytest.mark.parametrize("motion", list(MOTIONS))
def test_every_preset_gives_one_distinct_prompt_per_frame(motion: str) -> None:
    params = AnimateParams(motion=motion, frames=8)
    prompts = frame_prompts(params)
    assert len(prompts) == 8
    assert len(set(poses(AnimateParams(motion=motion, frames=4)))) == 4
    assert all("#00ff00" in p and "facing right" in p for p in prompts)


def test_bad_motion_is_a_clear_error_naming_the_presets() -> None:
    with pytest.raises(ParamsError) as info:
        AnimateParams(motion="moonwalk")
    assert info.value.code == "motion_unknown"
    assert "walk" in info.value.message and "custom" in info.value.message
    with pytest.raises(ParamsError):
        AnimateParams(motion="custom")  # custom without text
    custom = AnimateParams(motion="custom", motion_text="waving both arms", frames=3)
    assert all("waving both arms" in p for p in frame_prompts(custom))


def test_frame_count_limits_and_seeds() -> None:
    for bad in (1, 17):
        with pytest.raises(ValidationError):
            AnimateParams(frames=bad)
    seeds = {frame_seed(7, i) for i in range(16)}
    assert len(seeds) == 16 and frame_seed(7, 3, 1) != frame_seed(7, 3)


def test_key_to_alpha_clears_the_key_and_leaves_no_fringe() -> None:
    src = sprite()
    big = np.repeat(np.repeat(src, 4, axis=0), 4, axis=1)
    shifted = fr.shift(big, 2, 0)  # half a source pixel: edges mix with the key
    on = fr.on_key(shifted, KEY)
    down = fr.resize_rgba(fr.key_to_alpha(on, KEY), (24, 32))
    alpha = down[:, :, 3]
    # the sprite covers x 6..17 (half a pixel more after the shift): all else was key colour
    assert (alpha[:, :6] == 0).all() and (alpha[:, 19:] == 0).all() and (alpha[:4] == 0).all()
    assert (alpha[5:27, 18] > 0).all() and (alpha[5:27, 18] < 255).all()  # the half pixel
    assert alpha[0, 0] == 0 and alpha[16, 12] == 255
    visible = down[alpha > 0][:, :3].astype(int)
    greenish = (visible[:, 1] - np.maximum(visible[:, 0], visible[:, 2])) > 40
    assert not greenish.any(), "key colour survived on visible pixels"
    hidden = down[alpha == 0][:, :3].astype(int)
    assert (np.abs(hidden - KEY).max(axis=1) > 24).all(), "transparent pixels keep key colour"


def test_align_puts_every_frame_on_the_source_baseline() -> None:
    placed = fr.place(sprite(), (40, 40))
    target = fr.anchor_of(placed, "feet")
    assert target is not None and target[1] == 40.0
    for dx, dy in [(-5, -7), (3, -2), (0, 0), (6, -9)]:
        moved = fr.align(fr.shift(placed, dx, dy), target)
        ys, _ = np.nonzero(moved[:, :, 3] >= 128)
        assert ys.max() == 39
        assert fr.anchor_of(moved)[0] == pytest.approx(target[0], abs=0.5)


def test_histogram_distance_is_zero_for_the_palette_and_grows_with_drift() -> None:
    src = sprite()
    assert fr.histogram_distance(fr.shift(src, 3, 1), src) == pytest.approx(0.0, abs=0.02)
    recoloured = src.copy()
    recoloured[5:27, 7:17, :3] = (30, 90, 220)
    assert fr.histogram_distance(recoloured, src) > 0.5


def test_grid_layout_and_cut_round_trip() -> None:
    cells = [np.full((8, 6, 4), i, np.uint8) for i in range(5)]
    sheet, rects = fr.assemble(cells, "grid")
    assert sheet.shape == (16, 18, 4) and rects[3] == (0, 8, 6, 8)
    assert all((c == d).all() for c, d in zip(cells, fr.cut(sheet, rects), strict=True))


def test_metadata_writers_are_read_back_with_the_same_cells() -> None:
    rects = fr.cell_rects(8, (24, 32), "row")
    text = aseprite_json("hero_walk.png", (192, 32), rects, name="walk", fps=10, loop=True)
    fmt, cells = read_cells("hero_walk.json", text, 32)
    assert fmt == "aseprite" and cells == rects
    data = json.loads(text)
    assert data["meta"]["frameTags"][0] == {"name": "walk", "from": 0, "to": 7,
                                            "direction": "forward", "color": "#000000ff"}
    assert {f["duration"] for f in data["frames"]} == {100}
    tres = godot_sprite_frames("res://art/hero_walk.png", rects, name="walk", fps=10, loop=False)
    assert godot_cells(tres, "res://art/hero_walk.png") == rects
    assert '"loop": false' in tres and '"name": &"walk"' in tres and '"speed": 10.0' in tres


def test_preview_is_an_animated_webp_at_the_fps() -> None:
    from io import BytesIO

    from PIL import Image

    cells = [fr.shift(sprite(), i, 0) for i in range(4)]
    with Image.open(BytesIO(fr.encode_preview(cells, 8))) as im:
        assert im.format == "WEBP" and im.n_frames == 4 and im.info["loop"] == 0
        im.seek(1)
        im.load()
        assert im.info["duration"] == 125
