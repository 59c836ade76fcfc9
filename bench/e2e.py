"""End-to-end wall time of one large job vs the ideal from the GPU latencies, per executor.

One 4096x4096 job (a 2048x2048 input at scale 2, 1024 px tiles with 128 px overlap: 25 tiles)
is captioned and refined on emulated RunPod endpoints (``workers/emulator/__init__.py`` in its own
process, echo worker, N workers per endpoint, fixed latencies), first with the embedded
executor, then with a Celery runner (`aat runner`, real Redis). Each run starts from an empty
data directory, so nothing comes from the tile cache.

ideal = caption_latency + ceil(tiles / N) * refine_latency: N GPUs per endpoint busy all the
time, zero overhead; a tile's refine needs its caption, so the first caption is unavoidable and
the rest overlap the refines (which is how the orchestrator runs them). efficiency = ideal /
wall time, where
the wall time runs from submit to `succeeded` and includes the CPU stages (decode, pre-upscale,
blend, colour fix, encode, delivery), whose seconds are printed too, with the seconds spent after
the last tile came back and the output's size. The last line printed is one JSON object.

    .venv/bin/python bench/e2e.py [--workers 8] [--caption-latency 1] [--refine-latency 6]
                                  [--colour-fix wavelet] [--executors embedded,celery]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proc_helpers import ServiceProcess, free_port  # noqa: E402

from service.core.jobs import TargetSpec  # noqa: E402
from service.core.params import UpscaleParams  # noqa: E402
from service.jobs.service import build_job_service  # noqa: E402
from service.settings import load_settings  # noqa: E402

API_KEY = "bench-key"
EMULATOR = """
import sys
from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler
port, workers, lat_c, lat_r = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
key = sys.argv[5]
EmulatorServer({
    "upscale": EndpointConfig(handler=resolve_handler("echo"), workers=workers, latency_s=lat_r),
    "caption": EndpointConfig(handler=resolve_handler("echo"), workers=workers, latency_s=lat_c),
}, api_key=key, port=port).serve_forever()
"""


def input_png(side: int) -> bytes:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize((side, side), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def env_for(base_url: str, data_dir: Path, repo: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "AAT_DATA_DIR": str(data_dir), "AAT_BACKEND": "runpod",
            "RUNPOD_API_KEY": API_KEY, "AAT_RUNPOD_BASE_URL": base_url,
            "AAT_RUNPOD_UPSCALE_ENDPOINT_ID": "upscale", "AAT_RUNPOD_CAPTION_ENDPOINT_ID": "caption",
            "AAT_REPOS": json.dumps({"game": str(repo)}), **extra}


def run_job(executor: str, base_url: str, work: Path, data: bytes, params: UpscaleParams
            ) -> dict[str, Any]:
    data_dir, repo = work / executor / "data", work / executor / "repo"
    repo.mkdir(parents=True)
    extra: dict[str, str] = {}
    runner = None
    if executor == "celery":
        extra = {"AAT_BROKER_URL": os.environ.get("AAT_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
                 "AAT_CELERY_QUEUE": f"aat-bench-{secrets.token_hex(4)}"}
    env = env_for(base_url, data_dir, repo, extra)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AAT_", "RUNPOD_"))})
    settings = load_settings()
    service = build_job_service(settings)
    if executor == "celery":
        runner = ServiceProcess(
            [sys.executable, "-c", "from service.cli import main; main()", "runner", "-c", "1",
             "--loglevel", "WARNING"], env=env, scrub=False, new_session=True,
            stop_timeout=60).start()
        time.sleep(4.0)  # let the runner connect before the clock starts
    service.start()
    try:
        start = time.monotonic()
        job, _ = service.submit(data, filename="bench.png", params=params,
                                target=TargetSpec(repo="game", path="bench.png"))
        while not (current := service.get(job.id)).status.terminal:
            time.sleep(0.05)
        wall = time.monotonic() - start
    finally:
        service.stop()
        if runner is not None:
            runner.stop()
        for key in env:
            if key.startswith(("AAT_", "RUNPOD_")):
                os.environ.pop(key, None)
    if current.status != "succeeded":
        raise SystemExit(f"{executor}: job ended {current.status}: {current.error}")
    timings = service.store.get(job.id).timings
    delivered = repo / str(current.output.delivered_path if current.output else "")
    return {"wall_s": round(wall, 2), "timings_s": timings, "tiles": len(service.tiles(job.id)),
            "runpod_jobs": current.cost.runpod_jobs,
            "output_mb": round(delivered.stat().st_size / 1e6, 2) if delivered.is_file() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-side", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--caption-latency", type=float, default=1.0)
    ap.add_argument("--refine-latency", type=float, default=6.0)
    ap.add_argument("--colour-fix", default="wavelet", choices=["none", "wavelet", "adain"])
    ap.add_argument("--executors", default="embedded,celery")
    args = ap.parse_args()
    params = UpscaleParams(scale=2, tile_size=1024, overlap=128, upscaler="lanczos",
                           caption=True, seed=1, colour_fix=args.colour_fix)
    data = input_png(args.input_side)
    port = free_port()
    emulator = ServiceProcess([sys.executable, "-c", EMULATOR, str(port), str(args.workers),
                               str(args.caption_latency), str(args.refine_latency), API_KEY],
                              scrub=False, ready_url=f"http://127.0.0.1:{port}/_emulator/stats",
                              timeout=30, stop_timeout=10)
    results: dict[str, Any] = {}
    with emulator, tempfile.TemporaryDirectory(prefix="aat-bench-") as tmp:
        for executor in args.executors.split(","):
            results[executor] = run_job(executor, f"http://127.0.0.1:{port}/v2",
                                        Path(tmp), data, params)
    tiles = next(iter(results.values()))["tiles"]
    waves = math.ceil(tiles / args.workers)
    ideal = args.caption_latency + waves * args.refine_latency
    side = args.input_side * 2
    for name, res in results.items():
        res["efficiency"] = round(ideal / res["wall_s"], 3)
        t = res["timings_s"]
        gpu = t.get("caption", 0.0) + t.get("refine", 0.0)
        res["gpu_stages_s"] = round(gpu, 2)
        res["gpu_stage_efficiency"] = round(ideal / gpu, 3) if gpu else None
        # CPU left after the last tile came back: blend (incl. waiting for the assembly),
        # encode, deliver
        res["after_last_tile_s"] = round(sum(t.get(k, 0.0) for k in ("blend", "encode",
                                                                    "deliver")), 2)
        print(f"{name:9s} wall {res['wall_s']:7.2f} s  ideal {ideal:6.2f} s  efficiency "
              f"{res['efficiency']:.3f}  (caption+refine {gpu:.2f} s -> "
              f"{res['gpu_stage_efficiency']}; after the last tile {res['after_last_tile_s']} s; "
              f"output {res['output_mb']} MB; stages {t})")
    print(json.dumps({"image": f"{side}x{side}", "tiles": tiles, "workers": args.workers,
                      "caption_latency_s": args.caption_latency,
                      "refine_latency_s": args.refine_latency, "colour_fix": args.colour_fix,
                      "ideal_s": round(ideal, 2), **results}))


if __name__ == "__main__":
    main()
