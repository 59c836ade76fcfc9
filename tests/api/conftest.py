"""Fixtures for the REST API tests: a real uvicorn server on loopback (in a thread), real
Celery runner processes on the real Redis, a real PostgreSQL job store."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apitest_helpers import (
    LiveServer,
    env_for,
    running_app,
    serve,
    start_runner,
    wait_for_runner,
)
from pg_helpers import throwaway_pg_database

REDIS_TEST_URL = os.environ.get("AAT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """``live_server(settings, job_service=None, backend=None)`` → a started server."""
    from service.api.app import create_app

    stops: list[Callable[[], None]] = []

    def start(settings: Any, job_service: Any = None, backend: Any = None) -> LiveServer:
        app = create_app(settings, job_service=job_service, backend=backend)
        url, stop = serve(app)
        stops.append(stop)
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return LiveServer(url=url, app=app, settings=settings, token=token)

    yield start
    for stop in reversed(stops):
        stop()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test module's own (dropped afterwards)."""
    with throwaway_pg_database("aat_api") as url:
        yield url


def _values(root: Path, **extra: Any) -> dict[str, Any]:
    repo, inbox = root / "repo", root / "inbox"
    repo.mkdir(parents=True, exist_ok=True)
    inbox.mkdir(parents=True, exist_ok=True)
    return {"data_dir": root / "data", "broker_url": REDIS_TEST_URL, "backend": "none",
            "celery_queue": f"aat-test-{secrets.token_hex(4)}", "repos": {"game": repo},
            "intake_roots": [inbox], "max_upload_bytes": 256 * 1024, **extra}


def _drop_queue(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def celery_server(tmp_path_factory: pytest.TempPathFactory, pg_database: str,
                  ) -> Iterator[LiveServer]:
    """One API (uvicorn thread) and one real `aat runner` Celery process for the module:
    PostgreSQL store, Redis broker on a private queue, a repo ``game`` and an intake root."""
    from service.settings import load_settings

    root = tmp_path_factory.mktemp("celery")
    values = _values(root, database_url=pg_database)
    runner = start_runner(env_for(values), root / "runner.log")
    with running_app(load_settings(**values)) as server:
        wait_for_runner(server)
        yield server
    runner.kill()
    _drop_queue(values["celery_queue"])


@pytest.fixture
def queued_server(tmp_path: Path, live_server: Callable[..., LiveServer],
                  ) -> Iterator[Callable[..., LiveServer]]:
    """``queued_server(**overrides)``: an API whose Celery queue no runner consumes, so jobs
    stay queued (SQLite store in ``tmp_path``)."""
    from service.settings import load_settings

    queues: list[str] = []

    def start(**overrides: Any) -> LiveServer:
        values = _values(tmp_path, **overrides)
        queues.append(values["celery_queue"])
        return live_server(load_settings(**values))

    yield start
    for queue in queues:
        _drop_queue(queue)
