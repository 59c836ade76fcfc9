"""PNG compression level: encode time and file size per zlib level, side by side.

Three synthetic 4096x4096 RGB images stand for the range of final outputs: ``smooth`` (a small
texture upscaled with Lanczos: flat shading, compresses well), ``bench`` (what bench/e2e.py
delivers: a bicubic upscale of noise) and ``detailed`` (the smooth image plus fine grain, like
diffusion detail). Each is encoded whole with Pillow (what ``aat upscale`` does) and as a
:class:`~service.core.pngstream.PngStream` in 1024-row bands (what a job does while tiles are in
flight; only the last band is left after the last tile). Times and sizes are also printed
relative to level 6 (Pillow's default). The last line printed is one JSON object.

    .venv/bin/python bench/png_levels.py [--side 4096] [--levels 1,3,6,9]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.core.imaging import encode_image  # noqa: E402
from service.core.pngstream import PngStream  # noqa: E402


def images(side: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    stone = Image.open(ROOT / "examples" / "stone-tileable.png").convert("RGB")
    smooth = np.asarray(stone.resize((side, side), Image.Resampling.LANCZOS))
    noise = Image.fromarray(rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8))
    bench = np.asarray(noise.resize((side, side), Image.Resampling.BICUBIC))
    grain = rng.normal(0.0, 4.0, smooth.shape)
    detailed = np.clip(np.rint(smooth + grain), 0, 255).astype(np.uint8)
    return {"smooth": smooth, "bench": bench, "detailed": detailed}


def streamed(image: np.ndarray, level: int, band: int = 1024) -> bytes:
    stream = PngStream(image.shape[1], image.shape[0], 3, compress_level=level)
    for y in range(0, image.shape[0], band):
        stream.add(image[y:y + band])
    return stream.finish()


def timed(fn, *args) -> tuple[float, bytes]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    data = fn(*args)
    return time.perf_counter() - start, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--levels", default="1,3,6,9")
    args = ap.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    results: dict[str, dict[int, dict[str, float]]] = {}
    for name, image in images(args.side).items():
        rows = results[name] = {}
        for level in levels:
            t_whole, whole = timed(lambda im, lv: encode_image(im, None, "png",
                                                               compress_level=lv), image, level)
            t_stream, data = timed(streamed, image, level)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
            rows[level] = {"whole_s": round(t_whole, 2), "stream_s": round(t_stream, 2),
                           "mb": round(len(whole) / 1e6, 2), "stream_mb": round(len(data) / 1e6, 2)}
        ref = rows.get(6)
        for level, row in rows.items():
            if ref:
                row["time_vs_6"] = round(row["whole_s"] / ref["whole_s"], 2)
                row["size_vs_6"] = round(row["mb"] / ref["mb"], 2)
            print(f"{name:9s} level {level}: whole {row['whole_s']:5.2f} s {row['mb']:6.2f} MB  "
                  f"stream {row['stream_s']:5.2f} s {row['stream_mb']:6.2f} MB  "
                  f"(vs level 6: time {row.get('time_vs_6')}, size {row.get('size_vs_6')})")
    print(json.dumps({"side": args.side, **results}))


if __name__ == "__main__":
    main()
