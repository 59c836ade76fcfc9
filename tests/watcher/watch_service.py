"""Real processes for the watcher's end-to-end tests and benchmark.

* :class:`Service` — ``aat up`` in a subprocess (API + embedded executor) on a free loopback
  port, its GPU backend pointed at the RunPod emulator (echo worker) running in this process.
* :class:`WatcherProcess` — ``python -m watcher`` in a subprocess (so it can be SIGKILLed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update({"AAT_CONFIG": str(home / "no-aat.toml"), "PYTHONPATH": str(ROOT),
                "HOME": str(home), "PYTHONUNBUFFERED": "1"})
    return env


class Service:
    """``aat up`` as a user runs it, with jobs going to the emulated RunPod endpoint."""

    def __init__(self, home: Path, repos: dict[str, Path], emulator: EmulatorServer | None,
                 job_threads: int = 4) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = _base_env(home)
        self.env.update({
            "AAT_DATA_DIR": str(home / "service-data"), "AAT_PORT": str(self.port),
            "AAT_REPOS": json.dumps({k: str(v) for k, v in repos.items()}),
            "AAT_JOB_THREADS": str(job_threads),
        })
        if emulator is not None:
            self.env.update({"AAT_BACKEND": "runpod", "RUNPOD_API_KEY": emulator.api_key,
                             "RUNPOD_UPSCALE_ENDPOINT_ID": "upscale",
                             "AAT_RUNPOD_BASE_URL": emulator.url})
        else:
            self.env["AAT_BACKEND"] = "none"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / f"service-{self.port}.log"

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(BIN / "aat"), "up", "--log-level", "warning"],
                                         cwd=self.home, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_until(self._healthy, 40, f"aat up on {self.url} (log: {self.log})", 0.2)
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"aat up exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

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


class WatcherProcess:
    """``python -m watcher`` with its own data dir (ledger) and settings from the environment."""

    def __init__(self, home: Path, server_url: str, folders: list[Path],
                 repos: dict[str, Path], stable_s: float = 0.3, scan_s: float = 3.0,
                 delivery: str = "auto") -> None:
        self.home = home
        self.data_dir = home / "watcher-data"
        self.env = _base_env(home)
        self.env.update({
            "AAT_DATA_DIR": str(self.data_dir), "AAT_SERVER_URL": server_url,
            "AAT_WATCH_FOLDERS": json.dumps([str(f) for f in folders]),
            "AAT_REPOS": json.dumps({k: str(v) for k, v in repos.items()}),
            "AAT_WATCH_STABLE_S": str(stable_s), "AAT_WATCH_SCAN_INTERVAL_S": str(scan_s),
            "AAT_WATCH_DELIVERY": delivery,
        })
        self.log = home / "watcher.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> WatcherProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "watcher", *args], cwd=self.home,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m watcher <args>`` with the same settings (``--status``, ``--retry``)."""
        return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=self.home,
                              env=self.env, capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
