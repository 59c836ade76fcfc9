"""Errors as ``application/problem+json`` (RFC 9457) with the project's error codes.

Every error the API returns has the body ``{"type", "title", "status", "detail", "code",
"retryable"}`` (plus ``retry_after`` when known). ``code`` is one of the codes of
:mod:`service.core.errors`; ``detail`` is one line a user understands. This module owns the
exception handlers that turn :class:`AatError`, request-validation errors, Starlette HTTP
errors and unexpected exceptions into that shape.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.errors import AatError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://ai-assets-toolbox.dev/problems/"

_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_params",
    429: "too_many_requests",
}


class Problem(BaseModel):
    """The problem+json body (documented in the OpenAPI schema)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool = False
    retry_after: float | None = None


class ApiError(AatError):
    """An HTTP-level error with an explicit status (auth, size limits, media types)."""

    def __init__(self, status: int, code: str, message: str, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.http_status = status


def problem_response(
    status: int, code: str, detail: str, *, retryable: bool = False,
    retry_after: float | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response; ``Retry-After`` is set from ``retry_after``."""
    body: dict[str, Any] = {
        "type": _TYPE_BASE + code,
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        "retryable": retryable,
    }
    hdrs = dict(headers or {})
    if retry_after is not None:
        body["retry_after"] = retry_after
        hdrs["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=hdrs)


def _status_for(exc: AatError) -> int:
    if exc.code == "not_ready":
        return 409
    if exc.code == "payload_too_large":
        return 413
    return int(getattr(exc, "http_status", 500))


def error_response(exc: AatError) -> JSONResponse:
    """The problem+json reply to ``exc`` (its status from the code or ``http_status``)."""
    status = _status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem_response(status, exc.code, exc.message, retryable=exc.retryable,
                            retry_after=exc.retry_after, headers=headers)


async def _aat_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AatError)
    if _status_for(exc) >= 500:
        log.warning("request %s %s failed: %s (%s)", request.method, request.url.path,
                    exc.message, exc.code)
    return error_response(exc)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    detail = f"invalid {_where(tuple(first.get('loc', ())))}: {first.get('msg', 'bad value')}"
    return problem_response(422, "invalid_params", detail + "; fix the request and retry")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # the framework could not parse the body: invalid input
        return problem_response(422, "invalid_params", f"malformed request body ({exc.detail});"
                                " send valid JSON")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = str(exc.detail) if exc.detail else code.replace("_", " ")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /docs for the API"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
    return problem_response(exc.status_code, code, detail, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the API document lists for this request's path (RFC 9110: the ``Allow``
    header of a 405 names them all, not only those of the first route that matched)."""
    app = request.app
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "allow_table",
                                                                   None)
    if table is None:
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{regex}$"), sorted(m.upper() for m in item)))
        app.state.allow_table = table
    path = request.url.path
    return next((methods for regex, methods in table if regex.match(path)), [])


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return problem_response(500, "internal_error",
                            "internal error; see the server log for details", retryable=True)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through problem+json."""
    app.add_exception_handler(AatError, _aat_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    schema = {"$ref": "#/components/schemas/Problem"}  # added by :func:`add_problem_schema`
    return {
        s: {"description": _HTTP_CODES.get(s, "error").replace("_", " "),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}
        for s in statuses
    }


def add_problem_schema(app: FastAPI) -> None:
    """Register ``Problem`` under ``components.schemas`` (referenced by every error reply)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
