"""Watch-folder presets carry the asset type, the sheet grid, the pixel-art scaler and the
matte, or make animate jobs (``kind = "animate"`` with an ``[animate]`` table); a bad value
says which key is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.errors import ParamsError
from watcher.presets import resolve


def test_asset_keys_in_a_preset(tmp_path: Path) -> None:
    (tmp_path / ".aat.toml").write_text(
        'asset_type = "pixel_art"\nsheet = "cell=16x16,spacing=1"\npixel_scaler = "nearest"\n'
        'matte = "#202020"\nscale = 3\n')
    sub = tmp_path / "ui"
    sub.mkdir()
    (sub / ".aat.toml").write_text('asset_type = "ui"\n[sheet]\ngrid = "4x2"\nmargin = 2\n')
    top = resolve(tmp_path, tmp_path).params
    assert (top.asset_type, top.pixel_scaler, top.matte) == ("pixel_art", "nearest", "#202020")
    assert top.sheet is not None and (top.sheet.cell, top.sheet.spacing) == ("16x16", 1)
    deep = resolve(tmp_path, sub)
    assert deep.params.asset_type == "ui" and deep.params.sheet is not None
    assert (deep.params.sheet.grid, deep.params.sheet.margin) == ("4x2", 2)
    assert resolve(tmp_path, sub).fingerprint() != resolve(tmp_path, tmp_path).fingerprint()


@pytest.mark.parametrize(("text", "needle"), [
    ('asset_type = "photo"\n', "asset_type"),
    ('sheet = "4 by 2"\n', "sheet"),
    ('matte = "sky"\n', "matte"),
    ('asset_type = "normal"\ndiffusion = true\n', "never diffused"),
])
def test_bad_asset_keys_say_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / ".aat.toml").write_text(text)
    with pytest.raises(ParamsError) as exc:
        resolve(tmp_path, tmp_path)
    assert needle in exc.value.message


def test_an_animate_preset_makes_animate_jobs(tmp_path: Path) -> None:
    (tmp_path / ".aat.toml").write_text(
        'repo = "game"\nscale = 2\nkind = "animate"\n[animate]\nmotion = "walk"\nframes = 8\n'
        'fps = 12\n')
    sub = tmp_path / "enemies"
    sub.mkdir()
    (sub / ".aat.toml").write_text('[animate]\nmotion = "run"\n')  # only this key changes
    top, deep = resolve(tmp_path, tmp_path), resolve(tmp_path, sub)
    assert top.animate is not None and (top.animate.motion, top.animate.frames) == ("walk", 8)
    assert deep.animate is not None
    assert (deep.animate.motion, deep.animate.frames, deep.animate.fps) == ("run", 8, 12)
    assert top.result_tag((24, 32)) == "_walk" and deep.result_tag((24, 32)) == "_run"
    assert top.fingerprint() != deep.fingerprint()
    plain = tmp_path / "props"
    plain.mkdir()
    (plain / ".aat.toml").write_text('kind = "upscale"\n')  # a subfolder goes back to upscaling
    back = resolve(tmp_path, plain)
    assert back.animate is None and back.result_tag((24, 32)) == "_x2"


@pytest.mark.parametrize(("text", "needle"), [
    ('kind = "animate"\n[animate]\nmotion = "moonwalk"\n', "moonwalk"),
    ('kind = "animate"\n[animate]\nframes = 40\n', "animate.frames"),
    ('kind = "animate"\nnaming = "replace"\n', "over its own sprite"),
    ('kind = "video"\n', "kind must be one of upscale, animate"),
    ('kind = "animate"\nanimate = 3\n', "animate must be a table"),
])
def test_bad_animate_presets_say_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / ".aat.toml").write_text(text)
    with pytest.raises(ParamsError) as exc:
        resolve(tmp_path, tmp_path)
    assert needle in exc.value.message
