"""The Godot plugin's HTTP requests, replayed byte for byte against the real service.

No Godot binary exists here, so the requests are rebuilt from the GDScript itself: the path,
query, header and MIME constants of ``api_client.gd`` and the order of the values its
``build_request()`` formats into the query. The bytes on the wire are what Godot's
``HTTPRequest.request_raw`` sends: request line, our headers, then the headers HTTPRequest and
HTTPClient add themselves (``Accept-Encoding``, ``Host``, ``Content-Length``). The replies are
then read the way ``parse_reply()`` and ``job.gd`` read them.
"""

from __future__ import annotations

import ast
import http.client
import io
import json
import re
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from plugin_service import Server

ADDON = Path(__file__).resolve().parents[2] / "plugins/godot/addons/ai_assets_toolbox"
API_SRC = (ADDON / "api_client.gd").read_text()
JOB_SRC = (ADDON / "job.gd").read_text()
PLUGIN_SRC = (ADDON / "plugin.gd").read_text()
SETTINGS_SRC = (ADDON / "settings.gd").read_text()


def gd_const(source: str, name: str) -> Any:
    """The value of ``const NAME := <literal>`` (string, number, array or dictionary)."""
    match = re.search(rf"^const {name} := (.+?)\n(?=[^\s}}\]])", source + "\nEND", re.M | re.S)
    assert match, f"const {name} not found"
    literal = re.sub(r"\b(true|false|null)\b",
                     lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)],
                     match.group(1))
    return ast.literal_eval(literal.replace("\n", " "))


def submit_value_order() -> list[str]:
    """Which query key each entry of build_request()'s `values` array fills, in order."""
    body = re.search(r"var values := \[(.*?)\]\n", API_SRC, re.S)
    assert body, "build_request() formats the submit query from a `values` array"
    keys = []
    for item in [i.strip() for i in body.group(1).split(",\n") if i.strip()]:
        arg = re.fullmatch(r'args\["(\w+)"\]', item.rstrip(","))
        keys.append(arg.group(1) if arg else "output_format" if "OUTPUT_FORMATS" in item else item)
    return keys


def gd_str(value: Any) -> str:
    """GDScript ``str()`` of the values the plugin sends (floats keep a ``.0``)."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def uri_encode(text: str) -> str:
    """Godot's ``String.uri_encode``: UTF-8, everything but ``A-Za-z0-9_.-~`` as %XX."""
    return urllib.parse.quote(text, safe="")


class GodotRequest:
    """One request as ``api_client.gd``'s ``build_request()`` builds it."""

    def __init__(self, kind: str, base_url: str, token: str, **args: Any) -> None:
        headers = list(gd_const(API_SRC, "BASE_HEADERS"))
        if token:
            headers.append(gd_const(API_SRC, "AUTH_HEADER") % token)
        method, job_id = "GET", uri_encode(str(args.get("job_id", "")))
        if kind == "submit":
            ext = args["filename"].rsplit(".", 1)[-1].lower()
            mime = gd_const(API_SRC, "MIME_TYPES").get(ext, "application/octet-stream")
            headers.append(gd_const(API_SRC, "CONTENT_TYPE_HEADER") % mime)
            args["output_format"] = gd_const(API_SRC, "OUTPUT_FORMATS").get(ext, "png")
            values = [uri_encode(gd_str(args[key])) for key in submit_value_order()]
            method = "POST"
            path = gd_const(API_SRC, "JOBS_PATH") + gd_const(API_SRC, "SUBMIT_QUERY") % tuple(values)
        elif kind == "cancel":
            method, path = "POST", gd_const(API_SRC, "CANCEL_PATH") % job_id
        else:
            path = gd_const(API_SRC, {"job": "JOB_PATH", "result": "RESULT_PATH"}[kind]) % job_id
        self.method, self.headers = method, headers
        self.url = base_url.rstrip("/") + path

    def wire(self, body: bytes = b"") -> bytes:
        """The bytes HTTPRequest.request_raw() puts on the socket (accept_gzip on)."""
        parts = urllib.parse.urlsplit(self.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{self.method} {target} HTTP/1.1", *self.headers,
                 "Accept-Encoding: gzip, deflate", f"Host: {parts.hostname}:{parts.port}"]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

    def send(self, body: bytes = b"") -> tuple[int, bytes]:
        parts = urllib.parse.urlsplit(self.url)
        with socket.create_connection((parts.hostname, parts.port),
                                      timeout=gd_const(API_SRC, "TIMEOUT_S")) as sock:
            sock.sendall(self.wire(body))
            resp = http.client.HTTPResponse(sock, method=self.method)
            resp.begin()
            data = resp.read()
            assert resp.getheader("Content-Encoding") in (None, "identity", "gzip", "deflate")
            return resp.status, data


def parse_reply(status: int, body: bytes) -> dict[str, Any]:
    """What ``parse_reply()`` in api_client.gd extracts: json when the body is an object."""
    text = body.decode("utf-8", "replace")
    parsed = json.loads(text) if text.startswith("{") else {}
    return {"ok": status < 400, "status": status, "json": parsed}


@pytest.fixture(scope="module")
def rock_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (8, 6), (90, 120, 60, 255)).save(buf, "PNG")
    return buf.getvalue()


def defaults() -> dict[str, Any]:
    values = gd_const(SETTINGS_SRC, "DEFAULTS")
    return {k: values[k] for k in ("scale", "strength", "seam_fix", "prompt")}


def poll(server: Server, job_id: str) -> list[dict[str, Any]]:
    """Poll like job.gd until a terminal status; return every job JSON seen."""
    terminal = gd_const(JOB_SRC, "TERMINAL")
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not seen or seen[-1]["status"] not in terminal:
        assert time.monotonic() < deadline, seen[-1:]
        status, body = GodotRequest("job", server.url, server.token, job_id=job_id).send()
        reply = parse_reply(status, body)
        assert reply["ok"], body
        seen.append(reply["json"])
        time.sleep(0.1)
    return seen


def test_submit_poll_download_rename_like_the_plugin(aat_server: Server, rock_png: bytes,
                                                     tmp_path: Path) -> None:
    args = {**defaults(), "filename": "rock wall.png", "prompt": "mossy stone & 100% wet, ü"}
    req = GodotRequest("submit", aat_server.url, aat_server.token, **args)
    wire = req.wire(rock_png)
    head = wire[: wire.index(b"\r\n\r\n")].decode()
    assert head.startswith("POST /v1/jobs?filename=rock%20wall.png&scale=2.0&strength=0.35&")
    assert "Content-Type: image/png" in head and f"Bearer {aat_server.token}" in head
    status, body = req.send(rock_png)
    assert status == 202, body
    job = parse_reply(status, body)["json"]
    assert job["params"]["prompt"] == args["prompt"] and job["params"]["scale"] == 2.0
    assert job["input"]["filename"] == "rock wall.png" and job["params"]["output_format"] == "png"

    seen = poll(aat_server, job["id"])
    assert seen[-1]["status"] == "succeeded", seen[-1]
    assert all(0.0 <= j["progress"] <= 1.0 and isinstance(j["stage"], str) for j in seen)

    # job.gd: download into res://.godot/aat_staging/<id>.part, then rename into the project
    project = tmp_path / "project"
    staging = project / ".godot/aat_staging"
    staging.mkdir(parents=True)
    status, data = GodotRequest("result", aat_server.url, aat_server.token,
                                job_id=job["id"]).send()
    assert status == 200
    part = staging / f"{job['id']}.part"
    part.write_bytes(data)
    stem_format = re.search(r'var stem := "(.+?)" %', PLUGIN_SRC)
    assert stem_format and stem_format.group(1) == "%s_x%s"
    dest = project / ("rock wall" + "_x" + gd_str(args["scale"]).removesuffix(".0") + ".png")
    part.rename(dest)
    assert dest.name == "rock wall_x2.png" and not list(staging.iterdir())
    assert Image.open(dest).size == (16, 12)


def test_query_order_in_build_request_matches_the_query_template() -> None:
    keys = re.findall(r"[?&](\w+)=%s", gd_const(API_SRC, "SUBMIT_QUERY"))
    assert keys == submit_value_order()
    assert "PackedStringArray(BASE_HEADERS)" in API_SRC and "AUTH_HEADER % token" in API_SRC
    assert "SUBMIT_QUERY % values" in API_SRC and ".uri_encode()" in API_SRC
    assert "http.use_threads = true" in API_SRC and "http.timeout = TIMEOUT_S" in API_SRC


def test_bad_token_gets_the_401_the_plugin_explains(aat_server: Server, rock_png: bytes) -> None:
    status, body = GodotRequest("submit", aat_server.url, "wrong", **defaults(),
                                filename="a.png").send(rock_png)
    assert status == 401
    assert parse_reply(status, body)["json"]["code"] == "unauthorized"
    assert "status == 401" in API_SRC and "api_token" in API_SRC


def test_undecodable_image_is_a_problem_with_code_and_detail(aat_server: Server) -> None:
    status, body = GodotRequest("submit", aat_server.url, aat_server.token, **defaults(),
                                filename="broken.png").send(b"not a png at all")
    reply = parse_reply(status, body)
    assert status == 422 and not reply["ok"]
    assert reply["json"]["code"].startswith("image_") and reply["json"]["detail"]


def test_unknown_job_is_a_404_problem(aat_server: Server) -> None:
    status, body = GodotRequest("job", aat_server.url, aat_server.token,
                                job_id="j_does_not_exist").send()
    reply = parse_reply(status, body)
    assert status == 404 and reply["json"]["code"] == "not_found"


def test_cancel_returns_the_job(aat_server: Server, rock_png: bytes) -> None:
    big = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(big, "JPEG")
    status, body = GodotRequest("submit", aat_server.url, aat_server.token, **defaults(),
                                filename="wall.JPG").send(big.getvalue())
    assert status == 202
    job = json.loads(body)
    assert job["params"]["output_format"] == "jpeg"  # OUTPUT_FORMATS keeps the file type
    status, body = GodotRequest("cancel", aat_server.url, aat_server.token,
                                job_id=job["id"]).send()
    assert status in (200, 202)
    assert parse_reply(status, body)["json"]["status"] in ("canceled", "succeeded", "running")
    assert poll(aat_server, job["id"])[-1]["status"] in ("canceled", "succeeded")

