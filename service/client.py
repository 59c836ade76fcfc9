"""The one typed REST client of the service's API (docs/api/contract.md), over httpx.

Used by the `aat` client commands and by the watcher; it returns the API's own view models
(:class:`JobPublic`, :class:`JobList`, :class:`ModelInfo`), never raw dicts. It imports nothing
that the watcher must not load (no sqlalchemy, fastapi, celery or torch).

Every failure is an :class:`AatError` whose ``http_status`` is the status of the reply (0 when
there was none):

* a problem+json reply keeps the service's ``code`` and one-line ``detail`` (known codes are
  rebuilt as their class, so ``except NotFound`` works);
* no answer (connection refused, timeout) and 429 / 5xx replies are ``service_unavailable``
  unless the body names another code, always ``retryable`` with the ``Retry-After`` seconds.

The SSE progress stream (:meth:`ServiceClient.events`) reconnects with ``Last-Event-ID`` when
the connection drops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from service.core import formats
from service.core.animate import AnimateParams
from service.core.contracts import ModelInfo
from service.core.errors import AatError, error_for_code
from service.core.jobs import JobList, JobPublic, TargetSpec
from service.core.params import UpscaleParams

if TYPE_CHECKING:
    from service.settings import Settings

UNAVAILABLE = "service_unavailable"


def unavailable(message: str, *, status: int = 0, retry_after: float | None = None) -> AatError:
    """The service cannot take the call now (down, busy, failing): try again later."""
    err = AatError(message, code=UNAVAILABLE, retryable=True, retry_after=retry_after)
    err.http_status = status
    return err


class ServiceClient:
    """Calls to one service base URL with an optional bearer token; one instance per user."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s,
                                  transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceClient:
        """A client for ``settings.server_url`` with ``settings.api_token``."""
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(settings.server_url, token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- jobs --------------------------------------------------------------------------------
    def submit_file(self, file: Path, query: dict[str, str],
                    idempotency_key: str | None = None) -> tuple[JobPublic, bool]:
        """``POST /v1/jobs`` with FILE as the raw body and parameters in the query string;
        returns the job and whether it is new (202) rather than an existing one (200)."""
        # the one suffix <-> media type table; an unknown suffix goes as octet-stream and the
        # service decodes the bytes
        headers = {"Content-Type": formats.media_type_for_suffix(file.suffix)}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with file.open("rb") as fh:
            resp = self._call("POST", "/v1/jobs", params={"filename": file.name, **query},
                              content=fh, headers=headers)
        return _model(JobPublic, resp), resp.status_code == 202

    def submit(self, data: bytes, filename: str, params: UpscaleParams,
               target: TargetSpec | None, idempotency_key: str) -> JobPublic:
        """``POST /v1/jobs`` (multipart); returns the job (new, or the existing one)."""
        files: dict[str, Any] = {
            "file": (filename, data, "application/octet-stream"),
            "params": (None, params.model_dump_json(exclude_none=True), "application/json"),
        }
        if target is not None:
            files["target"] = (None, target.model_dump_json(exclude_none=True),
                               "application/json")
        resp = self._call("POST", "/v1/jobs", files=files,
                          headers={"Idempotency-Key": idempotency_key})
        return _model(JobPublic, resp)

    def submit_animation(self, data: bytes, filename: str, params: AnimateParams,
                         target: TargetSpec | None, idempotency_key: str) -> JobPublic:
        """``POST /v1/animations``: the sprite as the raw body, its parameters and target in
        the query; returns the job (new, or the existing one)."""
        query = {"filename": filename}
        for key, value in params.model_dump(mode="json", exclude_none=True).items():
            query[key] = str(value).lower() if isinstance(value, bool) else str(value)
        if target is not None:
            query.update({"target_repo": target.repo, "target_path": target.path,
                          "naming": target.naming})
            if target.mirror_dir:
                query["mirror_dir"] = target.mirror_dir
        headers = {"Content-Type": formats.media_type_for_suffix(Path(filename).suffix),
                   "Idempotency-Key": idempotency_key}
        resp = self._call("POST", "/v1/animations", params=query, content=data,
                          headers=headers)
        return _model(JobPublic, resp)

    def job(self, job_id: str) -> JobPublic:
        return _model(JobPublic, self._call("GET", f"/v1/jobs/{_seg(job_id)}"))

    def jobs(self, status: str | None = None, limit: int = 50,
             cursor: str | None = None) -> JobList:
        """One page of jobs, newest first; pass ``next_cursor`` for the next page."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return _model(JobList, self._call("GET", "/v1/jobs", params=params))

    def cancel(self, job_id: str) -> JobPublic:
        return _model(JobPublic, self._call("POST", f"/v1/jobs/{_seg(job_id)}/cancel"))

    def retry(self, job_id: str, idempotency_key: str | None = None
              ) -> tuple[JobPublic, bool]:
        """``POST /v1/jobs/{id}/retry``: a failed or canceled job as a new job (same input,
        params, target and kind); returns it and whether it is new (202) rather than the job
        an earlier retry made (200)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        resp = self._call("POST", f"/v1/jobs/{_seg(job_id)}/retry", headers=headers)
        return _model(JobPublic, resp), resp.status_code == 202

    def companion(self, job_id: str, name: str) -> bytes:
        """One of an animate job's companion files (``output.files``: .json, .tres, .webp)."""
        return self._call("GET", f"/v1/jobs/{_seg(job_id)}/files/{_seg(name)}").content

    def result(self, job_id: str) -> tuple[bytes, str]:
        """The result image's bytes and content type."""
        resp = self._call("GET", f"/v1/jobs/{_seg(job_id)}/result")
        return resp.content, resp.headers.get("content-type", "application/octet-stream")

    def events(self, job_id: str, *, retries: int = 5) -> Iterator[tuple[str, JobPublic]]:
        """``(event, job)`` pairs from the SSE stream until ``end``; reconnects on drops."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self._http.stream("GET", f"/v1/jobs/{_seg(job_id)}/events",
                                       headers=headers,
                                       timeout=httpx.Timeout(30.0, read=60.0)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise _problem(resp)
                    for event, data, ev_id in parse_sse(resp.iter_lines()):
                        last_id = ev_id or last_id
                        failures = 0
                        yield event, JobPublic.model_validate_json(data)
                        if event == "end":
                            return
            except httpx.TransportError as exc:
                problem: Exception = exc
            else:
                problem = ConnectionError("the stream ended before the job did")
            failures += 1
            if failures > retries:
                raise unavailable(f"lost the progress stream of {job_id} ({problem}); check "
                                  f"later with `aat status {job_id}`")
            time.sleep(min(0.5 * 2**failures, 5.0))

    # ---- LoRAs -------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        body = _body(self._call("GET", "/v1/models"))
        return [ModelInfo.model_validate(m) for m in body.get("models", [])]

    def upload_model(self, file: Path) -> ModelInfo:
        with file.open("rb") as fh:
            resp = self._call("POST", "/v1/models", params={"filename": file.name}, content=fh,
                              headers={"Content-Type": "application/octet-stream"},
                              timeout=httpx.Timeout(30.0, read=600.0))
        return _model(ModelInfo, resp)

    def import_model(self, url: str, name: str | None = None) -> dict[str, Any]:
        """``POST /v1/models/imports``: the upscale worker downloads ``url`` onto its volume;
        returns the import (``id``, ``state``, ...) to follow with :meth:`model_import`."""
        body: dict[str, Any] = {"url": url, **({"name": name} if name else {})}
        return _body(self._call("POST", "/v1/models/imports", json=body))

    def model_import(self, import_id: str) -> dict[str, Any]:
        """``GET /v1/models/imports/{id}``: state, bytes done/total, the LoRA or the error."""
        return _body(self._call("GET", f"/v1/models/imports/{_seg(import_id)}"))

    def cancel_model_import(self, import_id: str) -> dict[str, Any]:
        """``POST /v1/models/imports/{id}/cancel``: stop it, keep nothing (an import that had
        already ended comes back unchanged)."""
        return _body(self._call("POST", f"/v1/models/imports/{_seg(import_id)}/cancel"))

    def delete_model(self, name: str) -> None:
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            err = error_for_code("path_forbidden", f"LoRA name {name!r} must be a file name "
                                 "such as style.safetensors (see `aat models list`)")
            err.http_status = 400
            raise err
        self._call("DELETE", f"/v1/models/{_seg(name)}")

    # ---- health ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /v1/health`` (no token needed): ``{"status", "version", ...}``."""
        return _body(self._call("GET", "/v1/health"))

    def ready(self) -> dict[str, Any]:
        """``GET /v1/ready``: ``{"ready": bool, "checks": {name: {"ok": bool, ...}}}``.
        A 503 (not ready) is returned as its body, not raised."""
        try:
            resp = self._http.get("/v1/ready")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code == 503:
            return _body(resp)
        if resp.status_code >= 400:
            raise _problem(resp)
        return _body(resp)

    # ---- plumbing ----------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code >= 400:
            raise _problem(resp)
        return resp

    def _unreachable(self, exc: Exception) -> AatError:
        return unavailable(f"cannot reach the service at {self.base_url} "
                           f"({exc.__class__.__name__}); start it with `aat up` or set "
                           "AAT_SERVER_URL")


def _seg(value: str) -> str:
    """``value`` as one URL path segment: a `/` or `..` in an id can never reach another route."""
    return quote(value, safe="")


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError as exc:
        raise unavailable(f"the service replied with non-JSON ({resp.status_code})",
                          status=resp.status_code) from exc
    if not isinstance(body, dict):
        raise unavailable("the service replied with an unexpected body", status=resp.status_code)
    return body


def _model(model: Any, resp: httpx.Response) -> Any:
    """The reply validated as ``model`` (a pydantic class)."""
    try:
        return model.model_validate(_body(resp))
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        kind = exc.__class__.__name__
        raise unavailable(f"the service's reply is not a {model.__name__} ({kind}); is "
                          "AAT_SERVER_URL this service?",
                          status=resp.status_code) from exc


def _problem(resp: httpx.Response) -> AatError:
    """The error a non-2xx reply stands for (see the module docstring)."""
    status = resp.status_code
    retry_after = _retry_after(resp.headers.get("retry-after"))
    try:
        body = resp.json()
    except ValueError:
        body = None
    transient = status == 429 or status >= 500
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        message = body.get("detail") or body.get("message") or body.get("title") or body["code"]
        err = error_for_code(body["code"], " ".join(str(message).split()),
                             retryable=transient or bool(body.get("retryable", False)),
                             retry_after=retry_after)
    elif transient:
        err = unavailable(f"the service is busy or failing (HTTP {status}); try again later",
                          retry_after=retry_after)
    elif status == 404:
        err = error_for_code("not_found", f"{resp.request.url.path} not found on the service")
    else:
        err = AatError(f"the service refused the request (HTTP {status}): "
                       f"{' '.join(resp.text[:200].split())}", code="service_refused")
    err.http_status = status
    return err


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
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


__all__ = ["JobList", "JobPublic", "ModelInfo", "ServiceClient", "UNAVAILABLE", "unavailable"]
