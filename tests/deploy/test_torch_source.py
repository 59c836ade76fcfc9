"""scripts/test's choice of torch (scripts/torch_source.py): the CPU build on a normal machine,
the local wheel here, and no hang when PyTorch's index is unreachable."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("torch_source", ROOT / "scripts/torch_source.py")
assert spec and spec.loader
ts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ts)

V = ts.TORCH
WHEEL = Path(f"/w/torch-{V}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
CPU = ["--extra-index-url", ts.CPU_INDEX, f"torch=={V}+cpu"]


def never() -> bool:
    raise AssertionError("the index must not be probed in this case")


@pytest.mark.parametrize(("installed", "wheel", "system", "answers", "expected"), [
    (f"{V}+cpu", None, "Linux", never, []),                     # already there: no network
    (V, None, "Darwin", never, []),
    ("2.4.0", WHEEL, "Linux", never, [f"torch=={V}"]),          # this workplace: the local wheel
    (None, WHEEL, "Linux", never, [f"torch=={V}"]),
    (None, None, "Darwin", never, [f"torch=={V}"]),             # macOS wheels are CPU-only
    (None, None, "Windows", never, [f"torch=={V}"]),
    (None, None, "Linux", lambda: True, CPU),                    # a normal Linux machine
    (None, None, "Linux", lambda: False, [f"torch=={V}"]),       # index down: say so, go on
])
def test_the_decision_table(installed, wheel, system, answers, expected, capsys) -> None:
    assert ts.choose(installed=installed, local_wheel=wheel, system=system,
                     probe=answers) == expected
    warned = "CUDA build" in capsys.readouterr().err
    assert warned == (expected == [f"torch=={V}"] and system == "Linux" and wheel is None)


def test_a_local_cpu_wheel_is_found_in_find_links(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / f"torch-{V}-cp311-cp311-manylinux_2_28_x86_64.whl").touch()  # CUDA: ignored
    assert ts.local_cpu_wheel([tmp_path]) is None
    cpu = tmp_path / f"torch-{V}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    cpu.touch()
    monkeypatch.setenv("PIP_FIND_LINKS", f"file://{tmp_path} /does/not/exist")
    assert tmp_path in ts.find_links_dirs()
    assert ts.local_cpu_wheel(ts.find_links_dirs()) == cpu


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a black-holed index)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def test_an_index_that_never_answers_costs_one_short_timeout(silent_port: int) -> None:
    start = time.monotonic()
    assert ts.index_answers(f"http://127.0.0.1:{silent_port}/whl/cpu", timeout=0.5) is False
    assert time.monotonic() - start < 3  # one attempt, no retry storm


def test_an_index_that_answers_is_used() -> None:
    seen: list[str] = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert ts.index_answers(f"http://127.0.0.1:{server.server_port}/whl/cpu", timeout=5)
    finally:
        server.shutdown()
    assert seen == ["/whl/cpu/torch/"]  # exactly one request


def test_refused_connection_is_a_quick_no() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    assert ts.index_answers(f"http://127.0.0.1:{port}/whl/cpu", timeout=5) is False
