"""Watcher benchmark: 1,000 tiny files dropped at once, native events vs the polling observer.

Runs the real service (``aat up``, backend ``none``) and the real watcher process twice in one
run, once with OS events and once with ``--polling`` (what network drives need), and measures
from the ledger:

* delay from the moment a file became stable (its last write + the stability window) to its
  job being submitted: median and p95;
* files taken per second: files / (last file taken − burst start);
* then the same delay for files dropped one at a time into an idle watcher (``single_*``).

The last line printed is one JSON object: the events run's figures at the top level, both runs
in ``runs`` and the events/polling throughput ratio.

    .venv/bin/python bench/watcher.py [--files 1000] [--stable 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SINGLES = 20
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "watcher")]

from watch_helpers import drop, png_bytes  # noqa: E402
from watch_service import Service, WatcherProcess, wait_until  # noqa: E402

from watcher.ledger import Ledger  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(home: Path, service: Service, files: int, stable_s: float, polling: bool) -> dict[str, Any]:
    art = home / "art"
    art.mkdir(parents=True)
    (art / ".aat.toml").write_text('repo = "game"\n')
    watcher = WatcherProcess(home, service.url, [art], {"game": home.parent / "game"},
                             stable_s=stable_s, scan_s=30.0)
    if polling:
        watcher.env["AAT_WATCH_POLLING"] = "true"
    watcher.start()
    ledger = Ledger(watcher.data_dir / "watcher.db")
    try:
        time.sleep(2.0)  # the watcher is up and its start-up scan is done
        blobs = [png_bytes(n + (10_000 if polling else 0)) for n in range(files)]
        start = time.time()
        for n, blob in enumerate(blobs):
            drop(art / f"d{n % 10}" / f"s{n % 7}" / f"t{n:05d}.png", blob)
        dropped = time.time()
        wait_until(lambda: _sent(ledger) == files, 300, f"{files} files submitted")
        entries = ledger.entries()
        for n in range(SINGLES):  # then one file at a time, with the service idle
            drop(art / "single" / f"one{n:03d}.png", png_bytes(n + 50_000 + (polling * 1000)))
            wait_until(lambda n=n: _sent(ledger) == files + n + 1, 60, "a single file submitted",
                       0.02)
        singles = [e for e in ledger.entries() if e.path.parent.name == "single"]
    finally:
        ledger.close()
        watcher.terminate()
    delays = _delays(entries, stable_s)
    last_taken = max(e.taken_at or 0.0 for e in entries)
    return {
        "mode": "polling" if polling else "events",
        "files": len(entries),
        "drop_s": round(dropped - start, 3),
        "median_delay_s": round(statistics.median(delays), 3),
        "p95_delay_s": round(_percentile(delays, 0.95), 3),
        "files_per_s": round(len(entries) / (last_taken - start), 1),
        "single_median_delay_s": round(statistics.median(_delays(singles, stable_s)), 3),
    }


def _sent(ledger: Ledger) -> int:
    counts = ledger.counts()
    return counts["submitted"] + counts["done"]


def _delays(entries: list[Any], stable_s: float) -> list[float]:
    """Seconds from "stable" (last write + window) to the job's submission, per file."""
    return [e.submitted_at - (e.mtime_ns / 1e9 + stable_s) for e in entries
            if e.submitted_at is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--stable", type=float, default=0.5, help="stability window (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aat-bench-watch-") as tmp:
        home = Path(tmp)
        (home / "game").mkdir()
        service = Service(home, {"game": home / "game"}, None).start()
        try:
            runs = []
            for polling in (False, True):
                result = run(home / ("polling" if polling else "events"), service,
                             args.files, args.stable, polling)
                print(f"{result['mode']:>8}: {result}", flush=True)
                runs.append(result)
        finally:
            service.stop()
    events, poll = runs
    print(json.dumps({
        "files": args.files, "stable_s": args.stable,
        "median_delay_s": events["median_delay_s"], "p95_delay_s": events["p95_delay_s"],
        "files_per_s": events["files_per_s"],
        "single_median_delay_s": events["single_median_delay_s"],
        "events_vs_polling_files_per_s": round(events["files_per_s"] / poll["files_per_s"], 2),
        "runs": runs,
    }))


if __name__ == "__main__":
    main()
