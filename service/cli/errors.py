"""The one error → exit-status rule of every `aat` command.

A command never prints its own errors: it raises, and :func:`report` prints one line
``error [code]: message`` on stderr and returns the exit status. The statuses
(README "Exit statuses"):

====  ==========  =============================================================================
0     ok          the command did what it was asked
1     failed      the work failed or the service could not do it now: a job failed, a GPU or
                  delivery error, the service is unreachable or busy (trying later may help)
2     usage       the command line or the input is wrong: an unknown option, a bad value, an
                  image or path the command refuses, an id the service does not know
3     setup       the installation or the settings are wrong: invalid settings, a missing
                  extra, a refused API token or RunPod key, an insecure bind, a port in use
130   interrupted Ctrl-C
====  ==========  =============================================================================

Unexpected exceptions (bugs) are not translated: they keep their traceback.
This module stays cheap to import (`aat --help` loads it).
"""

from __future__ import annotations

import sys
from typing import TextIO

from service.core.errors import AatError, BackendAuthError, ConfigError, InputError

OK, FAILED, USAGE, SETUP, INTERRUPTED = 0, 1, 2, 3, 130

# Codes that say "fix the installation or settings", whatever class raised them.
SETUP_CODES = frozenset({"missing_extra", "unauthorized", "forbidden", "insecure_bind",
                         "weak_token", "port_in_use", "config_invalid", "store_in_use"})


class Interrupted(AatError):
    """The user pressed Ctrl-C; the message says what was left untouched."""

    code = "interrupted"


def exit_status(exc: BaseException) -> int:
    """The exit status for ``exc`` (see the table in the module docstring)."""
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        return INTERRUPTED
    if not isinstance(exc, AatError):
        return USAGE if _is_usage(exc) else FAILED
    status = int(getattr(exc, "http_status", 0) or 0)
    if isinstance(exc, ConfigError | BackendAuthError) or exc.code in SETUP_CODES \
            or status in (401, 403):
        return SETUP
    if isinstance(exc, InputError) or 400 <= status < 500:
        return USAGE
    return FAILED


def handle(exc: BaseException) -> int:
    """What the `aat` group does with anything a command raised: print the one line and
    return the status; a bare ``aat`` / ``aat models`` prints the help (status 2); a missing
    optional extra says which to install; ``SystemExit`` and bugs propagate (traceback)."""
    if isinstance(exc, SystemExit):
        raise exc
    if type(exc).__name__ == "NoArgsIsHelpError":
        print(getattr(exc, "format_message", lambda: str(exc))(), file=sys.stderr)
        return USAGE
    if type(exc).__name__ == "Abort":  # click's Ctrl-C / EOF at a prompt
        exc = KeyboardInterrupt()
    if isinstance(exc, ModuleNotFoundError):
        needs = missing_extra(exc)
        if needs is None:
            raise exc
        return report(AatError(f"this command needs {needs}", code="missing_extra"))
    if isinstance(exc, AatError | KeyboardInterrupt | MemoryError) or _is_usage(exc):
        return report(exc)
    raise exc


def one_line(text: str) -> str:
    """``text`` on one line (a message never spans lines on the terminal)."""
    return " ".join(str(text).split())


def report(exc: BaseException, stream: TextIO | None = None) -> int:
    """Print ``error [code]: message`` for ``exc`` on stderr; return its exit status."""
    code, message = _code_and_message(exc)
    print(f"error [{code}]: {one_line(message)}", file=stream or sys.stderr, flush=True)
    return exit_status(exc)


def _code_and_message(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, AatError):
        return exc.code, exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "stopped by Ctrl-C"
    if isinstance(exc, MemoryError):
        return "out_of_memory", "not enough memory for this size; use a smaller scale or size"
    if _is_usage(exc):
        return _usage(exc)
    return "internal_error", f"{exc.__class__.__name__}: {exc}"


def _is_usage(exc: BaseException) -> bool:
    return any(c.__name__ == "UsageError" for c in type(exc).__mro__)


def _usage(exc: BaseException) -> tuple[str, str]:
    """A click usage error as ``(code, message)``: a bad value is ``invalid_params`` (as the
    same value refused later would be), anything else ``usage``; both point at --help."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "aat") or "aat"
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    message = message.rstrip(".")
    code = "invalid_params" if type(exc).__name__ == "BadParameter" else "usage"
    return code, f"{message}; see `{path} --help`"


# Top-level modules of the optional extras in pyproject.toml -> the extra that installs them.
_EXTRA_OF = {
    **dict.fromkeys(("fastapi", "uvicorn", "multipart", "python_multipart", "sqlalchemy",
                     "alembic", "psycopg", "celery", "kombu", "redis", "prometheus_client"),
                    "service"),
    "watchdog": "watcher",
    **dict.fromkeys(("boto3", "botocore", "s3transfer"), "s3"),
    **dict.fromkeys(("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors",
                     "runpod"), "gpu"),
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """'the 'X' extra (module is not installed); install it with: ...' when ``exc`` is a
    module of an optional extra, else None."""
    top = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF.get(top)
    if extra is None:
        return None
    return (f"the '{extra}' extra ({top} is not installed); install it with: "
            f"pip install 'ai-assets-toolbox[{extra}]' (from a clone: "
            f".venv/bin/pip install -e '.[{extra}]')")
