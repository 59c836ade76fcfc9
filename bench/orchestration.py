"""How close does the RunPod backend get to the ideal wall time of a tiled job?

Runs T tiles through ``RunPodBackend.refine`` against an emulated endpoint (``aat emulate``
in its own process, as a remote endpoint would be) with N workers and a fixed per-tile
latency, once clean and once with a share of transient faults (429, 5xx, FAILED-retryable,
COMPLETED-without-output, TIMED_OUT, an equal part each), side by side in one run.
The ideal is ``ceil(T / N) * latency``: N workers busy all the time, zero overhead.
Efficiency = ideal / measured. The last line printed is one JSON object.

    .venv/bin/python bench/orchestration.py [--tiles 64] [--workers 8] [--latency 0.5]
                                            [--fault-rate 0.1] [--tiles-per-job 1]

``--tiles-per-job 2`` lets tiles waiting for a slot share RunPod jobs
(``runpod_tiles_per_job``); the emulated latency is per tile, so a job of two takes twice as long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proc_helpers import ServiceProcess, aat_command, free_port  # noqa: E402

from service.backends.base import RefineOptions, TileTask  # noqa: E402
from service.backends.runpod import RunPodBackend  # noqa: E402
from service.core.logs import configure_logging  # noqa: E402
from service.settings import Settings  # noqa: E402
from workers.emulator import EmulatorServer, EndpointConfig, Faults, resolve_handler  # noqa: E402
from workers.emulator.echo import tint  # noqa: E402

API_KEY = "bench-key"
TRANSIENT = ("429", "5xx", "failed", "no_output", "timeout")  # what a client must retry


def emulator_process(port: int, workers: int, latency: float, faults: str, seed: int
                     ) -> ServiceProcess:
    """`aat emulate` on ``port`` in its own process, like a remote endpoint; ready (with)
    when its stats answer."""
    return ServiceProcess(
        aat_command("emulate", "--worker", "upscale=echo", "--port", str(port),
                    "--workers", str(workers), "--latency", str(latency), "--faults", faults,
                    "--seed", str(seed), "--api-key", API_KEY),
        scrub=False, ready_url=f"http://127.0.0.1:{port}/_emulator/stats", timeout=30,
        poll_s=0.05, stop_timeout=10)


@contextlib.contextmanager
def emulator(workers: int, latency: float, faults: str, seed: int, in_process: bool
             ) -> Iterator[str]:
    """A fresh emulated endpoint ``upscale``; yields its base URL."""
    if in_process:
        config = EndpointConfig(handler=resolve_handler("echo"), workers=workers,
                                latency_s=latency, faults=Faults.parse(faults, seed=seed))
        with EmulatorServer({"upscale": config}, api_key=API_KEY) as emu:
            yield emu.url
        return
    port = free_port()
    with emulator_process(port, workers, latency, faults, seed):
        yield f"http://127.0.0.1:{port}/v2"


def run_once(tiles: list[TileTask], workers: int, latency: float, faults: str, seed: int,
             in_process: bool, tiles_per_job: int = 1) -> dict[str, Any]:
    """One timed run of every tile on a fresh emulator; returns time, successes, jobs."""
    with emulator(workers, latency, faults, seed, in_process) as url:
        settings = Settings(runpod_api_key=SecretStr(API_KEY), runpod_base_url=url,
                            runpod_upscale_endpoint_id="upscale", backend="runpod",
                            runpod_tiles_per_job=tiles_per_job)
        backend = RunPodBackend(settings)
        options = RefineOptions()  # one job's settings, as the pipeline passes them

        async def go() -> tuple[list[Any], float]:
            try:
                # /health once, before the clock starts; as many tiles in flight as the
                # pipeline keeps
                sem = asyncio.Semaphore(await backend.max_concurrency())

                async def one(tile: TileTask) -> Any:
                    async with sem:
                        return await backend.refine(tile, options)

                started = time.perf_counter()
                results = await asyncio.gather(*(one(t) for t in tiles), return_exceptions=True)
                return list(results), time.perf_counter() - started
            finally:
                await backend.aclose()

        results, elapsed = asyncio.run(go())
        stats = httpx.get(url.removesuffix("/v2") + "/_emulator/stats/upscale").json()
    ok = sum(
        1 for tile, r in zip(tiles, results, strict=True)
        if not isinstance(r, BaseException) and np.array_equal(r.image, tint(tile.image, tile.seed))
    )
    return {"seconds": elapsed, "tiles_ok": ok, "runpod_jobs": stats["submitted"],
            "status_polls": stats["status_polls"],
            "status_polls_per_tile": round(stats["status_polls"] / len(tiles), 2),
            "faults": stats["faults"], "max_running": stats["max_running"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tiles-per-job", type=int, default=1, choices=range(1, 5),
                        help="runpod_tiles_per_job: tiles waiting for a slot share a job")
    parser.add_argument("--in-process", action="store_true",
                        help="run the emulator in a thread of this process")
    args = parser.parse_args()
    configure_logging("ERROR")

    rng = np.random.default_rng(args.seed)
    tiles = [TileTask(f"t{i}", rng.integers(0, 250, (64, 64, 3), dtype=np.uint8), "", i)
             for i in range(args.tiles)]
    ideal = math.ceil(args.tiles / args.workers) * args.latency
    clean = run_once(tiles, args.workers, args.latency, "", args.seed, args.in_process,
                     args.tiles_per_job)
    print(f"clean : {clean}")
    share = args.fault_rate / len(TRANSIENT)
    faulty = run_once(tiles, args.workers, args.latency,
                      ",".join(f"{kind}={share:g}" for kind in TRANSIENT), args.seed,
                      args.in_process, args.tiles_per_job)
    print(f"faulty: {faulty}")
    print(json.dumps({
        "tiles": args.tiles, "workers": args.workers, "latency_s": args.latency,
        "fault_rate": args.fault_rate, "tiles_per_job": args.tiles_per_job,
        "ideal_s": round(ideal, 3),
        "clean_s": round(clean["seconds"], 3),
        "faulty_s": round(faulty["seconds"], 3),
        "efficiency_clean": round(ideal / clean["seconds"], 3),
        "efficiency_faulty": round(ideal / faulty["seconds"], 3),
        "tiles_ok": {"clean": clean["tiles_ok"], "faulty": faulty["tiles_ok"]},
        "runpod_jobs_submitted": {"clean": clean["runpod_jobs"], "faulty": faulty["runpod_jobs"]},
        "round_trips_clean": clean["runpod_jobs"] + clean["status_polls"],
    }))


if __name__ == "__main__":
    main()
