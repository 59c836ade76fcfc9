"""What do the CPU base upscalers cost next to plain Lanczos, and does tiling keep memory flat?

Side by side in one process, on the same image (the tileable example repeated to --size px):

* time of each available upscaler for a x2 upscale, as a ratio to Lanczos;
* for the model upscalers, time and peak resident memory of the tiled path vs one model call on
  the whole image, each in a fresh child process (RSS growth over the loaded image); the memory
  ratio shows what tiling saves;
* the alpha matte (push-pull bleed) as a ratio to the Lanczos upscale it precedes.

The last line printed is one JSON object.

    .venv/bin/python bench/upscalers.py [--size 512] [--repeat 3] [--x4plus]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.core.alpha import bleed_colour  # noqa: E402
from service.upscalers.base import ModelUpscaler  # noqa: E402
from service.upscalers.realesrgan import hide_native_progress  # noqa: E402
from service.upscalers.registry import describe, get_upscaler  # noqa: E402


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stone(size: int) -> np.ndarray:
    tile = np.asarray(Image.open(ROOT / "examples" / "stone-tileable.png").convert("RGB"))
    reps = -(-size // tile.shape[0])
    return np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[:size, :size])


def child(name: str, how: str, size: int) -> None:
    """Run one x2 upscale and print the growth of peak RSS in bytes (Linux /proc)."""
    img = stone(size)
    up = get_upscaler(name)
    assert isinstance(up, ModelUpscaler)
    up._step(img[:32, :32], 2)  # load the model first: its weights are not what we measure
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _proc_kib("VmRSS")
    if how == "tiled":
        up.upscale(img, size * 2, size * 2)
    else:
        up._step(img, 2)
    print((_proc_kib("VmHWM") - before) * 1024)


def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def peak_rss(name: str, how: str, size: int) -> int:
    out = subprocess.run([sys.executable, __file__, "--child", name, how, "--size", str(size)],
                         capture_output=True, text=True, check=True)
    return max(1, int(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--x4plus", action="store_true", help="also time realesrgan-x4plus")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    hide_native_progress(True)
    if args.child:
        child(args.child[0], args.child[1], args.size)
        return
    img = stone(args.size)
    out = args.size * 2
    result: dict[str, object] = {"size": args.size, "scale": 2}
    base = best_of(lambda: get_upscaler("lanczos").upscale(img, out, out), args.repeat)
    print(f"lanczos x2 {args.size}px: {base * 1000:.1f} ms (baseline)")
    for name, ok, why in describe():
        if name in ("lanczos", "nearest") or (name == "realesrgan-x4plus" and not args.x4plus):
            continue
        if not ok:
            print(f"{name}: unavailable ({why})")
            continue
        up = get_upscaler(name)
        reps_n = 1 if name == "realesrgan-x4plus" else args.repeat
        t = best_of(lambda up=up: up.upscale(img, out, out), reps_n)
        result[f"{name}_vs_lanczos_time"] = round(t / base, 2)
        line = f"{name}: {t * 1000:.0f} ms = {t / base:.1f}x lanczos"
        if isinstance(up, ModelUpscaler) and name != "realesrgan-x4plus":
            whole_t = best_of(lambda up=up: up._step(img, 2), reps_n)
            tiled_mem, whole_mem = peak_rss(name, "tiled", args.size), peak_rss(name, "whole",
                                                                                 args.size)
            result[f"{name}_tiled_vs_whole_time"] = round(t / whole_t, 2)
            result[f"{name}_tiled_vs_whole_peak_rss"] = round(tiled_mem / whole_mem, 2)
            line += (f"; tiled/whole-image time {t / whole_t:.2f}, peak RSS growth "
                     f"{tiled_mem / 2**20:.0f}/{whole_mem / 2**20:.0f} MiB = "
                     f"{tiled_mem / whole_mem:.2f}")
        print(line)
    alpha = np.zeros(img.shape[:2], np.uint8)
    alpha[args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = 255
    bleed = best_of(lambda: bleed_colour(img, alpha), args.repeat)
    result["alpha_matte_vs_lanczos_time"] = round(bleed / base, 2)
    print(f"alpha matte (push-pull bleed): {bleed * 1000:.1f} ms = {bleed / base:.2f}x lanczos")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
