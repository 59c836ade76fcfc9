"""`aat upscale` with asset types: the type and its reason in the summary, a sheet's metadata
written beside the result, JPEG on the matte, bad sheets refused in one line."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from service import cli
from service.core.normalmap import decode_normals
from tests.core.asset_factory import normal_map, painted_sprite, pixel_sprite
from tests.core.test_sheets import GODOT_TRES, UNITY_META, _aseprite


def run(*args: str | Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    for key in [k for k in os.environ if k.startswith("AAT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AAT_DATA_DIR", str(cwd / "data"))
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli._assemble(), [str(a) for a in args])


def save(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    Image.fromarray(rgb if alpha is None else np.dstack([rgb, alpha])).save(path)
    return path


def test_normal_map_by_name_says_why_and_stays_unit(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = save(tmp_path / "hull_nrm.png", normal_map(48, 2))
    result = run("upscale", src, "-o", tmp_path / "out.png", "--scale", "2", "-q",
                 cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert "normal (name: file name ends in _nrm" in result.stdout
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert float(np.abs(np.linalg.norm(decode_normals(out), axis=2) - 1).mean()) < 0.005


def test_pixel_art_asset_type_flag_and_integer_scale(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rgb, alpha = pixel_sprite(16, 3)
    src = save(tmp_path / "hero.png", rgb, alpha)
    result = run("upscale", src, "-o", tmp_path / "x3.png", "--scale", "3", "--asset-type",
                 "pixel_art", "--pixel-scaler", "nearest", "-q", cwd=tmp_path,
                 monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "x3.png"))
    assert np.array_equal(out, np.repeat(np.repeat(np.dstack([rgb, alpha]), 3, 0), 3, 1))
    bad = run("upscale", src, "-o", tmp_path / "x.png", "--scale", "2.5", "--asset-type",
              "pixel_art", "-q", cwd=tmp_path, monkeypatch=monkeypatch)
    assert bad.exit_code == 2 and "integer scale" in bad.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(("name", "text", "written"), [
    ("hero.json", _aseprite(), "out.json"),
    ("hero.tres", GODOT_TRES.replace("24, 44", "16, 16").replace("Rect2(24, 0", "Rect2(19, 1")
     .replace("Rect2(0, 0", "Rect2(1, 1"), "out.tres"),
    ("hero.png.meta", UNITY_META, "out.png.meta"),
])
def test_sheet_metadata_in_and_scaled_beside_the_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str,
        written: str) -> None:
    sheet = np.zeros((32, 56, 4), np.uint8)
    sheet[1:17, 1:17] = (200, 40, 40, 255)
    src = save(tmp_path / "hero.png", sheet[:, :, :3], sheet[:, :, 3])
    (tmp_path / name).write_text(text)
    result = run("upscale", src, "-o", tmp_path / "out.png", "--scale", "2", "--sheet",
                 tmp_path / name, "--upscaler", "lanczos", "-q", cwd=tmp_path,
                 monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / written).is_file() and "sheet metadata" in result.stderr
    out = (tmp_path / written).read_text()
    if name.endswith(".json"):
        assert json.loads(out)["meta"]["image"] == "out.png"
        assert json.loads(out)["meta"]["size"] == {"w": 112, "h": 36}
    elif name.endswith(".tres"):
        assert "region = Rect2(2, 2, 32, 32)" in out
    else:
        assert "spritePixelsToUnits: 32" in out and "guid: 0000000000000000100" not in out


def test_bad_sheet_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = save(tmp_path / "hero.png", np.zeros((32, 32, 3), np.uint8))
    result = run("upscale", src, "-o", tmp_path / "o.png", "--sheet", "3x1", "-q",
                 cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and "does not divide" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_jpeg_of_a_transparent_sprite_on_the_matte(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rgb, alpha = painted_sprite(64, 1)
    rgb[alpha == 0] = (160, 0, 200)
    src = save(tmp_path / "hero.png", rgb, alpha)
    result = run("upscale", src, "-o", tmp_path / "hero.jpg", "--matte", "#000000",
                 "--upscaler", "lanczos", "-q", cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert "composited onto the matte #000000" in result.stderr
    out = np.asarray(Image.open(io.BytesIO((tmp_path / "hero.jpg").read_bytes()))).astype(int)
    assert out[:8, :8].max() <= 6  # black matte, not purple


def test_dds_in_and_block_compressed_dds_out(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rgb, alpha = painted_sprite(64, 2)
    src = tmp_path / "hero.dds"
    Image.fromarray(np.dstack([rgb, alpha])).save(src, "DDS")  # uncompressed RGBA DDS
    result = run("upscale", src, "-o", tmp_path / "hero_x2.dds", "--upscaler", "lanczos", "-q",
                 cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    data = (tmp_path / "hero_x2.dds").read_bytes()
    assert data[:4] == b"DDS " and data[84:88] == b"DXT5"  # BC3: alpha kept, compressed
    assert len(data) == 128 + 128 * 128  # 1 byte per pixel, a quarter of RGBA
    out = np.asarray(Image.open(tmp_path / "hero_x2.dds").convert("RGBA")).astype(int)
    assert out.shape == (128, 128, 4)
    assert out[0, 0, 3] == 0 and out[64, 64, 3] == 255
    assert np.abs(out[60:68, 60:68, :3] - rgb[30:34, 30:34].mean(axis=(0, 1))).mean() < 20
    flat = save(tmp_path / "splash.png", rgb)
    opaque = run("upscale", flat, "-o", tmp_path / "splash.dds", "--upscaler", "lanczos", "-q",
                 cwd=tmp_path, monkeypatch=monkeypatch)
    assert opaque.exit_code == 0, opaque.stderr
    assert (tmp_path / "splash.dds").read_bytes()[84:88] == b"DXT1"  # BC1 when opaque


def test_bc5_normal_map_dds_stays_bc5_and_two_channel(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "wall_n.dds"
    Image.fromarray(normal_map(64, 4)).save(src, "DDS", pixel_format="BC5")
    result = run("upscale", src, "-o", tmp_path / "wall_n_x2.dds", "-q", cwd=tmp_path,
                 monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert "normal (name" in result.stdout
    data = (tmp_path / "wall_n_x2.dds").read_bytes()
    assert data[84:88] in (b"ATI2", b"BC5U", b"DX10")
    out = Image.open(tmp_path / "wall_n_x2.dds")
    assert out.pixel_format == "BC5" and out.size == (128, 128)
    xy = decode_normals(np.asarray(out.convert("RGB")))[:, :, :2]
    assert float((xy ** 2).sum(axis=2).max()) <= 1.05  # still inside the unit disc
