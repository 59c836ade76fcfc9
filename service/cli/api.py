"""`aat up` and `aat serve`: run the REST API.

* ``aat up`` — everything on one machine: the API, an embedded executor that runs jobs in
  threads of this process (no broker; unfinished jobs are re-claimed at the next start), and the
  watch-folder daemon when ``AAT_WATCH_FOLDERS`` is set.
* ``aat serve`` — the API only; jobs go to Celery runners (``aat runner``) through
  ``AAT_BROKER_URL``.

Both refuse to listen beyond loopback without ``AAT_API_TOKEN``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from service.core.errors import AatError, ConfigError
from service.core.logs import configure_logging

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add `up` and `serve` to the `aat` app."""
    app.command("up")(up)
    app.command("serve")(serve)


def _settings(host: str | None, port: int | None, **extra: Any) -> Settings:
    from service.settings import load_settings

    base = load_settings()
    host = host or base.host
    port = port or base.port
    url_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only reached with a token (check_bind)
        url_host = "127.0.0.1"
    return load_settings(host=host, port=port, server_url=f"http://{url_host}:{port}", **extra)


def _start_watcher(settings: Settings, server: Any, stop: threading.Event,
                   ) -> threading.Thread | None:
    if not settings.watch_folders:
        return None
    try:
        from watcher.daemon import run_watcher
    except ImportError as exc:  # the watcher extra is not installed
        raise ConfigError(f"AAT_WATCH_FOLDERS is set but the watcher cannot load ({exc}); "
                          "install ai-assets-toolbox[watcher]") from exc

    for folder in settings.watch_folders:  # refuse before anything starts, in one line
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f"watch folder {root} does not exist; create it or fix "
                              "AAT_WATCH_FOLDERS")

    def run() -> None:
        while not server.started and not stop.is_set():
            time.sleep(0.05)  # the watcher submits over REST: wait until we listen
        if stop.is_set():
            return
        try:
            run_watcher(settings, stop)
        except AatError as exc:  # the API keeps serving; say why the watcher stopped
            log.error("watcher stopped: error [%s]: %s", exc.code, exc.message)

    thread = threading.Thread(target=run, name="aat-watcher", daemon=True)
    thread.start()
    log.info("watching %s", ", ".join(str(f) for f in settings.watch_folders))
    return thread


def run_server(settings: Settings, *, with_watcher: bool, log_level: str = "info") -> None:
    """Serve the API for ``settings`` until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    from service.api.app import create_app
    from service.api.auth import check_bind
    from service.storage.db import preflight

    check_bind(settings.host, settings)
    _check_port_free(settings.host, settings.port)
    preflight(settings.effective_database_url)
    if not settings.broker_url:  # this process will run jobs: not those of a Celery fleet
        _refuse_celery_store(settings)
    app = create_app(settings)
    # log_config=None: uvicorn logs through our handler and format (configure_logging)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            log_config=None,
                            access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    stop = threading.Event()
    watcher = _start_watcher(settings, server, stop) if with_watcher else None
    try:
        server.run()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)


def _refuse_celery_store(settings: Settings) -> None:
    from service.jobs.executor import refuse_celery_store
    from service.storage.job_store import SqlJobStore

    store = SqlJobStore(settings.effective_database_url, run_migrations=False)
    try:
        refuse_celery_store(settings, store)
    finally:
        store.engine.dispose()


def _check_port_free(host: str, port: int) -> None:
    """Fail in one line when another program already listens on HOST:PORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); stop the "
                              "program using that port or pick another with --port or AAT_PORT",
                              code="port_in_use") from exc


def up(
    host: str | None = typer.Option(None, "--host", help="Listen address (default "
                                    "AAT_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default AAT_PORT, 8765)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Run the API, the jobs and the watcher in this process.

    The watcher starts when watch folders are set.
    No Redis needed; unfinished jobs resume at the next start.
    """
    settings = _settings(host, port, broker_url=None)
    configure_logging(log_level, settings.log_format)
    run_server(settings, with_watcher=True, log_level=log_level)


def serve(
    host: str | None = typer.Option(None, "--host", help="Listen address (default "
                                    "AAT_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default AAT_PORT, 8765)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Run the API only; Celery runners run the jobs.

    Jobs go to `aat runner` processes through AAT_BROKER_URL.
    """
    settings = _settings(host, port)
    configure_logging(log_level, settings.log_format)
    if not settings.broker_url:
        raise ConfigError("`aat serve` hands jobs to Celery runners: set AAT_BROKER_URL "
                          "(e.g. redis://127.0.0.1:6379/0) and start `aat runner`, or use "
                          "`aat up` to run jobs in this process")
    run_server(settings, with_watcher=False, log_level=log_level)
