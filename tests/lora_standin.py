"""A loopback stand-in for CivitAI, Hugging Face and their storage hosts (tests of LoRA import).

Two real HTTP servers in threads, on different ports (so different origins, like civitai.com
and its storage host):

- the **site** serves CivitAI under ``/civitai`` (``/api/v1/model-versions/<v>`` JSON,
  ``/api/v1/models/<id>`` JSON with its ``modelVersions`` newest first,
  ``/api/download/models/<v>`` → 302 to storage) and Hugging Face under ``/hf``
  (``/<owner>/<repo>/resolve/<rev>/<file>`` → 302 to storage, ``/blob/`` is an HTML page);
- the **storage** host serves the bytes under ``/files/<name>``.

Versions: 101 a good LoRA with trained words; 102 offers only a pickle; 103 needs the token
:data:`TOKEN` (401 otherwise); 104 a slow, larger file (for progress and cancel); 105 claims
SafeTensor but serves an HTML page; 106 redirects forever; 107 a sha256 that does not match;
108 model 10's newest published version (SDXL 1.0); 109 a draft of model 10, newer still;
201 model 20's only version, made for SD 1.5; 202 a version made for Flux.1 D.
Models: 10 (versions 109 draft, 108, 101), 20 (201), 30 (only the draft 109).
Hugging Face also has ``flux_lora.safetensors``, whose own metadata says it is a Flux LoRA.
Every request is recorded (server, path, whether an ``Authorization`` header came along), and
every download of the slow file (:attr:`StandIn.slow_downloads`: bytes sent, whether it ran to
its end or the client went away). With ``hold_after`` set, the slow file stops after that many
bytes and waits, watching its connection, until :meth:`StandIn.release` (or the client
closes it): a cancel test can then never lose the race against the end of the download.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

TOKEN = "civitai-test-token-0123456789"


def safetensors_bytes(n: int = 64, metadata: dict[str, str] | None = None) -> bytes:
    """A well-formed safetensors file: one uint8 tensor of ``n`` bytes, optional metadata."""
    payload = bytes(i % 251 for i in range(n))
    header: dict[str, Any] = {"lora_up.weight": {"dtype": "U8", "shape": [n],
                                                 "data_offsets": [0, n]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


@dataclass
class Hit:
    server: str
    path: str
    auth: str | None


@dataclass
class SlowDownload:
    sent: int = 0
    finished: bool = False  # every byte went out
    cut: bool = False  # the client went away before the end


@dataclass
class StandIn:
    """Start with :meth:`start`; URLs from :attr:`site` / :attr:`storage`."""

    slow_bytes: int = 3 * 1024 * 1024
    slow_seconds: float = 2.0
    hold_after: int | None = None  # the slow file waits after this many bytes until release()
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    slow_downloads: list[SlowDownload] = field(default_factory=list)

    def start(self) -> StandIn:
        self.files.update({
            "moss_style.safetensors": safetensors_bytes(4096),
            "private.safetensors": safetensors_bytes(2048),
            "big_slow.safetensors": safetensors_bytes(self.slow_bytes),
            "page.safetensors": b"<!DOCTYPE html><html><body>Log in</body></html>" * 4,
            "pixel_art.safetensors": safetensors_bytes(
                1024, {"modelspec.trigger_phrase": "pxlart, 16-bit sprite"}),
            "model.bin": b"\x80\x04\x95" + b"\0" * 64,
            "moss_style_v3.safetensors": safetensors_bytes(3000),
            "moss_style_v4_wip.safetensors": safetensors_bytes(100),
            "sd15_style.safetensors": safetensors_bytes(512),
            "flux_style.safetensors": safetensors_bytes(512),
            "flux_lora.safetensors": safetensors_bytes(
                768, {"modelspec.architecture": "flux-1-dev/lora"}),
        })
        self._released = threading.Event()
        self._site = self._serve("site")
        self._storage = self._serve("storage")
        return self

    def release(self) -> None:
        """Let held downloads of the slow file go on."""
        self._released.set()

    def stop(self) -> None:
        self.release()
        for server in (self._site, self._storage):
            server.shutdown()
            server.server_close()

    @property
    def site(self) -> str:
        return f"http://127.0.0.1:{self._site.server_address[1]}"

    @property
    def storage(self) -> str:
        return f"http://127.0.0.1:{self._storage.server_address[1]}"

    @property
    def http_hosts(self) -> list[str]:
        return [urlsplit(self.site).netloc, urlsplit(self.storage).netloc]

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    # ---- CivitAI's model-version JSON -----------------------------------------------------

    def version(self, v: int) -> dict[str, Any] | None:
        def file(name: str, fmt: str = "SafeTensor", sha: str | None = None) -> dict[str, Any]:
            return {"id": v * 10, "name": name, "type": "Model", "primary": True,
                    "sizeKB": len(self.files.get(name, b"")) / 1024,
                    "metadata": {"format": fmt, "fp": "fp16", "size": "full"},
                    "hashes": {"SHA256": (sha or self.sha256(name)).upper()},
                    "downloadUrl": f"{self.site}/civitai/api/download/models/{v}"}
        table = {
            101: ([file("moss_style.safetensors")], ["mossy stone", "mst_style"]),
            108: ([file("moss_style_v3.safetensors")], ["mossy stone v3"]),
            109: ([file("moss_style_v4_wip.safetensors")], []),
            201: ([file("sd15_style.safetensors")], ["old style"]),
            202: ([file("flux_style.safetensors")], []),
            102: ([file("model.bin", "PickleTensor")], ["old"]),
            103: ([file("private.safetensors")], ["private look"]),
            104: ([file("big_slow.safetensors")], ["slow words"]),
            105: ([file("page.safetensors")], []),
            106: ([file("moss_style.safetensors")], []),
            107: ([file("moss_style.safetensors", sha="0" * 64)], []),
        }
        if v not in table:
            return None
        files, words = table[v]
        base = {108: "SDXL 1.0", 201: "SD 1.5", 202: "Flux.1 D"}.get(v, "Illustrious")
        return {"id": v, "modelId": v // 10, "name": f"v{v}",
                "baseModel": base, "status": "Draft" if v == 109 else "Published",
                "trainedWords": words, "files": files, "model": {"name": "Moss", "type": "LORA"},
                "downloadUrl": f"{self.site}/civitai/api/download/models/{v}"}

    def model(self, m: int) -> dict[str, Any] | None:
        """A model's JSON: its versions newest first, each as the version JSON has it (without
        ``modelId`` and ``model``, which the model itself carries)."""
        listed = {10: [109, 108, 101], 20: [201], 30: [109]}.get(m)
        if listed is None:
            return None
        versions = []
        for v in listed:
            entry = self.version(v)
            assert entry is not None
            versions.append({k: val for k, val in entry.items() if k not in ("modelId", "model")})
        return {"id": m, "name": f"Model {m}", "type": "LORA", "modelVersions": versions}

    # ---- HTTP ------------------------------------------------------------------------------

    def _serve(self, role: str) -> ThreadingHTTPServer:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                standin.hits.append(Hit(role, self.path, self.headers.get("authorization")))
                path = urlsplit(self.path).path
                if role == "storage":
                    standin._storage_get(self, path)
                else:
                    standin._site_get(self, path)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name=f"standin-{role}",
                         daemon=True).start()
        return server

    def _site_get(self, h: BaseHTTPRequestHandler, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[:4] == ["civitai", "api", "v1", "model-versions"] and len(parts) == 5:
            body = self.version(int(parts[4]))
            if body is None:
                return _send(h, 404, b'{"error":"Model version not found"}', "application/json")
            return _send(h, 200, json.dumps(body).encode(), "application/json")
        if parts[:4] == ["civitai", "api", "v1", "models"] and len(parts) == 5:
            body = self.model(int(parts[4]))
            if body is None:
                return _send(h, 404, b'{"error":"No model with id"}', "application/json")
            return _send(h, 200, json.dumps(body).encode(), "application/json")
        if parts[:4] == ["civitai", "api", "download", "models"] and len(parts) == 5:
            v = int(parts[4])
            if v == 103 and h.headers.get("authorization") != f"Bearer {TOKEN}":
                return _send(h, 401, b'{"error":"Unauthorized"}', "application/json")
            if v == 106:
                return _redirect(h, f"{self.site}/civitai/api/download/models/106")
            info = self.version(v)
            if info is None:
                return _send(h, 404, b"not found", "text/plain")
            name = info["files"][0]["name"]
            return _redirect(h, f"{self.storage}/files/{name}?sig=signed-{v}")
        if parts[:1] == ["hf"] and len(parts) >= 6:
            if parts[3] == "blob":
                return _send(h, 200, b"<html>the file's web page</html>", "text/html")
            if parts[3] == "resolve":
                if parts[-1] not in self.files:
                    return _send(h, 404, b"Entry not found", "text/plain")
                return _redirect(h, f"{self.storage}/files/{parts[-1]}?hf=1")
        _send(h, 404, b"no such page", "text/plain")

    def _storage_get(self, h: BaseHTTPRequestHandler, path: str) -> None:
        name = path.removeprefix("/files/")
        data = self.files.get(name)
        if data is None:
            return _send(h, 404, b"no such object", "text/plain")
        if name != "big_slow.safetensors":
            return _send(h, 200, data, "application/octet-stream")
        h.send_response(200)
        h.send_header("content-type", "application/octet-stream")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        step = 64 * 1024
        pause = self.slow_seconds / max(1, len(data) // step)
        record = SlowDownload()
        self.slow_downloads.append(record)
        try:
            for i in range(0, len(data), step):
                held = self.hold_after is not None and record.sent >= self.hold_after
                if held and self._hold(h):
                    record.cut = True
                    return
                h.wfile.write(data[i:i + step])
                h.wfile.flush()
                record.sent += len(data[i:i + step])
                time.sleep(pause)
            record.finished = True
        except (BrokenPipeError, ConnectionResetError):
            record.cut = True

    def _hold(self, h: BaseHTTPRequestHandler) -> bool:
        """Wait until released; True when the client closed the connection meanwhile."""
        while not self._released.is_set():
            readable, _, _ = select.select([h.connection], [], [], 0.02)
            if readable:
                try:
                    if h.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
        return False


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
    h.send_response(status)
    h.send_header("content-type", ctype)
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _redirect(h: BaseHTTPRequestHandler, location: str) -> None:
    h.send_response(302)
    h.send_header("location", location)
    h.send_header("content-length", "0")
    h.end_headers()
