"""The watcher's REST client for the service (docs/api/contract.md), over httpx.

Every failure becomes an :class:`AatError` with the service's code: problem+json replies are
rebuilt with :func:`error_from_dict`; connection errors, timeouts, 429 and 5xx become
``service_unavailable`` (retryable), so the daemon keeps the file pending and tries later.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from service.core.errors import AatError, NotFound, error_from_dict
from service.core.params import UpscaleParams

log = logging.getLogger(__name__)


def unavailable(message: str, retry_after: float | None = None) -> AatError:
    return AatError(message, code="service_unavailable", retryable=True,
                    retry_after=retry_after)


class ServiceClient:
    """Submit images, read jobs and fetch results from one service base URL."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def submit(self, data: bytes, filename: str, params: UpscaleParams,
               target: dict[str, Any] | None, idempotency_key: str) -> dict[str, Any]:
        """``POST /v1/jobs`` (multipart); returns the job (new, or the existing one)."""
        files: dict[str, Any] = {
            "file": (filename, data, "application/octet-stream"),
            "params": (None, params.model_dump_json(exclude_none=True), "application/json"),
        }
        if target is not None:
            files["target"] = (None, json.dumps(target), "application/json")
        resp = self._call("POST", "/v1/jobs", files=files,
                          headers={"Idempotency-Key": idempotency_key})
        return _json(resp)

    def job(self, job_id: str) -> dict[str, Any]:
        return _json(self._call("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _json(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def result(self, job_id: str) -> tuple[bytes, str]:
        """The result image bytes and their content type."""
        resp = self._call("GET", f"/v1/jobs/{job_id}/result")
        return resp.content, resp.headers.get("content-type", "")

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise unavailable(f"service at {self.base_url} unreachable ({exc!r}); "
                              "is `aat up` running?") from exc
        if resp.status_code < 400:
            return resp
        raise _problem(resp)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError as exc:
        raise unavailable(f"service replied with non-JSON ({resp.status_code})") from exc
    if not isinstance(body, dict):
        raise unavailable("service replied with an unexpected body")
    return body


def _problem(resp: httpx.Response) -> AatError:
    retry_after = _retry_after(resp.headers.get("retry-after"))
    if resp.status_code == 429 or resp.status_code >= 500:
        return unavailable(f"service busy or failing ({resp.status_code})", retry_after)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        message = body.get("detail") or body.get("message") or body.get("title") or body["code"]
        return error_from_dict({"code": body["code"], "message": str(message),
                                "retryable": bool(body.get("retryable", False))})
    if resp.status_code == 404:
        return NotFound(f"{resp.request.url.path} not found on the service")
    return AatError(f"service refused the request ({resp.status_code}): {resp.text[:200]}",
                    code="service_refused")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
