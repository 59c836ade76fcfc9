"""Shared pytest fixtures. Each block belongs to one part of the tree."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import empty_pg_schema, throwaway_pg_database

# ---- jobs & storage: PostgreSQL, Redis and settings (tests/jobs, tests/storage) --------------

REDIS_TEST_URL = os.environ.get("AAT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run (dropped afterwards)."""
    with throwaway_pg_database("aat_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite (a file) and on real PostgreSQL (fresh schema each test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return empty_pg_schema(request.getfixturevalue("pg_url"))


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
    from workers.emulator import EmulatorServer, EndpointConfig, Faults
    from workers.emulator.echo import make_handler

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


# ---- storage: a real S3-protocol server process (tests/storage, tests/deploy) ----------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    from s3_helpers import S3Server

    server = S3Server()
    yield server
    server.stop()
