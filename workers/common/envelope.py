"""The RunPod job envelope: validate ``job["input"]``, dispatch by action, errors as data.

Every worker handler is ``run_action(job, adapter, actions)``: the input is validated against
the worker's versioned contract (``service.core.contracts``), the action's function returns a
pydantic response, and any failure comes back as ``WorkerErrorData(...).to_output()`` — a JSON
*string* under ``"error"``, so RunPod marks the job FAILED and the client can rebuild the
structured error (code, message, retryable). Nothing escapes as a bare exception.
Successful outputs are remembered by the request's ``request_key`` (:class:`RecentResults`),
which makes a repeated job idempotent and free.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from service.core.contracts import WorkerErrorData
from service.core.errors import AatError, ParamsError
from workers.common import progress

log = logging.getLogger(__name__)

Action = Callable[[Any], BaseModel]


class RecentResults:
    """The last few successful outputs by ``request_key``, so a job RunPod delivers twice
    (or a client resubmits after an ambiguous 5xx) is answered without paying the GPU again."""

    def __init__(self, size: int = 16,
                 key_of: Callable[[Any], str | None] | None = None) -> None:
        self.size = size
        self.key_of = key_of or (lambda request: getattr(request, "request_key", None))
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> dict[str, Any] | None:
        with self._lock:
            if key is None or key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def clear(self) -> None:
        """Forget everything (the worker's models changed: old answers may be stale)."""
        with self._lock:
            self._items.clear()

    def put(self, key: str | None, output: dict[str, Any]) -> None:
        if key is None or self.size <= 0:
            return
        with self._lock:
            self._items[key] = output
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def run_action(job: Mapping[str, Any], adapter: TypeAdapter[Any],
               actions: Mapping[str, Action], recent: RecentResults | None = None
               ) -> dict[str, Any]:
    """Run one job; the return value is the handler's return value for RunPod."""
    try:
        request = parse_input(job, adapter, actions)
        key = recent.key_of(request) if recent is not None else None
        if recent is not None and (hit := recent.get(key)) is not None:
            log.info("job %s repeats request %s: answered from memory", job.get("id"), key)
            return hit
        with progress.running(job):  # an action may report progress (workers.common.progress)
            output: dict[str, Any] = actions[request.action](request).model_dump(mode="json")
        if recent is not None:
            recent.put(key, output)
        return output
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
