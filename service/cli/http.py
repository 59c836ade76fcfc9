"""The CLI's HTTP client for the REST API (``settings.server_url`` with the bearer token).

Turns problem+json replies into :class:`ApiCallError` (code, one-line message, status) and
reads the SSE progress stream, reconnecting with ``Last-Event-ID`` when the connection drops.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from service.core import formats
from service.core.errors import AatError
from service.settings import Settings


class ApiCallError(AatError):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, message: str, *, code: str, status: int = 0) -> None:
        super().__init__(message, code=code)
        self.status = status


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        code, detail = str(body.get("code", "http_error")), str(body.get("detail", ""))
    except (ValueError, AttributeError):
        code, detail = "http_error", resp.text[:200]
    raise ApiCallError(detail or f"HTTP {resp.status_code}", code=code, status=resp.status_code)


class ApiClient:
    """Small synchronous client over httpx; one instance per command."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(settings.server_url, token)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiCallError(f"cannot reach the API at {self.base_url} ({exc.__class__.__name__}"
                               "); start it with `aat up` or set AAT_SERVER_URL",
                               code="api_unreachable") from exc
        _raise_for(resp)
        return resp

    # ---- jobs --------------------------------------------------------------------------------
    def submit(self, file: Path, query: dict[str, str], idempotency_key: str | None = None,
               ) -> tuple[dict[str, Any], bool]:
        fmt = formats.by_suffix(file.suffix)
        ctype = fmt.media_type if fmt is not None else mimetypes.guess_type(file.name)[0]
        headers = {"Content-Type": ctype or "application/octet-stream"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with file.open("rb") as fh:
            resp = self.call("POST", "/v1/jobs", params={"filename": file.name, **query},
                             content=fh, headers=headers)
        return resp.json(), resp.status_code == 202

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/jobs/{_seg(job_id)}").json())

    def jobs(self, status: str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return dict(self.call("GET", "/v1/jobs", params=params).json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/jobs/{_seg(job_id)}/cancel").json())

    def result(self, job_id: str) -> tuple[bytes, str]:
        resp = self.call("GET", f"/v1/jobs/{_seg(job_id)}/result")
        return resp.content, resp.headers.get("content-type", "application/octet-stream")

    def events(self, job_id: str, *, retries: int = 5) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, job)`` pairs from the SSE stream until ``end``; reconnects on drops."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream("GET", f"/v1/jobs/{_seg(job_id)}/events", headers=headers,
                                      timeout=httpx.Timeout(30.0, read=60.0)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for(resp)
                    for event, data, ev_id in _parse_sse(resp.iter_lines()):
                        last_id = ev_id or last_id
                        failures = 0
                        yield event, json.loads(data)
                        if event == "end":
                            return
            except httpx.TransportError as exc:
                problem: Exception = exc
            else:
                problem = ConnectionError("the stream ended before the job did")
            failures += 1
            if failures > retries:
                raise ApiCallError(f"lost the progress stream of {job_id} ({problem}); check "
                                   f"later with `aat status {job_id}`", code="api_unreachable")
            time.sleep(min(0.5 * 2**failures, 5.0))

    # ---- models ------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/models").json()["models"])

    def upload_model(self, file: Path) -> dict[str, Any]:
        with file.open("rb") as fh:
            resp = self.call("POST", "/v1/models", params={"filename": file.name}, content=fh,
                             headers={"Content-Type": "application/octet-stream"},
                             timeout=httpx.Timeout(30.0, read=600.0))
        return dict(resp.json())

    def delete_model(self, name: str) -> None:
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise ApiCallError(f"LoRA name {name!r} must be a file name such as "
                               "style.safetensors (see `aat models list`)",
                               code="path_forbidden", status=400)
        self.call("DELETE", f"/v1/models/{_seg(name)}")


def _seg(value: str) -> str:
    """``value`` as one URL path segment: a `/` or `..` in an id can never reach another route."""
    return quote(value, safe="")


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """Minimal SSE parser: yields ``(event, data, id)`` for each dispatched event."""
    event, ev_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data), ev_id
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ev_id = value
