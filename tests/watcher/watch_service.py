"""Real processes for the watcher's end-to-end tests and benchmark.

* :class:`Service` — ``aat up`` in a subprocess (API + embedded executor) on a free loopback
  port, its GPU backend pointed at the RunPod emulator (echo worker) running in this process.
* :class:`WatcherProcess` — ``python -m watcher`` in a subprocess (so it can be SIGKILLed).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from proc_helpers import ServiceProcess, free_port

from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WATCHER = [sys.executable, "-m", "watcher"]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_for_scans(ledger: Any, more: int, timeout: float = 30) -> int:
    """Wait until the watcher owning ``ledger`` has finished ``more`` full scans after now (a
    counted event, not a fixed sleep: "nothing happened" is asserted over whole scans)."""
    start = ledger.full_scans()[0]
    return int(wait_until(lambda: ledger.full_scans()[0] >= start + more and
                          ledger.full_scans()[0], timeout, f"{more} more full scans"))


def start_emulator(workers: int = 4) -> EmulatorServer:
    emu = EmulatorServer({"upscale": EndpointConfig(handler=resolve_handler("echo"),
                                                    workers=workers)})
    emu.start()
    return emu


def _base_env(home: Path) -> dict[str, str]:
    """What both processes set on top of the scrubbed environment (no AAT_/RUNPOD_ of ours)."""
    return {"AAT_CONFIG": str(home / "no-aat.toml"), "PYTHONPATH": str(ROOT),
            "HOME": str(home), "PYTHONUNBUFFERED": "1"}


class Service(ServiceProcess):
    """``aat up`` as a user runs it, with jobs going to the emulated RunPod endpoint."""

    def __init__(self, home: Path, repos: dict[str, Path], emulator: EmulatorServer | None,
                 job_threads: int = 4) -> None:
        self.home = home
        self.port = free_port()
        env = _base_env(home)
        env.update({
            "AAT_DATA_DIR": str(home / "service-data"), "AAT_PORT": str(self.port),
            "AAT_REPOS": json.dumps({k: str(v) for k, v in repos.items()}),
            "AAT_JOB_THREADS": str(job_threads),
        })
        if emulator is not None:
            env.update({"AAT_BACKEND": "runpod", "RUNPOD_API_KEY": emulator.api_key,
                        "RUNPOD_UPSCALE_ENDPOINT_ID": "upscale",
                        "AAT_RUNPOD_BASE_URL": emulator.url})
        else:
            env["AAT_BACKEND"] = "none"
        url = f"http://127.0.0.1:{self.port}"
        super().__init__([BIN / "aat", "up", "--log-level", "warning"], env=env, cwd=home,
                         log=home / f"service-{self.port}.log", append_log=True, url=url,
                         ready_url=url + "/v1/health", timeout=40, poll_s=0.2, stop_timeout=20)
        self.url: str = url

    def start(self) -> Service:
        super().start()
        return self

    def job(self, job_id: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=30)
        return resp.raise_for_status().json()  # type: ignore[no-any-return]

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the service knows (all pages)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while True:
                params: dict[str, Any] = {"limit": 500}
                if cursor:
                    params["cursor"] = cursor
                page = http.get("/v1/jobs", params=params).raise_for_status().json()
                out.extend(page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    return out


class WatcherProcess(ServiceProcess):
    """``python -m watcher`` with its own data dir (ledger) and settings from the environment;
    :meth:`stop` kills it (SIGKILL), :meth:`terminate` asks it to stop (SIGTERM)."""

    def __init__(self, home: Path, server_url: str, folders: list[Path],
                 repos: dict[str, Path], stable_s: float = 0.3, scan_s: float = 3.0,
                 delivery: str = "auto") -> None:
        self.home = home
        self.data_dir = home / "watcher-data"
        env = _base_env(home)
        env.update({
            "AAT_DATA_DIR": str(self.data_dir), "AAT_SERVER_URL": server_url,
            "AAT_WATCH_FOLDERS": json.dumps([str(f) for f in folders]),
            "AAT_REPOS": json.dumps({k: str(v) for k, v in repos.items()}),
            "AAT_WATCH_STABLE_S": str(stable_s), "AAT_WATCH_SCAN_INTERVAL_S": str(scan_s),
            "AAT_WATCH_DELIVERY": delivery,
        })
        super().__init__(WATCHER, env=env, cwd=home, log=home / "watcher.log", append_log=True)
        self.log: Path = home / "watcher.log"

    def start(self, *args: str) -> WatcherProcess:
        self.args = [*WATCHER, *args]
        super().start()
        return self

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m watcher <args>`` with the same settings (``--status``, ``--retry``)."""
        return subprocess.run([*WATCHER, *args], cwd=self.home, env=self.env,
                              capture_output=True, text=True, timeout=30)

    def stop(self) -> int | None:
        return self.kill()
