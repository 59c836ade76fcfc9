"""Filesystem events as hints: watchdog tells us *which folder* to rescan soon, nothing more.

Events can be dropped (inotify queue overflow), arrive early (``created`` at open), or only as
``moved`` (save by rename), so the handler never decides anything about a file: it puts the
folder that changed into a thread-safe set the daemon drains on its next tick. The observer is
supervised by the daemon (a polling observer may die silently on a flaky network drive).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)


class Hints:
    """Folders reported by events since the last drain (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: set[Path] = set()
        self.events = 0

    def add(self, folder: Path) -> None:
        with self._lock:
            self._folders.add(folder)
            self.events += 1

    def drain(self) -> set[Path]:
        with self._lock:
            out, self._folders = self._folders, set()
        return out


class _Handler(FileSystemEventHandler):
    def __init__(self, hints: Hints) -> None:
        self.hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(raw if isinstance(raw, str) else raw.decode())
            self.hints.add(path if event.is_directory else path.parent)


def start_observer(roots: list[Path], hints: Hints, polling: bool,
                   poll_interval_s: float = 1.0) -> BaseObserver:
    """Start an observer over ``roots``; falls back to polling when inotify runs out."""
    observer: BaseObserver = (PollingObserver(timeout=poll_interval_s) if polling
                              else Observer())
    handler = _Handler(hints)
    try:
        for root in roots:
            observer.schedule(handler, str(root), recursive=True)
        observer.start()
    except OSError as exc:
        if polling:
            raise
        log.warning("native file events unavailable (%s); polling instead", exc)
        return start_observer(roots, hints, polling=True, poll_interval_s=poll_interval_s)
    return observer


def stop_observer(observer: BaseObserver) -> None:
    try:
        observer.stop()
        observer.join(timeout=5)
    except RuntimeError:  # never started
        pass
