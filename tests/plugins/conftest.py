"""Fixtures for the plugin tests: the real service (`aat up`) on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_service import TOKEN, Server, free_port


@pytest.fixture(scope="module")
def aat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`aat up` with its own data dir and token, as a user starts it; stopped afterwards."""
    work = tmp_path_factory.mktemp("aat")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update(AAT_DATA_DIR=str(work / "data"), AAT_API_TOKEN=TOKEN, AAT_PORT=str(port),
               AAT_CONFIG=str(work / "none.toml"))
    aat = Path(sys.executable).parent / "aat"
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen([str(aat), "up", "--log-level", "warning"], cwd=work, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("aat up did not start:\n" + (work / "server.log").read_text())
            time.sleep(0.1)
    yield Server(url, TOKEN, work / "data")
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
