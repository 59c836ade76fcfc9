"""What `aat watch` and `python -m watcher` do: serve until SIGTERM, show status, retry.

Both entry points call these functions, so they behave the same.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from service.settings import Settings
from watcher.daemon import ledger_path, run_watcher
from watcher.ledger import Ledger

log = logging.getLogger(__name__)


def configure_logging(settings: Settings | None = None, level: str = "INFO") -> None:
    """The one logging setup (:func:`service.core.logs.configure_logging`) in the settings'
    format (``AAT_LOG_FORMAT``)."""
    from service.core.logs import configure_logging as setup

    setup(level, settings.log_format if settings is not None else "text")


def serve(settings: Settings) -> None:
    """Run the watcher in this thread; SIGTERM and SIGINT stop it gracefully."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the watcher", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_watcher(settings, stop)


def status_lines(settings: Settings, limit: int = 50) -> list[str]:
    """Counts per state and full scans so far, then every failed file with its reason (one
    line each)."""
    ledger = Ledger(ledger_path(settings))
    try:
        counts = ledger.counts()
        scans, last = ledger.full_scans()
        when = time.strftime("%H:%M:%S", time.localtime(last)) if last else "never"
        lines = ["  ".join(f"{state}: {n}" for state, n in counts.items())
                 + f"  full scans: {scans} (last {when})"]
        for entry in ledger.entries("pending"):
            if entry.error_code and entry.present:
                lines.append(f"waiting  {entry.path}  [{entry.error_code}] {entry.error_message}")
                break  # one line is enough: every pending file waits for the same service
        failed = [e for e in ledger.entries("failed") if e.present]
        for entry in failed[:limit]:
            lines.append(f"failed   {entry.path}  [{entry.error_code}] {entry.error_message}")
        if len(failed) > limit:
            lines.append(f"... and {len(failed) - limit} more failed files")
        return lines
    finally:
        ledger.close()


def retry(settings: Settings, path: Path) -> int:
    """Mark failed files at ``path`` (a file or a folder) for a new job; returns how many."""
    ledger = Ledger(ledger_path(settings))
    try:
        return ledger.retry(path.expanduser().resolve())
    finally:
        ledger.close()
