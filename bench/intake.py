"""Intake throughput: `POST /v1/jobs` next to `GET /v1/health`, 20 concurrent clients.

Starts `aat serve` (API only, SQLite store, jobs dispatched to a private Redis queue that no
runner consumes, so only intake is measured) in its own process, then drives it over loopback
with an asyncio httpx client, alternating batches of the liveness route (the floor: routing,
auth, JSON) and submissions of distinct small PNGs (stream, probe, decode, hash, store, insert,
dispatch), so both see the same machine load.
The last line printed is one JSON object with both sets of figures and their ratios.

    python bench/intake.py [--requests 400] [--concurrency 20] [--side 64]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from proc_helpers import ServiceProcess, aat_service  # noqa: E402

REDIS = os.environ.get("AAT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _png(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def start_server(data_dir: Path, queue: str) -> ServiceProcess:
    """`aat serve` on a free port (output discarded), started and stopped by ``with``."""
    return aat_service("serve", "--log-level", "warning",
                       env={"AAT_DATA_DIR": str(data_dir), "AAT_BROKER_URL": REDIS,
                            "AAT_CELERY_QUEUE": queue, "AAT_BACKEND": "none"})


async def drive(url: str, requests: list[dict], concurrency: int, expect: set[int],
                ) -> tuple[list[float], float]:
    """Send ``requests`` with ``concurrency`` workers: (latencies in ms, wall seconds)."""
    latencies: list[float] = []
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for req in requests:
        queue.put_nowait(req)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            req = queue.get_nowait()
            start = time.perf_counter()
            resp = await client.request(**req)
            latencies.append((time.perf_counter() - start) * 1000)
            if resp.status_code not in expect:
                raise SystemExit(f"{req['method']} {req['url']}: {resp.status_code} {resp.text}")

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        begin = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, time.perf_counter() - begin


def figures(latencies: list[float], wall: float) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2)}


def measure(url: str, images: list[bytes], concurrency: int, rounds: int,
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Alternate health and submit batches so both see the same machine load."""
    health: tuple[list[float], float] = ([], 0.0)
    submit: tuple[list[float], float] = ([], 0.0)
    per_round = len(images) // rounds
    for r in range(rounds):
        batch = images[r * per_round:(r + 1) * per_round]
        lat, wall = asyncio.run(drive(url, [{"method": "GET", "url": "/v1/health"}]
                                      * len(batch), concurrency, {200}))
        health = (health[0] + lat, health[1] + wall)
        posts = [{"method": "POST", "url": "/v1/jobs", "content": img,
                  "params": {"filename": f"b{r}_{i}.png", "scale": "2"},
                  "headers": {"Content-Type": "image/png"}} for i, img in enumerate(batch)]
        lat, wall = asyncio.run(drive(url, posts, concurrency, {202}))
        submit = (submit[0] + lat, submit[1] + wall)
    return figures(*submit), figures(*health)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--side", type=int, default=64, help="PNG side in px")
    parser.add_argument("--rounds", type=int, default=4, help="alternating batches")
    args = parser.parse_args()
    queue = f"aat-bench-{secrets.token_hex(4)}"
    images = [_png(args.side, seed) for seed in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with start_server(Path(tmp) / "data", queue) as server:
                url = str(server.url)
                asyncio.run(drive(url, [{"method": "GET", "url": "/v1/health"}] * 50,
                                  args.concurrency, {200}))  # warm-up
                submit, health = measure(url, images, args.concurrency, args.rounds)
        finally:
            _drop_queue(queue)
    print(f"GET  /v1/health: {health}")
    print(f"POST /v1/jobs  : {submit}  ({args.side}x{args.side} PNG, {len(images[0])} bytes)")
    print(json.dumps({
        "concurrency": args.concurrency, "image_side": args.side,
        "submit": submit, "health": health,
        "ratio": {"per_s": round(submit["per_s"] / health["per_s"], 3),
                  "p50": round(submit["p50_ms"] / health["p50_ms"], 2),
                  "p99": round(submit["p99_ms"] / health["p99_ms"], 2)},
    }))


def _drop_queue(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    main()
