"""The Blender add-on's HTTP layer (``client.py``, no bpy) against the real service, and the
standard-library-only rule that keeps one zip working on every Blender Python."""

from __future__ import annotations

import ast
import importlib.util
import io
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image
from plugin_service import Server

PACKAGE = Path(__file__).resolve().parents[2] / "plugins/blender/ai_assets_toolbox"


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aat_blender_client", PACKAGE / "client.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = load_client()


def test_addon_imports_only_the_standard_library_and_bpy() -> None:
    allowed = set(sys.stdlib_module_names) | {"bpy", "__future__"}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] not in allowed]
            assert not bad, f"{path.name} imports {bad}: the extension ships no wheels"
    assert "import bpy" not in (PACKAGE / "client.py").read_text()  # safe on worker threads


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8765", True), ("http://localhost:8765/", True),
    ("http://[::1]:8765", True), ("http://127.3.2.1", True),
    ("http://192.168.1.20:8765", False), ("http://localhost.example.com", False),
    ("https://upscale.example.com", False),
])
def test_only_loopback_works_without_online_access(url: str, loopback: bool) -> None:
    assert client.is_loopback(url) is loopback
    if loopback:
        assert client.check_server_url(url, online_access=False) == url.rstrip("/")
    else:
        with pytest.raises(client.ClientError, match="Allow Online Access"):
            client.check_server_url(url, online_access=False)
        assert client.check_server_url(url, online_access=True) == url.rstrip("/")


@pytest.mark.parametrize("url", ["", "ftp://127.0.0.1/x", "127.0.0.1:8765", "file:///etc/passwd"])
def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(client.ClientError, match="not an http"):
        client.check_server_url(url, online_access=True)


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 60, 90)).save(buf, "PNG")
    return buf.getvalue()


def test_submit_poll_and_result_round_trip(aat_server: Server) -> None:
    api = client.JobClient(aat_server.url, aat_server.token)
    job = api.submit(_png((6, 4)), "wall tile.png",
                     {"scale": 2.0, "prompt": "a, b & c", "seam_fix": "band", "loras": []})
    assert job["status"] in ("queued", "running", "succeeded")
    deadline = time.monotonic() + 60
    while job["status"] not in client.TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        job = api.job(job["id"])
    assert job["status"] == "succeeded", job
    assert job["params"]["prompt"] == "a, b & c" and job["params"]["seam_fix"] == "band"
    assert Image.open(io.BytesIO(api.result(job["id"]))).size == (12, 8)


def test_server_errors_become_one_actionable_line(aat_server: Server) -> None:
    api = client.JobClient(aat_server.url, aat_server.token)
    with pytest.raises(client.ClientError) as missing:
        api.job("j_nope")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    with pytest.raises(client.ClientError) as bad:
        api.submit(_png((4, 4)), "x.png", {"scale": 100.0})
    assert bad.value.status == 422 and "invalid_params" in bad.value.message
    with pytest.raises(client.ClientError) as token:
        client.JobClient(aat_server.url, "nope").job("j_nope")
    assert token.value.code == "unauthorized" and "preferences" in token.value.message


def test_results_are_written_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "rock_x2.png"
    client.write_atomic(str(dest), b"new bytes")
    assert dest.read_bytes() == b"new bytes" and not list(dest.parent.glob("*.part"))
