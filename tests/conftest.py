"""Shared pytest fixtures. Each block belongs to one part of the tree."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# ---- jobs & storage: PostgreSQL, Redis and settings (tests/jobs, tests/storage) --------------

PG_ADMIN_URL = os.environ.get("AAT_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("AAT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    name = f"aat_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite (a file) and on real PostgreSQL (fresh schema each test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    from sqlalchemy import create_engine, text

    url = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS deliveries, tiles, jobs, alembic_version"))
    engine.dispose()
    return url


@pytest.fixture
def redis_queue() -> Iterator[tuple[str, str]]:
    """The real Redis on 127.0.0.1 and a queue name of our own; the queue is deleted after."""
    import redis

    queue = f"aat-test-{secrets.token_hex(4)}"
    yield REDIS_TEST_URL, queue
    client = redis.Redis.from_url(REDIS_TEST_URL)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def job_settings(tmp_path: Path) -> Callable[..., Any]:
    """Settings for a job service in ``tmp_path`` with a repo named ``game``."""
    from service.settings import load_settings

    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "repos": {"game": repo},
                                  "backend": "none", "lease_s": 2.0, "job_threads": 2,
                                  "broker_url": None, "database_url": None,
                                  "git_commit": False, "intake_roots": []}
        values.update(overrides)
        return load_settings(**values)

    return make


# ---- RunPod emulator and RunPod backend (tests/backends, tests/workers/test_emulator.py) ------


@pytest.fixture
def runpod_emulator(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory starting a RunPod emulator on an ephemeral loopback port (stopped afterwards).

    ``runpod_emulator(workers=2, latency_s=0.0, faults="failed=1:1", handler=None,
    endpoints=("upscale", "caption"), **config)`` → a started ``EmulatorServer``; every endpoint
    serves ``handler`` (default: a fresh echo worker with LoRAs under ``tmp_path``).
    ``faults`` is a spec string or a ``Faults``; other keywords go to ``EndpointConfig``.
    """
    from workers.echo.handler import make_handler
    from workers.emulator import EmulatorServer, EndpointConfig, Faults

    servers: list[Any] = []

    def start(*, workers: int = 2, latency_s: float = 0.0, faults: Any = "",
              handler: Any = None, endpoints: tuple[str, ...] = ("upscale", "caption"),
              **config: Any) -> Any:
        handler = handler or make_handler(models_dir=tmp_path / "emulator-loras")
        configs = {
            eid: EndpointConfig(handler=handler, workers=workers, latency_s=latency_s,
                                faults=faults if isinstance(faults, Faults)
                                else Faults.parse(faults, retry_after_s=0.01), **config)
            for eid in endpoints
        }
        server = EmulatorServer(configs, api_key="test-" + secrets.token_hex(8))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def runpod_settings(tmp_path: Path) -> Callable[..., Any]:
    """``runpod_settings(emulator, **overrides)``: Settings aimed at the emulator, fast retries."""
    from service.settings import Settings

    def make(emulator: Any, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data", "backend": "runpod",
            "runpod_api_key": emulator.api_key, "runpod_base_url": emulator.url,
            "runpod_upscale_endpoint_id": "upscale", "runpod_caption_endpoint_id": "caption",
            "runpod_backoff_base_s": 0.01, "runpod_backoff_max_s": 0.05,
            "runpod_poll_min_s": 0.01, "runpod_poll_max_s": 0.1,
        }
        values.update(overrides)
        return Settings(**values)

    return make
