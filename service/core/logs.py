"""The one logging setup of every process we start (API, job runners, watcher, CLI, workers).

:func:`configure_logging` installs one handler on the root logger with one of two formats:

* ``text`` — ``2026-12-06 04:10:00,123 INFO service.jobs.runner: job j_… claimed [job j_…]``
* ``json`` — one object per line: ``{"ts", "level", "logger", "message", "job_id"?, "exc"?}``,
  for log collectors (``AAT_LOG_FORMAT=json``).

The job id is a field of every record logged while a job runs: the job runner wraps the job in
:func:`job_context`, and a record may also carry its own (``log.info(..., extra={"job_id": i})``).
Only entry points call :func:`configure_logging`; library code only gets loggers. Standard
library only (the watcher and the workers import it too).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that speak at INFO about every request or start-up step: WARNING unless DEBUG.
CHATTY = ("httpx", "httpcore", "alembic", "watchdog", "uvicorn.access", "celery.redirected")

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("aat_job_id", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Records logged inside (this thread, and the tasks and threads it starts with a copy of
    its context) carry ``job_id``."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class _JobIdFilter(logging.Filter):
    """Give every record a ``job_id`` attribute (its own, the context's, or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        return f"{line} [job {job_id}]" if job_id and str(job_id) not in record.getMessage() \
            else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``job_id`` is a field when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            out["job_id"] = str(job_id)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _Handler(logging.StreamHandler):
    """The handler :func:`configure_logging` installs (found again to be replaced)."""


def configure_logging(level: str | int = "INFO", fmt: LogFormat | str = "text", *,
                      stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level`` in ``fmt`` (``text`` or ``json``); calling it
    again replaces the handler it installed before. Returns the handler."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: use text or json")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_JobIdFilter())
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root.setLevel(numeric)
    for name in CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    return handler
