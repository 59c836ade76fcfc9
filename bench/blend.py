"""Benchmark: blending 81 tiles into an 8192x8192 RGBA uint8 image, side by side with
(a) copying the output buffer once (the memory-bandwidth floor) and (b) a naive full-frame float32
accumulator like the seed product's (linear ramps, sum of weights, divide).

Run: .venv/bin/python bench/blend.py [--size 8192] [--tile 1024] [--overlap 128] [--repeat 5]
The last line printed is one JSON object with ours_s, naive_s, memcpy_s, ratio_vs_memcpy,
speedup_vs_naive and peak_rss_mb (the process peak after our blend, source image included;
the naive baseline runs last so it does not inflate it).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.core.blending import blend_tiles  # noqa: E402
from service.core.logs import configure_logging  # noqa: E402
from service.core.tiling import TilePlan, plan_tiles  # noqa: E402

log = logging.getLogger("bench.blend")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall time of each function, run in turns so that load from other processes on a
    shared machine hits all of them alike. Results are dropped at once (bounded memory)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def naive_blend(plan: TilePlan, get_tile: Callable[[int], np.ndarray], channels: int) -> np.ndarray:
    """The seed's pass-1 merge: per-tile weight maps with linear ramps of the nominal overlap on
    inner edges, full-frame float32 sums of tile*weight and of weight, then divide."""
    acc = np.zeros((plan.height, plan.width, channels), np.float32)
    wsum = np.zeros((plan.height, plan.width, 1), np.float32)
    ramp = np.linspace(0.0, 1.0, plan.overlap, endpoint=False, dtype=np.float32)
    for tile in plan.tiles:
        wx, wy = np.ones(tile.w, np.float32), np.ones(tile.h, np.float32)
        for w, start, size, length in ((wx, tile.x, tile.w, plan.width), (wy, tile.y, tile.h, plan.height)):
            if start > 0:
                w[:plan.overlap] *= ramp
            if start + size < length:
                w[-plan.overlap:] *= ramp[::-1]
        weight = wy[:, None, None] * wx[None, :, None]
        box = (slice(tile.y, tile.y + tile.h), slice(tile.x, tile.x + tile.w))
        acc[box] += get_tile(tile.index) * weight
        wsum[box] += weight
    wsum[wsum == 0] = 1.0
    return np.clip(acc / wsum, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    configure_logging("INFO")

    size, channels = args.size, 4
    src = np.random.default_rng(0).integers(0, 256, (size, size, channels), dtype=np.uint8)
    plan = plan_tiles(size, size, args.tile, args.overlap)

    def get_tile(i: int) -> np.ndarray:
        t = plan.tiles[i]
        return src[t.y:t.y + t.h, t.x:t.x + t.w]

    log.info("%dx%d RGBA uint8, %d tiles of %d px, overlap %d", size, size, len(plan.tiles),
             args.tile, args.overlap)
    def ours() -> np.ndarray:
        return blend_tiles(plan, get_tile, channels=channels, dtype=np.uint8)

    base_rss = _peak_rss_mb()  # interpreter + source image
    out = ours()
    peak = _peak_rss_mb()  # + one output + our working set
    assert np.array_equal(out, src), "identity blend must be exact"
    timing = _interleaved({"ours": ours, "memcpy": out.copy}, args.repeat)
    ours_s, memcpy_s = timing["ours"], timing["memcpy"]
    log.info("ours %.3f s, memcpy %.3f s, peak RSS %.0f MB (%.0f MB before blending)",
             ours_s, memcpy_s, peak, base_rss)
    del out
    start = time.perf_counter()
    naive = naive_blend(plan, get_tile, channels)
    naive_s = time.perf_counter() - start
    log.info("naive %.3f s (max |naive - source| = %d, peak RSS now %.0f MB)", naive_s,
             int(np.abs(naive.astype(np.int16) - src).max()), _peak_rss_mb())
    print(json.dumps({
        "size": size, "tiles": len(plan.tiles),
        "ours_s": round(ours_s, 4), "naive_s": round(naive_s, 4), "memcpy_s": round(memcpy_s, 4),
        "ratio_vs_memcpy": round(ours_s / memcpy_s, 2),
        "speedup_vs_naive": round(naive_s / ours_s, 2),
        "peak_rss_mb": round(peak, 1), "rss_before_blend_mb": round(base_rss, 1),
    }))


if __name__ == "__main__":
    main()
