"""The pipeline's image work: prepare (pre-upscale + plan), finish (blend, seams, colour, alpha),
the streaming Assembly."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.errors import ImageError
from service.core.imaging import ImageLimits, LoadedImage, encode_image, load_image
from service.core.params import UpscaleParams
from service.core.pngstream import PngStream
from service.core.seams import lrs, tcd
from service.pipeline.assembly import Assembly, AssemblyAborted, blend, finish, fix_tile, render
from service.pipeline.prepare import prepare
from service.upscalers.registry import get_upscaler

ROOT = Path(__file__).resolve().parents[2]
STONE = np.asarray(Image.open(ROOT / "examples" / "stone-tileable.png").convert("RGB"))


def loaded(rgb: np.ndarray, alpha: np.ndarray | None = None) -> LoadedImage:
    return load_image(encode_image(rgb, alpha, "png"), limits=ImageLimits())


def small_tiles(**kw: object) -> UpscaleParams:
    return UpscaleParams(tile_size=96, overlap=24, **kw)  # type: ignore[arg-type]


def test_backend_none_is_the_base_upscale_on_a_tile_grid() -> None:
    prepared = prepare(loaded(STONE), small_tiles(scale=2, upscaler="lanczos"),
                       get_upscaler("lanczos"))
    assert len(prepared.plan.tiles) >= 9 and (prepared.width, prepared.height) == (256, 256)
    np.testing.assert_array_equal(prepared.base, get_upscaler("lanczos").upscale(STONE, 256, 256))
    out = finish(prepared)
    np.testing.assert_array_equal(out.rgb, prepared.base)
    assert out.alpha is None and out.model == "lanczos3"


def test_identity_refined_tiles_blend_back_exactly() -> None:
    prepared = prepare(loaded(STONE), small_tiles(scale=1.5), get_upscaler("anime4k"))
    refined = {t.index: prepared.tile(t.index) for t in prepared.plan.tiles}
    np.testing.assert_array_equal(blend(prepared, refined), prepared.base)
    np.testing.assert_array_equal(finish(prepared, refined).rgb, prepared.base)


@pytest.mark.parametrize(("mode", "drift_left"), [("wavelet", 2.0), ("none", 8.0)])
def test_colour_fix_pulls_drifting_tiles_back(mode: str, drift_left: float) -> None:
    params = small_tiles(scale=2, colour_fix=mode)
    prepared = prepare(loaded(STONE), params, get_upscaler("lanczos"))
    refined = {}
    for t in prepared.plan.tiles:  # every tile drifts by its own tint, as diffusion tiles do
        tint = np.array([20, -10, 15]) * (1 if t.index % 2 else -1)
        refined[t.index] = np.clip(prepared.tile(t.index).astype(int) + tint, 0, 255).astype(
            np.uint8)
    out = finish(prepared, refined, params)
    drift = np.abs(out.rgb.astype(int) - prepared.base).mean()
    assert (drift < drift_left) if mode == "wavelet" else (drift > drift_left)


@pytest.mark.parametrize("seam_fix", ["band", "offset"])
def test_seam_fix_pass(seam_fix: str) -> None:
    params = small_tiles(scale=2, seam_fix=seam_fix)
    prepared = prepare(loaded(STONE), params, get_upscaler("lanczos"))
    fix_plan = prepared.seam_fix_plan()
    assert fix_plan is not None and fix_plan.tiles
    np.testing.assert_array_equal(finish(prepared).rgb, prepared.base)  # identity tiles
    grey = {t.index: np.full((t.h, t.w, 3), 128, np.uint8) for t in fix_plan.tiles}
    out = finish(prepared, None, params, seam_refined=grey).rgb
    changed = np.abs(out.astype(int) - prepared.base).sum(axis=2) > 0
    seam_x = prepared.plan.seams_x[0]
    assert changed[:, seam_x].mean() > 0.9  # the seam line itself was redrawn


def test_tileable_render_stays_tileable() -> None:
    params = small_tiles(scale=2, tileable=True, seam_fix="offset")
    up = get_upscaler("anime4k")
    a = render(loaded(np.roll(STONE, (64, 64), axis=(0, 1))), params, up).rgb
    b = np.roll(render(loaded(STONE), params, up).rgb, (128, 128), axis=(0, 1))
    assert np.abs(a.astype(int) - b)[:, 124:132].mean() <= 0.5


def test_opaque_rgba_keeps_a_full_alpha_channel() -> None:
    alpha = np.full(STONE.shape[:2], 255, np.uint8)
    out = render(loaded(STONE, alpha), UpscaleParams(scale=2), get_upscaler("lanczos"))
    assert out.alpha is not None and out.alpha.shape == (256, 256) and out.alpha.min() == 255
    assert out.pixels.shape == (256, 256, 4)


def test_16_bit_input_keeps_precision_with_lanczos() -> None:
    grey = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)
    image = LoadedImage(np.dstack([grey] * 3), None, "PNG", "I;16")
    out = render(image, UpscaleParams(scale=2), get_upscaler("anime4k"))
    assert out.rgb.dtype == np.uint16 and out.model == "lanczos3"
    assert any("16-bit" in w for w in out.warnings)


def test_output_size_limit() -> None:
    with pytest.raises(ImageError) as info:
        prepare(loaded(STONE), UpscaleParams(scale=4), get_upscaler("lanczos"),
                limits=ImageLimits(max_output_side=500))
    assert info.value.code == "output_too_large"


def test_width_only_keeps_aspect_ratio() -> None:
    prepared = prepare(loaded(STONE[:64]), UpscaleParams(width=300), get_upscaler("lanczos"))
    assert (prepared.width, prepared.height) == (300, 150)


def test_16_bit_gpu_tiles_are_8_bit_and_come_back_16_bit() -> None:
    ramp = (np.linspace(0, 65535, 200 * 150).reshape(150, 200)).astype(np.uint16)
    image = LoadedImage(np.dstack([ramp] * 3), None, "PNG", "I;16")
    params = small_tiles(scale=1.0, seam_fix="band")
    prepared = prepare(image, params, get_upscaler("lanczos"))
    assert prepared.base.dtype == np.uint16
    refined = {t.index: prepared.tile(t.index) for t in prepared.plan.tiles}
    assert all(t.dtype == np.uint8 for t in refined.values())
    blended = blend(prepared, refined)
    fix_plan = prepared.seam_fix_plan()
    assert fix_plan is not None and fix_plan is prepared.seam_fix_plan()  # planned once
    seams = {i: prepared.seam_tile(blended, i) for i in range(len(fix_plan.tiles))}
    out = finish(prepared, refined, params, seam_refined=seams)
    assert out.rgb.dtype == np.uint16
    # 8-bit tiles lose the low byte but land at the 16-bit scale: within one 8-bit step
    err = np.abs(out.rgb.astype(int) - prepared.base)
    assert err.max() <= 257 and err.mean() < 100


def _drifted(prepared, index: int) -> np.ndarray:
    tint = np.array([20, -10, 15]) * (1 if index % 2 else -1)
    return np.clip(prepared.tile(index).astype(int) + tint, 0, 255).astype(np.uint8)


def test_per_tile_colour_fix_pulls_drifting_tiles_back() -> None:
    params = small_tiles(scale=2)
    prepared = prepare(loaded(STONE), params, get_upscaler("lanczos"))
    raw = {t.index: _drifted(prepared, t.index) for t in prepared.plan.tiles}
    fixed = {i: fix_tile(prepared, i, tile) for i, tile in raw.items()}
    out = finish(prepared, fixed, params, colour_fixed=True).rgb
    assert np.abs(out.astype(int) - prepared.base).mean() < 2.0
    seams = (prepared.plan.seams_x, prepared.plan.seams_y)
    assert tcd(out, prepared.base, prepared.plan) < 2.0 and lrs(out, prepared.base, *seams) <= 1.0
    drifted = finish(prepared, raw, params.model_copy(update={"colour_fix": "none"})).rgb
    assert tcd(drifted, prepared.base, prepared.plan) > 5.0


@pytest.mark.parametrize("alpha", [False, True])
def test_assembly_streams_the_same_image_as_finish(alpha: bool) -> None:
    """Refined tiles arriving out of order from another thread are colour-fixed and blended by
    the assembly: the streamed PNG holds exactly the image finish() makes, alpha included."""
    a = np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (128, 1))
    image = loaded(STONE, a if alpha else None)
    params = small_tiles(scale=2)
    prepared = prepare(image, params, get_upscaler("lanczos"))
    raw = {t.index: _drifted(prepared, t.index) for t in prepared.plan.tiles}
    fixed = {i: fix_tile(prepared, i, tile) for i, tile in raw.items()}
    stream = PngStream(prepared.width, prepared.height, 4 if alpha else 3,
                       metadata={"upscaler": "lanczos3"}, compress_level=9)
    assembly = Assembly(prepared, stream.add)
    order = sorted(fixed, key=lambda i: (i * 7) % len(fixed))[:-2]  # two never arrive
    feeder = threading.Thread(target=lambda: [assembly.put(i, raw[i]) for i in order])
    feeder.start()
    feeder.join()
    assembly.fill_missing({i: raw[i] for i in order})
    rendered = assembly.wait()
    expected = finish(prepared, {i: fixed[i] for i in order}, params, colour_fixed=True)
    np.testing.assert_array_equal(rendered.pixels, expected.pixels)
    with Image.open(io.BytesIO(stream.finish())) as im:
        assert im.mode == ("RGBA" if alpha else "RGB")
        np.testing.assert_array_equal(np.asarray(im), expected.pixels)
        assert "upscaler=lanczos3" in im.getexif()[0x010E]


def test_an_aborted_assembly_stops_waiting_and_a_short_stream_is_refused() -> None:
    prepared = prepare(loaded(STONE), small_tiles(scale=2), get_upscaler("lanczos"))
    stream = PngStream(prepared.width, prepared.height, 3)
    assembly = Assembly(prepared, stream.add)
    assembly.put(0, prepared.tile(0))
    assembly.abort()  # e.g. the job was canceled with tiles still in flight
    with pytest.raises(AssemblyAborted):
        assembly.wait()
    with pytest.raises(ValueError, match="rows were added"):
        stream.finish()  # nothing half-written can come out of it
    with pytest.raises(ValueError, match="without seam fix"):
        Assembly(prepare(loaded(STONE), small_tiles(scale=2, seam_fix="band"),
                         get_upscaler("lanczos")))


def test_png_compress_level_trades_size_for_time_not_pixels() -> None:
    big = np.asarray(Image.fromarray(STONE).resize((512, 512), Image.Resampling.LANCZOS))
    sizes = {}
    for level in (0, 1, 9):
        data = encode_image(big, None, "png", compress_level=level)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), big)
        sizes[level] = len(data)
    assert sizes[0] > sizes[1] > sizes[9]
