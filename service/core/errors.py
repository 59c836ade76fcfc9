"""The one exception tree of AI Assets Toolbox, and the error codes that cross processes.

Every error a user can see carries a stable ``code`` (a short snake_case string), a one-line
``message`` that says what went wrong and what to do next, ``retryable`` (whether trying the
same thing again may succeed) and, where known, ``retry_after`` seconds.

    AatError                      code, message, retryable, retry_after, detail
    ├── InputError                the user's input is wrong; never retryable
    │   ├── ImageError            undecodable, truncated, unsupported mode, bomb, too large
    │   ├── ParamsError           a parameter is out of range or inconsistent
    │   └── PathError             a path escapes its root or names a forbidden file
    ├── ConfigError               settings are missing or invalid
    ├── BackendError              a GPU backend call failed
    │   ├── BackendAuthError      bad API key (not retryable)
    │   ├── BackendUnavailable    429 / 5xx / connect errors (retryable)
    │   ├── BackendTimeout        a remote job timed out (retryable)
    │   └── WorkerError           a worker returned a structured error
    ├── JobError                  job lifecycle errors
    │   ├── IllegalTransition     a status change the lifecycle forbids
    │   ├── JobCanceled           the job was canceled while running
    │   ├── InputMissing          the job's stored input is not in this runner's artifact store
    │   └── NotFound              no such job / model / tile
    └── DeliveryError             writing into a game repository failed

Library exceptions are translated at the boundary (``raise BackendTimeout(...) from exc``).
Errors travel between processes as data: :meth:`AatError.to_dict` / :func:`error_from_dict`.
This module imports nothing of ours and nothing heavy.
"""

from __future__ import annotations

from typing import Any


class AatError(Exception):
    """Base of every error this project raises on purpose."""

    code: str = "internal_error"
    retryable: bool = False
    http_status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after
        self.detail = detail or {}

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-able data: ``{"code", "message", "retryable", ...}``."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.detail:
            out["detail"] = self.detail
        return out


class InputError(AatError):
    code = "invalid_input"
    http_status = 422


class ImageError(InputError):
    """Codes: ``image_empty``, ``image_corrupt``, ``image_truncated``, ``image_unsupported``,
    ``image_too_large``, ``image_bomb``, ``output_too_large``."""

    code = "image_corrupt"


class ParamsError(InputError):
    code = "invalid_params"


class PathError(InputError):
    """Codes: ``path_escape``, ``path_forbidden``, ``path_not_found``."""

    code = "path_escape"
    http_status = 400


class ConfigError(AatError):
    code = "config_invalid"
    http_status = 500


class BackendError(AatError):
    code = "backend_error"
    http_status = 502


class BackendAuthError(BackendError):
    code = "backend_auth"
    retryable = False


class BackendUnavailable(BackendError):
    code = "backend_unavailable"
    retryable = True
    http_status = 503


class BackendTimeout(BackendError):
    code = "backend_timeout"
    retryable = True
    http_status = 504


class WorkerError(BackendError):
    """A worker answered with a structured error (its own ``code``/``retryable``)."""

    code = "worker_error"


class JobError(AatError):
    code = "job_error"
    http_status = 409


class IllegalTransition(JobError):
    code = "illegal_transition"


class JobCanceled(JobError):
    code = "job_canceled"


class InputMissing(JobError):
    """The job's input is not in the artifact store this runner reads (another data directory,
    or garbage-collected): submitting the file again stores it anew, hence retryable."""

    code = "input_missing"
    retryable = True


class NotFound(JobError):
    code = "not_found"
    http_status = 404


class DeliveryError(AatError):
    code = "delivery_failed"
    retryable = True
    http_status = 500


_BY_CODE: dict[str, type[AatError]] = {}


def _register(*classes: type[AatError]) -> None:
    for cls in classes:
        _BY_CODE.setdefault(cls.code, cls)


_register(
    InputError, ImageError, ParamsError, PathError, ConfigError, BackendError,
    BackendAuthError, BackendUnavailable, BackendTimeout, WorkerError, JobError,
    IllegalTransition, JobCanceled, NotFound, DeliveryError,
)
for _code in ("image_empty", "image_truncated", "image_unsupported", "image_too_large",
              "image_bomb", "output_too_large"):
    _BY_CODE[_code] = ImageError
for _code in ("path_forbidden", "path_not_found"):
    _BY_CODE[_code] = PathError


def upload_too_large(limit: int) -> str:
    """The one sentence for an image over ``AAT_MAX_UPLOAD_BYTES`` (``payload_too_large``),
    whether it was sent to the API or found by the watcher."""
    return (f"the upload is larger than {limit} bytes; send a smaller file or raise "
            "AAT_MAX_UPLOAD_BYTES on the server")


def error_for_code(code: str, message: str, **kw: Any) -> AatError:
    """An error of the class that owns ``code`` (``AatError`` for codes of no class here), e.g.
    a code read from another process's reply: ``except NotFound`` still catches it."""
    return _BY_CODE.get(code, AatError)(message, code=code, **kw)


def error_from_dict(data: Any) -> AatError:
    """Rebuild an error from its data form. Unknown shapes are kept verbatim in ``detail``."""
    if isinstance(data, dict) and isinstance(data.get("code"), str) and "message" in data:
        cls = _BY_CODE.get(data["code"], WorkerError)
        return cls(
            str(data["message"]),
            code=data["code"],
            retryable=bool(data.get("retryable", False)),
            retry_after=data.get("retry_after"),
            detail=data.get("detail") if isinstance(data.get("detail"), dict) else None,
        )
    return WorkerError(
        f"worker returned an error of unknown shape: {str(data)[:300]}",
        code="worker_error",
        retryable=False,
        detail={"raw": data if isinstance(data, str | int | float | bool | None | dict | list) else repr(data)},
    )
