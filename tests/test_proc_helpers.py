"""The process helpers every test and benchmark starts its services with
(``tests/proc_helpers.py``): ready means the URL answered, a process that dies first is reported
with its log, this machine's AAT_/RUNPOD_ settings never leak in, and the process is gone after
the ``with`` block however it ends."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
from proc_helpers import NotReady, ServiceProcess, free_port, wait_http

SERVE = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]


def test_ready_when_the_url_answers_and_stopped_after_the_block(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "hello.txt").write_text("hi")
    svc = ServiceProcess([*SERVE, str(port)], cwd=tmp_path, log=tmp_path / "srv.log",
                         ready_url=f"http://127.0.0.1:{port}/hello.txt", timeout=30)
    with pytest.raises(KeyError), svc:
        assert httpx.get(f"http://127.0.0.1:{port}/hello.txt").text == "hi"
        raise KeyError("the test body fails")
    assert svc.proc is not None and svc.proc.poll() is not None  # stopped all the same
    with pytest.raises(NotReady):
        wait_http(f"http://127.0.0.1:{port}/hello.txt", timeout=0.3)  # nobody listens now
    assert "GET /hello.txt" in (tmp_path / "srv.log").read_text()


def test_a_process_that_dies_first_is_reported_with_its_log(tmp_path: Path) -> None:
    svc = ServiceProcess([sys.executable, "-c", "print('bad setting: X'); raise SystemExit(3)"],
                         log=tmp_path / "dies.log", ready_url=f"http://127.0.0.1:{free_port()}",
                         timeout=30)
    with pytest.raises(NotReady) as err:
        svc.start()
    assert "exited with status 3" in str(err.value)
    assert "bad setting: X" in str(err.value)  # the log's tail says why


def test_this_machines_settings_are_scrubbed_unless_asked(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("AAT_API_TOKEN", "machine-token")
    monkeypatch.setenv("RUNPOD_API_KEY", "machine-key")
    show = [sys.executable, "-c", "import os; print(sorted(k for k in os.environ "
            "if k.startswith(('AAT_', 'RUNPOD_'))))"]
    with ServiceProcess(show, env={"AAT_PORT": "1"}, log=tmp_path / "env.log") as svc:
        assert svc.proc is not None and svc.proc.wait(timeout=30) == 0
    assert (tmp_path / "env.log").read_text().strip() == "['AAT_PORT']"
    inherit = ServiceProcess(show, scrub=False)
    assert inherit.env["AAT_API_TOKEN"] == "machine-token" and "PATH" in inherit.env


def _gone(pid: int) -> bool:
    """No such process, or only its zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_a_new_session_is_stopped_as_a_group(tmp_path: Path) -> None:
    """A process and its child (a runner and its pool) both end when the group is stopped."""
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n")
    log = tmp_path / "group.log"
    with ServiceProcess([sys.executable, "-c", code], log=log, new_session=True,
                        stop_timeout=10):
        deadline = time.monotonic() + 30
        while not log.read_text().strip():
            assert time.monotonic() < deadline, "the child was never started"
            time.sleep(0.05)
        child = int(log.read_text())
        assert not _gone(child)
    deadline = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline, "the child outlived its group's stop"
        time.sleep(0.05)
