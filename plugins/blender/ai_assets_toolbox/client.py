"""HTTP side of the add-on: the REST client and the worker thread that runs one job.

Standard library only and no ``bpy``: everything here may run on a worker thread. The thread
talks to Blender exclusively through a :class:`queue.Queue` of ``(kind, value)`` events:

    ("submitted", job_id)            the server accepted the upload
    ("progress", (fraction, stage))  a poll returned a running job
    ("done", result_path)            the result file is complete on disk
    ("canceled", message)            the job was canceled (by the user or the server)
    ("error", message)               one line a user can act on
    ("models", [names])              answer of a model-list fetch

Results are downloaded to ``<dest>.part`` and moved into place with ``os.replace``, so a
half-written file never replaces anything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USER_AGENT = "ai-assets-toolbox-blender/0.1"
TERMINAL = ("succeeded", "failed", "canceled")
MIME = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".tga": "image/x-tga", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
}


class ClientError(Exception):
    """A failure the panel shows as-is: ``code`` (e.g. ``unauthorized``) and one line."""

    def __init__(self, message: str, code: str = "client_error", status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (localhost, 127.0.0.0/8, ::1)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_url(url: str, online_access: bool) -> str:
    """Validate the server URL against Blender's online-access policy; return it normalised."""
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(
            f"Server URL {url!r} is not an http(s) address: set it in the add-on preferences "
            "(e.g. http://127.0.0.1:8765)", code="bad_url")
    if not online_access and not is_loopback(url):
        raise ClientError(
            f"{parts.hostname} is not this machine and Blender's online access is off: enable "
            "Preferences > System > Network > Allow Online Access, or use a 127.0.0.1 server",
            code="online_access")
    return url


def mime_for(path: str) -> str:
    return MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def encode_params(params: dict[str, Any]) -> str:
    """Query string for a raw-body submit; ``loras`` is a list of ``(name, weight)``."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None or value == "" or value == []:
            continue
        if key == "loras":
            value = ",".join(f"{name}:{weight:g}" for name, weight in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, float):
            value = f"{value:g}"
        pairs.append((key, str(value)))
    return urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)


def _problem_message(err: urllib.error.HTTPError) -> ClientError:
    """Turn an HTTP error reply (problem+json when possible) into a user-facing line."""
    code, detail = "http_error", ""
    try:
        body = json.loads(err.read().decode("utf-8", "replace") or "{}")
        code = str(body.get("code") or code)
        detail = str(body.get("detail") or body.get("title") or "")
    except (ValueError, OSError, AttributeError):
        pass
    if err.code == 401:
        return ClientError("Server rejected the API token (401): set the token in the add-on "
                           "preferences to the server's AAT_API_TOKEN", "unauthorized", 401)
    if err.code == 404 and not detail:
        detail = "not found on the server"
    return ClientError(f"Server error {err.code} ({code}): {detail or err.reason}", code, err.code)


class JobClient:
    """Thin urllib client for the job API (docs/api/contract.md)."""

    def __init__(self, base_url: str, token: str = "", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token.strip()
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[bytes, dict[str, str]]:
        # base_url passed check_server_url (http/https only)
        req = urllib.request.Request(self.base_url + path, data=body, method=method)  # noqa: S310
        req.add_header("User-Agent", USER_AGENT)
        req.add_header("Accept", "application/json, image/*")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.read(), dict(resp.headers.items())
        except urllib.error.HTTPError as err:
            raise _problem_message(err) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ClientError(f"Cannot reach the server at {self.base_url} ({reason}): start it "
                              "with `aat up` or fix the URL in the add-on preferences",
                              "unreachable") from err

    def _json(self, method: str, path: str, body: bytes | None = None,
              content_type: str | None = None) -> dict[str, Any]:
        data, _ = self._request(method, path, body, content_type)
        try:
            out = json.loads(data.decode("utf-8"))
        except ValueError as err:
            raise ClientError(f"Server at {self.base_url} did not answer JSON: is the URL the "
                              "AI Assets Toolbox API?", "bad_reply") from err
        if not isinstance(out, dict):
            raise ClientError("Server answered an unexpected JSON shape", "bad_reply")
        return out

    def submit(self, data: bytes, filename: str, params: dict[str, Any]) -> dict[str, Any]:
        query = encode_params({"filename": filename, **params})
        return self._json("POST", f"/v1/jobs?{query}", data, mime_for(filename))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def result(self, job_id: str) -> bytes:
        data, _ = self._request("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/result")
        return data

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/cancel")

    def models(self) -> list[str]:
        body = self._json("GET", "/v1/models")
        return [str(m.get("name")) for m in body.get("models", []) if isinstance(m, dict)]


def write_atomic(dest: str, data: bytes) -> None:
    """Write ``data`` to ``dest`` through ``dest.part`` + ``os.replace``."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    try:
        with open(part, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.remove(part)


class JobRunner(threading.Thread):
    """Submit one image, poll until terminal, download the result to ``dest``."""

    def __init__(self, client: JobClient, source_path: str, filename: str,
                 params: dict[str, Any], dest: str, poll_s: float = 0.5) -> None:
        super().__init__(daemon=True, name=f"aat-job-{filename}")
        self.client, self.source_path, self.filename = client, source_path, filename
        self.params, self.dest, self.poll_s = params, dest, poll_s
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.cancel_event = threading.Event()
        self.job_id: str | None = None

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:
        try:
            self._run()
        except ClientError as err:
            self.events.put(("error", err.message))
        except OSError as err:
            self.events.put(("error", f"Could not read or write a file: {err}"))

    def _run(self) -> None:
        with open(self.source_path, "rb") as fh:
            data = fh.read()
        job = self.client.submit(data, self.filename, self.params)
        self.job_id = str(job["id"])
        self.events.put(("submitted", self.job_id))
        while job.get("status") not in TERMINAL:
            if self.cancel_event.wait(self.poll_s):
                self.client.cancel(self.job_id)
                self.events.put(("canceled", "Canceled"))
                return
            job = self.client.job(self.job_id)
            self.events.put(("progress", (float(job.get("progress") or 0.0),
                                          str(job.get("stage") or ""))))
        self._finish(job)

    def _finish(self, job: dict[str, Any]) -> None:
        status = job.get("status")
        if status == "failed":
            err = job.get("error") or {}
            self.events.put(("error", f"Job failed ({err.get('code', 'error')}): "
                                      f"{err.get('message', 'no reason given')}"))
        elif status == "canceled":
            self.events.put(("canceled", "Canceled on the server"))
        else:
            write_atomic(self.dest, self.client.result(str(job["id"])))
            self.events.put(("done", self.dest))


class ModelsFetch(threading.Thread):
    """Fetch the LoRA names from ``GET /v1/models`` without blocking the UI."""

    def __init__(self, client: JobClient) -> None:
        super().__init__(daemon=True, name="aat-models")
        self.client = client
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.cancel_event = threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:
        try:
            self.events.put(("models", self.client.models()))
        except ClientError as err:
            self.events.put(("error", err.message))
