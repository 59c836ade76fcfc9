"""The RunPod job envelope: validate ``job["input"]``, dispatch by action, errors as data.

Every worker handler is ``run_action(job, adapter, actions)``: the input is validated against
the worker's versioned contract (``service.core.contracts``), the action's function returns a
pydantic response, and any failure comes back as ``WorkerErrorData(...).to_output()`` — a JSON
*string* under ``"error"``, so RunPod marks the job FAILED and the client can rebuild the
structured error (code, message, retryable). Nothing escapes as a bare exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from service.core.contracts import WorkerErrorData
from service.core.errors import AatError, ParamsError

log = logging.getLogger(__name__)

Action = Callable[[Any], BaseModel]


def run_action(job: Mapping[str, Any], adapter: TypeAdapter[Any],
               actions: Mapping[str, Action]) -> dict[str, Any]:
    """Run one job; the return value is the handler's return value for RunPod."""
    try:
        request = parse_input(job, adapter, actions)
        return actions[request.action](request).model_dump(mode="json")
    except AatError as exc:
        log.warning("job %s failed: %s (%s)", job.get("id"), exc.message, exc.code)
        return error_output(exc)
    except Exception as exc:  # a bug or a library failure: still structured, never a traceback
        log.exception("job %s crashed", job.get("id"))
        return WorkerErrorData(code="worker_internal", retryable=True,
                               message=f"worker error {type(exc).__name__}: {exc}"[:500]
                               ).to_output()


def parse_input(job: Mapping[str, Any], adapter: TypeAdapter[Any],
                actions: Mapping[str, Action]) -> Any:
    raw = job.get("input") if isinstance(job, Mapping) else None
    if not isinstance(raw, dict):
        raise ParamsError("job input must be a JSON object with an 'action' field",
                          code="invalid_input")
    action = raw.get("action")
    if action not in actions:
        raise ParamsError(f"unknown action {action!r}; this worker serves {sorted(actions)}",
                          code="unknown_action")
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        raise ParamsError(describe(exc, str(action)), code="invalid_params") from exc


def describe(exc: ValidationError, action: str) -> str:
    """First validation problems as one line: ``tiles.0.seed: Input should be ...``."""
    parts = []
    for err in exc.errors()[:3]:
        loc = list(err.get("loc", ()))
        if loc and loc[0] == action:  # the union's tag, not a field
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where or 'input'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts) + "; fix the request and send it again"


def error_output(exc: AatError) -> dict[str, str]:
    return WorkerErrorData(code=exc.code, message=exc.message,
                           retryable=exc.retryable).to_output()
