"""Watch-folder presets carry the asset type, the sheet grid, the pixel-art scaler and the
matte; a bad value says which key is wrong."""

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
