"""Helpers for the REST API tests: images, a uvicorn server in a thread, runner processes."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from proc_helpers import ServiceProcess, aat_command

ROOT = Path(__file__).resolve().parents[2]


def png_bytes(width: int = 48, height: int = 32, *, seed: int = 0, alpha: bool = False) -> bytes:
    """A small random PNG (RGB, or RGBA with ``alpha``)."""
    rng = np.random.default_rng(seed)
    channels = 4 if alpha else 3
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class LiveServer:
    url: str
    app: Any
    settings: Any
    token: str | None = None

    def client(self, token: str | None = "default", **kw: Any) -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    @property
    def jobs(self) -> Any:
        return self.app.state.jobs


def serve(app: Any) -> tuple[str, Callable[[], None]]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()

    return f"http://127.0.0.1:{port}", stop


@contextmanager
def running_app(settings: Any, job_service: Any = None, backend: Any = None,
                ) -> Iterator[LiveServer]:
    """The app for ``settings`` served by uvicorn on an ephemeral loopback port."""
    from service.api.app import create_app

    app = create_app(settings, job_service=job_service, backend=backend)
    url, stop = serve(app)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    try:
        yield LiveServer(url=url, app=app, settings=settings, token=token)
    finally:
        stop()


def start_runner(env: dict[str, str], log: Path, concurrency: int = 2) -> ServiceProcess:
    """A real Celery job runner process (`aat runner`) in its own process group; a test done
    with it calls ``.kill()`` (the runner and its pool children at once)."""
    return ServiceProcess(aat_command("runner", "-c", str(concurrency), "--loglevel", "WARNING"),
                          env={**env, "PYTHONUNBUFFERED": "1"}, scrub=False, log=log,
                          new_session=True).start()


def wait_for_runner(server: LiveServer, timeout: float = 90) -> None:
    """Until ``GET /v1/ready`` says a job runner answers on the server's queue (a Celery
    process takes seconds to start; a test that asks at once would see none)."""
    deadline = time.monotonic() + timeout
    with server.client() as http:
        while True:
            runners = http.get("/v1/ready").json()["checks"]["runners"]
            if runners["ok"]:
                return
            assert time.monotonic() < deadline, runners
            time.sleep(0.2)


def env_for(values: dict[str, Any]) -> dict[str, str]:
    """The same settings as ``AAT_*`` environment variables for a subprocess."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict | list):
            value = json.dumps({k: str(v) for k, v in value.items()} if isinstance(value, dict)
                               else [str(v) for v in value])
        out[f"AAT_{key.upper()}"] = str(value)
    return out


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def sse_events(client: httpx.Client, job_id: str, last_id: str | None = None, *,
               tiles: bool = False) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    name = "message"
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=60, headers=headers,
                       params={"tiles": "true"} if tiles else None) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    return events
