"""Asset types through the job service: resolved at submit (stored with the reason, part of the
dedupe key), sheets found beside a repo source, and each type's path when the job runs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_helpers import emulator, runpod_settings, small_params, wait_until
from PIL import Image

from service.core.assets import green_convention
from service.core.errors import ParamsError
from service.core.jobs import JobStatus, TargetSpec
from service.core.normalmap import decode_normals
from service.jobs.service import JobService, build_job_service
from tests.core.asset_factory import normal_map, painted_sprite, pixel_sprite
from tests.core.test_sheets import _aseprite


def encode(rgb: np.ndarray, alpha: np.ndarray | None = None, fmt: str = "PNG") -> bytes:
    arr = rgb if alpha is None else np.dstack([rgb, alpha])
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def service(job_settings: Any) -> Iterator[JobService]:
    svc = build_job_service(job_settings())
    svc.start()
    yield svc
    svc.stop()


def _finished(svc: JobService, job_id: str) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, 60, "job to finish")


def test_asset_type_is_resolved_at_submit_with_its_reason_and_keys_dedupe(
        service: JobService) -> None:
    data = encode(normal_map(48, 3))
    by_name, _ = service.submit(data, filename="wall_N.png", params=small_params())
    assert by_name.params.asset_type == "normal"
    assert by_name.params.asset_reason and "_n" in by_name.params.asset_reason
    by_content, _ = service.submit(data, filename="wall.png", params=small_params())
    assert by_content.params.asset_type == "normal"
    assert "unit vectors" in (by_content.params.asset_reason or "")
    forced, created = service.submit(data, filename="wall_N.png",
                                     params=small_params(asset_type="sprite"))
    assert created and forced.id != by_name.id and forced.params.asset_type == "sprite"
    again, created_again = service.submit(data, filename="wall_N.png", params=small_params())
    assert not created_again and again.id == by_name.id
    assert service.get(by_name.id).params.asset_type == "normal"  # stored in the job


def test_pixel_art_and_sheets_need_an_integer_scale_at_submit(service: JobService) -> None:
    rgb, alpha = pixel_sprite(16, 1)
    with pytest.raises(ParamsError, match="integer scale"):
        service.submit(encode(rgb, alpha), filename="hero.png",
                       params=small_params(scale=1.5, asset_type="pixel_art"))
    with pytest.raises(ParamsError, match="does not divide") as info:
        service.submit(encode(rgb, alpha), filename="hero.png",
                       params=small_params(sheet="3x1", asset_type="sprite"))
    assert info.value.code == "sheet_invalid"


def test_sheet_json_beside_a_repo_source_is_used(service: JobService, tmp_path: Path) -> None:
    sheet = np.zeros((18, 56, 3), np.uint8)
    art = tmp_path / "repo" / "art"
    art.mkdir(parents=True)
    (art / "hero.png").write_bytes(encode(sheet))
    (art / "hero.json").write_text(_aseprite())
    job, _ = service.submit(encode(sheet), filename="hero.png", params=small_params(),
                            target=TargetSpec(repo="game", path="art/hero.png"))
    assert job.params.sheet is not None
    assert [list(c) for c in job.params.sheet.cells or []] == [
        [1, 1, 16, 16], [19, 1, 16, 16], [37, 1, 16, 16]]
    done = _finished(service, job.id)
    assert done.status == JobStatus.succeeded, done.error
    written = json.loads((art / "hero_x2.json").read_text())
    assert written["meta"]["image"] == "hero_x2.png"
    assert written["frames"]["hero 0.aseprite"]["frame"] == {"x": 2, "y": 2, "w": 32, "h": 32}


def _result(svc: JobService, job_id: str) -> np.ndarray:
    path, _ = svc.result(job_id)
    return np.asarray(Image.open(path))


@pytest.fixture
def gpu_service(job_settings: Any) -> Iterator[tuple[JobService, Any]]:
    """A job service whose GPU backend is RunPod, emulated with the echo worker (each tile's red
    channel raised by an amount that depends on its seed)."""
    with emulator(workers=4, latency_s=0.0) as emu:
        svc = build_job_service(job_settings(**runpod_settings(emu)))
        svc.start()
        try:
            yield svc, emu
        finally:
            svc.stop()


@pytest.mark.parametrize("green", ["opengl", "directx"])
def test_normal_map_job_never_diffuses_and_stays_unit_length(
        gpu_service: tuple[JobService, Any], green: str) -> None:
    svc, emu = gpu_service
    job, _ = svc.submit(encode(normal_map(64, 5, green)), filename=f"hull_{green}.png",
                        params=small_params(tile_size=64, overlap=16))
    done = _finished(svc, job.id)
    assert done.status == JobStatus.succeeded, done.error
    assert done.params.asset_type == "normal" and done.output.backend == "none"
    assert emu.stats("upscale")["submitted"] == 0  # no RunPod job: nothing was diffused
    out = _result(svc, job.id)
    assert out.shape == (128, 128, 3)
    assert float(np.abs(np.linalg.norm(decode_normals(out), axis=2) - 1).mean()) < 0.005
    assert green_convention(out)[0] == green


def test_pixel_art_job_keeps_exact_scale_and_palette(service: JobService) -> None:
    rgb, alpha = pixel_sprite(20, 4)
    sprite = np.dstack([rgb, alpha])
    colours = {tuple(c) for c in sprite.reshape(-1, 4)}
    for factor in (2, 3, 4):
        job, _ = service.submit(encode(rgb, alpha), filename="slime.png",
                                params=small_params(scale=factor))
        done = _finished(service, job.id)
        assert done.status == JobStatus.succeeded, done.error
        assert done.params.asset_type == "pixel_art" and done.output.upscaler == "epx"
        out = _result(service, job.id)
        assert out.shape == (20 * factor, 20 * factor, 4)
        assert {tuple(c) for c in out.reshape(-1, 4)} <= colours


def _sheet(edit_cell: int | None = None) -> np.ndarray:
    cells = [painted_sprite(40, 90 + i) for i in range(4)]
    sheet = np.zeros((2 + 40 + 4 + 40 + 2, 2 + 4 * 40 + 3 * 4 + 2, 4), np.uint8)
    for i, (rgb, alpha) in enumerate(cells):
        x, y = 2 + i * 44, 2
        sheet[y + 44:y + 84, x:x + 40] = np.dstack([rgb[::-1], alpha[::-1]])
        if i == edit_cell:  # only this top-row cell changes
            rgb = 255 - rgb
        sheet[y:y + 40, x:x + 40] = np.dstack([rgb, alpha])
    return sheet


def test_changing_one_sheet_cell_changes_no_other_cell_on_the_diffusion_path(
        gpu_service: tuple[JobService, Any]) -> None:
    svc, emu = gpu_service
    params = small_params(sheet="grid=4x2,margin=2,spacing=4", tile_size=64, overlap=16,
                          caption=True, asset_type="sprite")
    results = []
    for edit in (None, 2):
        sheet = _sheet(edit)
        job, _ = svc.submit(encode(sheet[:, :, :3], sheet[:, :, 3]), filename="walk.png",
                            params=params)
        done = _finished(svc, job.id)
        assert done.status == JobStatus.succeeded, done.error
        assert done.output.backend == "runpod"
        tiles = svc.tiles(job.id)
        assert len(tiles) == 8 * 4  # four 64 px tiles inside each 80 px cell (2x)
        for t in tiles:  # no tile crosses a cell border
            col, row = (t["x"] - 4) // 88, (t["y"] - 4) // 88
            x0, y0 = 4 + col * 88, 4 + row * 88
            assert x0 <= t["x"] and t["x"] + t["w"] <= x0 + 80
            assert y0 <= t["y"] and t["y"] + t["h"] <= y0 + 80
        results.append(_result(svc, job.id))
    first, second = results
    # one caption (the first cell's) for every frame, so the unchanged cells of the second
    # sheet are the same requests as before and come from the tile cache: only cell 2 is paid
    assert emu.stats("caption")["submitted"] == 1
    assert emu.stats("upscale")["submitted"] == 32 + 4
    changed = (first != second).any(axis=2)
    x, y, w, h = (2 + 2 * 44) * 2, 2 * 2, 80, 80  # cell 2 of the top row at 2x
    inside = np.zeros_like(changed)
    inside[y:y + h, x:x + w] = True
    assert changed[inside].any() and not changed[~inside].any()
    # the gutters stayed exactly transparent
    assert (first[:4, :, 3] == 0).all() and (first[:, :4, 3] == 0).all()
    assert (first[:, 84:92, 3] == 0).all() and (first[84:92, :, 3] == 0).all()


def test_jpeg_of_a_transparent_sprite_is_on_the_matte_with_a_warning(
        service: JobService) -> None:
    rgb, alpha = painted_sprite(48, 3)
    rgb[alpha == 0] = (160, 0, 200)  # the purple a new user saw through the background
    for matte, colour in (("#ffffff", (255, 255, 255)), ("#000000", (0, 0, 0))):
        job, _ = service.submit(encode(rgb, alpha), filename="hero.png",
                                params=small_params(output_format="jpeg", matte=matte))
        done = _finished(service, job.id)
        assert done.status == JobStatus.succeeded, done.error
        assert any("matte " + matte in w for w in done.output.warnings)
        out = _result(service, job.id).astype(int)
        assert np.abs(out[:6, :6] - colour).max() <= 6  # the corners show the matte
        assert np.abs(out[48, 48] - rgb[24, 24]).max() <= 24  # the sprite itself


def test_replace_in_a_unity_and_godot_repo_keeps_guid_scales_ppu_and_leaves_import(
        service: JobService, tmp_path: Path) -> None:
    from tests.core.test_sheets import UNITY_META
    from tests.storage.test_sidecars import GODOT_IMPORT

    rgb, alpha = painted_sprite(32, 5)
    art = tmp_path / "repo" / "art"
    art.mkdir(parents=True)
    (art / "hero.png").write_bytes(encode(rgb, alpha))
    (art / "hero.png.meta").write_text(UNITY_META)
    (art / "hero.png.import").write_text(GODOT_IMPORT)
    job, _ = service.submit(encode(rgb, alpha), filename="hero.png",
                            params=small_params(asset_type="sprite"),
                            target=TargetSpec(repo="game", path="art/hero.png",
                                              naming="replace"))
    done = _finished(service, job.id)
    assert done.status == JobStatus.succeeded, done.error
    assert Image.open(art / "hero.png").size == (64, 64)
    meta = (art / "hero.png.meta").read_text()
    assert "guid: 00000000000000001000000000000000\n" in meta
    assert "  spritePixelsToUnits: 32\n" in meta  # 16 x 2: same size in the game
    assert "  spriteBorder: {x: 4, y: 6, z: 8, w: 10}\n" in meta
    assert (art / "hero.png.import").read_text() == GODOT_IMPORT
    assert done.output.sidecars == ["art/hero.png.meta"]
    assert any("GUID kept" in n for n in done.output.notes)
    assert any("Godot .import left" in n for n in done.output.notes)


def test_detected_pixel_art_at_a_fractional_scale_falls_back_with_its_reason(
        service: JobService) -> None:
    rgb, alpha = pixel_sprite(16, 2)
    job, _ = service.submit(encode(rgb, alpha), filename="gem.png",
                            params=small_params(scale=1.5))
    assert job.params.asset_type == "sprite"
    assert "not an integer scale" in (job.params.asset_reason or "")


def test_sixteen_bit_height_map_job_stays_sixteen_bit_and_never_diffuses(
        gpu_service: tuple[JobService, Any]) -> None:
    from tests.core.asset_factory import height16

    svc, emu = gpu_service
    grey = height16(48, 6)[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")  # mode I;16
    job, _ = svc.submit(buf.getvalue(), filename="cliff_height.png", params=small_params())
    done = _finished(svc, job.id)
    assert done.status == JobStatus.succeeded, done.error
    assert done.params.asset_type == "mask" and done.output.backend == "none"
    assert emu.stats("upscale")["submitted"] == 0
    path, _ = svc.result(job.id)
    out = Image.open(path)
    assert out.mode.startswith("I;16") and out.size == (96, 96)
    values = np.asarray(out)
    assert len(np.unique(values)) > 256  # 16-bit precision, not 8-bit steps
    assert not any("reduced" in w or "lanczos was used" in w for w in done.output.warnings)
