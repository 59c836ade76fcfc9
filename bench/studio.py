"""Benchmark: the studio's weight, what opening a huge finished job costs, and how fast a
tile's SSE event reaches the page's tile grid.

1. Page weight: every JS and CSS file the studio serves, gzip -9, summed (target < 150 KB),
   next to the same files uncompressed.
2. Open a finished 16384x16384 job (`aat up` with backend none: a 2048 px image at scale 8)
   in Debian's Chromium and count the bytes on the wire (CDP ``encodedDataLength``, headers
   included) until the network is idle (target < 5 MB), next to the size of the full-size
   result a page without previews would download.
3. An 81-tile job (9x9 tiles of 64 px) on emulated RunPod endpoints (echo worker), watched in
   the job view: for every tile state carried by an SSE ``tiles`` event, the delay from the
   event's arrival in the page to the tile's ``data-state`` changing (median and p95, target
   p95 < 250 ms), measured in the browser with ``performance.now()``.

    .venv/bin/python bench/studio.py [--side 16384] [--chromium /usr/bin/chromium]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proc_helpers import ServiceProcess, aat_service  # noqa: E402

STATIC = ROOT / "service" / "studio" / "static"

RECORD = """
window.__sse = []; window.__dom = [];
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener("tiles", (e) => {
      const t = performance.now();
      for (const c of JSON.parse(e.data).tiles) window.__sse.push([c.index, c.state, t]);
    });
  }
};
new MutationObserver((records) => {
  const t = performance.now();
  for (const r of records) window.__dom.push([Number(r.target.dataset.index),
                                              r.target.dataset.state, t]);
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-state"]});
"""


def page_weight() -> dict[str, int]:
    files = [p for p in STATIC.rglob("*") if p.suffix in (".js", ".css")]
    raw = sum(p.stat().st_size for p in files)
    gz = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    return {"files": len(files), "raw_bytes": raw, "gzip_bytes": gz}


def start_up(root: Path, **env_extra: str) -> ServiceProcess:
    """`aat up` in ``root`` (its log ``up.log``) on a free port, started and stopped by
    ``with``."""
    env = {"AAT_DATA_DIR": str(root / "data"), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
           **env_extra}
    return aat_service("up", env=env, cwd=root, log=root / "up.log", poll_s=0.2,
                       stop_timeout=60)


def image_png(side: int, seed: int = 0) -> bytes:
    """A photo-like image: smooth gradients plus mild noise (compresses like real art)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rng = np.random.default_rng(seed)
    rgb = np.dstack([128 + 100 * np.sin(6 * xx + 3 * yy), 128 + 90 * np.cos(5 * yy),
                     128 + 80 * np.sin(4 * (xx - yy))])
    rgb += rng.normal(0, 6, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def wait_done(url: str, job_id: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return dict(job)
        time.sleep(1)
    raise SystemExit(f"job {job_id} did not finish")


def open_bytes(browser: Any, url: str, job_id: str) -> int:
    """Bytes on the wire (bodies + headers) to open the job view until the network is idle."""
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    sizes: list[float] = []
    cdp.on("Network.loadingFinished", lambda e: sizes.append(e["encodedDataLength"]))
    page.goto(f"{url}/jobs/{job_id}", timeout=600_000)
    page.wait_for_selector("[data-testid=job-status][data-status=succeeded]", timeout=600_000)
    page.wait_for_load_state("networkidle", timeout=600_000)
    page.wait_for_function("document.getElementById('grid-image').complete", timeout=600_000)
    context.close()
    return int(sum(sizes))


def tile_delays(browser: Any, url: str) -> list[float]:
    data = image_png(224, seed=1)
    job = httpx.post(f"{url}/v1/jobs", content=data, timeout=60,
                     params={"tile_size": 64, "overlap": 16, "scale": 2},
                     headers={"Content-Type": "image/png"}).json()
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    page.add_init_script(RECORD)
    page.goto(f"{url}/jobs/{job['id']}")
    page.wait_for_selector("[data-testid=job-status][data-status=succeeded]", timeout=600_000)
    page.wait_for_selector("[data-testid=tile]", timeout=60_000)
    sse, dom = page.evaluate("[window.__sse, window.__dom]")
    context.close()
    delays = []
    for index, state, t_event in sse:
        after = [t for i, s, t in dom if i == index and s == state and t >= t_event]
        if after:
            delays.append(min(after) - t_event)
    if len({i for i, _s, _t in sse}) != 81:
        raise SystemExit(f"expected 81 tiles in the SSE events, got {len(sse)} events")
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from workers.emulator import EmulatorServer, EndpointConfig, Faults
    from workers.emulator.echo import make_handler

    weight = page_weight()
    print(f"page weight: {weight['files']} JS/CSS files, {weight['raw_bytes']} B, "
          f"{weight['gzip_bytes']} B gzipped (target < 153600)")
    work = Path(tempfile.mkdtemp(prefix="aat-bench-studio-"))
    (work / "big").mkdir()
    with start_up(work / "big", AAT_BACKEND="none") as up:
        url = str(up.url)
        started = time.monotonic()
        job = httpx.post(f"{url}/v1/jobs", content=image_png(args.side // 8), timeout=300,
                         params={"scale": 8, "upscaler": "lanczos"},
                         headers={"Content-Type": "image/png"}).json()
        job = wait_done(url, job["id"])
        full = len(httpx.get(f"{url}/v1/jobs/{job['id']}/result", timeout=600).content)
        print(f"{job['output']['width']}x{job['output']['height']} job done in "
              f"{time.monotonic() - started:.0f} s; full-size result {full} B")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium)
            first = open_bytes(browser, url, job["id"])  # previews are made on this visit
            again = open_bytes(browser, url, job["id"])
            browser.close()
    print(f"open the finished job: {first} B on the wire (first visit), {again} B (again)")

    handler = make_handler(models_dir=work / "loras")
    configs = {eid: EndpointConfig(handler=handler, workers=4, latency_s=0.05,
                                   faults=Faults.parse("", retry_after_s=0.01))
               for eid in ("upscale", "caption")}
    emulator = EmulatorServer(configs, api_key="bench-" + secrets.token_hex(8))
    emulator.start()
    (work / "tiles").mkdir()
    try:
        with start_up(work / "tiles", AAT_BACKEND="runpod", RUNPOD_API_KEY=emulator.api_key,
                      AAT_RUNPOD_BASE_URL=emulator.url, RUNPOD_UPSCALE_ENDPOINT_ID="upscale",
                      RUNPOD_CAPTION_ENDPOINT_ID="caption") as up, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium)
            delays = tile_delays(browser, str(up.url))
            browser.close()
    finally:
        emulator.stop()
    delays.sort()
    median = statistics.median(delays)
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
    print(f"81-tile job: {len(delays)} tile state changes, SSE event -> data-state "
          f"median {median:.2f} ms, p95 {p95:.2f} ms (target p95 < 250)")
    print(json.dumps({
        "page_weight_gzip_bytes": weight["gzip_bytes"], "page_weight_raw_bytes": weight["raw_bytes"],
        "page_weight_target_bytes": 150 * 1024,
        "open_16384_job_bytes": first, "open_16384_job_bytes_again": again,
        "open_target_bytes": 5 * 1000 * 1000, "full_result_bytes": full,
        "open_vs_full_result": round(first / full, 4),
        "tile_event_to_dom_ms_median": round(median, 2), "tile_event_to_dom_ms_p95": round(p95, 2),
        "tile_state_changes": len(delays),
    }))


if __name__ == "__main__":
    main()
