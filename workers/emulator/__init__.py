"""A local stand-in for RunPod serverless: any worker handler behind RunPod's job API.

Use it to develop and test against the cloud's behaviour without a GPU or an account:

    with EmulatorServer({"upscale": EndpointConfig(handler=echo.handler, workers=4)}) as emu:
        base_url = emu.url              # http://127.0.0.1:<port>/v2
        ...                             # RunPodBackend(base_url=..., api_key=emu.api_key)
        emu.stats("upscale")            # submitted, by_status, request_keys, ...

or from the shell: ``aat emulate --worker upscale=echo --worker caption=echo --port 8600``.
The pieces: :mod:`workers.emulator.state` (jobs, queue, workers), :mod:`workers.emulator.app`
(HTTP routes), :mod:`workers.emulator.faults` (fault injection). Handlers are imported lazily
by name (:func:`resolve_handler`): ``echo`` (cheap CPU stand-in), ``upscale``, ``caption`` (the
real workers, which need their model weights), ``animate-echo`` / ``qwen-edit-echo`` (our
animate worker and RunPod's public Qwen-Image-Edit endpoint, on CPU). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from workers.emulator.app import create_app
from workers.emulator.faults import Faults
from workers.emulator.state import EndpointConfig, Handler

__all__ = ["EmulatorServer", "EndpointConfig", "Faults", "resolve_handler"]

log = logging.getLogger(__name__)

HANDLER_MODULES = {
    "echo": "workers.emulator.echo",
    "upscale": "workers.upscale.handler",
    "caption": "workers.caption.handler",
    "animate-echo": "workers.emulator.animate_echo",  # our animate worker's stand-in
    "qwen-edit-echo": "workers.emulator.animate_echo:public_handler",  # RunPod's public one
    "animate": "workers.animate.handler",
}


def resolve_handler(name: str, **echo_options: Any) -> Handler:
    """The ``handler(job)`` of worker ``name`` (imported only now: real workers load models)."""
    if name not in HANDLER_MODULES:
        raise ValueError(f"unknown worker {name!r}; choose one of {', '.join(HANDLER_MODULES)}")
    module_name, _, attr = HANDLER_MODULES[name].partition(":")
    module = importlib.import_module(module_name)
    if name == "echo" and echo_options:
        return module.make_handler(**echo_options)
    return getattr(module, attr or "handler")


class EmulatorServer:
    """Runs the emulator with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        endpoints: dict[str, EndpointConfig],
        *,
        api_key: str = "emulator-key",
        port: int = 0,
    ) -> None:
        if not endpoints:
            raise ValueError("the emulator needs at least one endpoint")
        self.endpoints = endpoints
        self.api_key = api_key
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to give a RunPod client (``runpod_base_url``)."""
        return f"{self.root}/v2"

    def app(self) -> Any:
        return create_app(self.endpoints, self.api_key)

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving; returns :attr:`url` once the server accepts connections."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="runpod-emulator",
            daemon=True,
        )
        self._thread.start()
        from workers.emulator.files import SHELF

        SHELF.base_url = self.root
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the RunPod emulator did not start; see the log above")
            time.sleep(0.01)
        log.info("RunPod emulator serving %s at %s", ", ".join(self.endpoints), self.url)
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def serve_forever(self, *, access_log: bool = False) -> None:
        """Run in the calling thread until interrupted (what ``aat emulate`` does)."""
        from workers.emulator.files import SHELF

        SHELF.base_url = f"http://127.0.0.1:{self._port or 8600}"
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self._port or 8600,
                                log_level="info", access_log=access_log)
        uvicorn.Server(config).run()

    def stats(self, endpoint_id: str) -> dict[str, Any]:
        """The endpoint's counters, read over HTTP like any client would."""
        resp = httpx.get(f"{self.root}/_emulator/stats/{endpoint_id}", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def scale(self, endpoint_id: str, workers: int) -> None:
        """Scale the endpoint to ``workers`` (0: jobs wait IN_QUEUE, as on an idle endpoint),
        over HTTP like ``aat emulate`` users do."""
        resp = httpx.post(f"{self.root}/_emulator/scale/{endpoint_id}",
                          params={"workers": workers}, timeout=10)
        resp.raise_for_status()

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
