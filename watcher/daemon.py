"""The watch-folder daemon: scans, stability, ledger and job flow tied into one loop.

Truth is a scan: a full scan of every watched folder at start and every
``watch_scan_interval_s``; watchdog events only make a scan of the folder they name happen on
the next tick. Each tick: rescan hinted folders, re-check candidates until stable, take stable
files (hash, decode, record a version in the ledger), submit pending versions, follow submitted
jobs. :func:`run_watcher` runs the loop until ``stop_event`` is set (``aat up`` calls it in a
thread; ``aat watch`` and ``python -m watcher`` in the main thread, stopping on SIGTERM).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from watchdog.observers.api import BaseObserver

from service.client import ServiceClient
from service.core.errors import AatError, ConfigError, ImageError, ParamsError
from service.settings import Settings
from watcher.deliver import sha256_bytes
from watcher.events import Hints, start_observer, stop_observer
from watcher.jobs import Backoff, JobFlow
from watcher.ledger import Entry, Ledger
from watcher.presets import Preset, PresetCache
from watcher.scan import (
    FileStat,
    LinkRefused,
    TooLarge,
    link_message,
    read_regular_file,
    scan_tree,
    stat_file,
)
from watcher.stability import StabilityTracker, inspect_image

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / "watcher.db"


def downloads(settings: Settings) -> bool:
    """Whether the watcher writes results itself (the service is remote) or the service does."""
    if settings.watch_delivery != "auto":
        return settings.watch_delivery == "download"
    return urlsplit(settings.server_url).hostname not in LOOPBACK


class Watcher:
    """One daemon over ``settings.watch_folders``."""

    def __init__(self, settings: Settings, client: ServiceClient | None = None) -> None:
        if not settings.watch_folders:
            raise ConfigError("no watch folders configured; set AAT_WATCH_FOLDERS "
                              "(e.g. '[\"/path/to/art\"]') or watch_folders in aat.toml")
        self.roots = [Path(p).expanduser().resolve() for p in settings.watch_folders]
        for root in self.roots:
            if not root.is_dir():
                raise ConfigError(f"watch folder {root} does not exist; create it or fix "
                                  "AAT_WATCH_FOLDERS")
        self.settings = settings
        self.ledger = Ledger(ledger_path(settings))
        self.presets = PresetCache()
        self.stability = StabilityTracker(settings.watch_stable_s)
        self.hints = Hints()
        self.client = client or ServiceClient.from_settings(settings)
        self.flow = JobFlow(self.ledger, self.client, self.presets, dict(settings.repos),
                            downloads(settings), Backoff(),
                            max_bytes=settings.max_upload_bytes)
        self.excluded = tuple(p for p in (settings.data_dir.resolve(),) if p not in self.roots)
        self._fingerprints: dict[Path, str] = {}
        self.observer: BaseObserver | None = None
        self.observer_restarts = 0
        self._next_full_scan = 0.0

    # scanning
    def full_scan(self, now: float) -> None:
        for root in self.roots:
            self.rescan(root, root, now)
        self._next_full_scan = now + self.settings.watch_scan_interval_s
        self.ledger.note_full_scan(time.time())

    def rescan(self, folder: Path, root: Path, now: float) -> None:
        """Reconcile one subtree with the ledger: new/changed files become candidates."""
        found = scan_tree(folder, self.excluded)
        for path, sig in found.items():
            self._consider(path, root, sig, now)
        for path in self.ledger.present_under(folder):
            if path not in found:
                self.ledger.mark_missing(path)
                log.info("%s was deleted", path)
        # vanished candidates need nothing here: check_candidates forgets them at their stat

    def _fingerprint(self, root: Path, folder: Path) -> str:
        fp = self._fingerprints.get(folder)
        if fp is None:
            try:
                fp = self.presets.get(root, folder).fingerprint()
            except ParamsError as exc:
                fp = "error:" + hashlib.sha256(exc.message.encode()).hexdigest()
            self._fingerprints[folder] = fp
        return fp

    def _consider(self, path: Path, root: Path, sig: FileStat, now: float) -> None:
        if path in self.stability:
            return  # already a candidate: check_candidates re-checks it every tick
        entry = self.ledger.get(path)
        if entry is not None and (entry.size, entry.mtime_ns) == (sig.size, sig.mtime_ns) \
                and entry.preset_fp == self._fingerprint(root, path.parent):
            if not entry.present:
                self.ledger.touch(path, (sig.size, sig.mtime_ns), entry.preset_fp)
            return
        if self.ledger.is_output(path):
            return
        self.stability.observe(path, sig, now)

    def check_candidates(self, now: float) -> int:
        taken = 0
        for path in self.stability.paths():
            if self.stability.observe(path, stat_file(path), now):
                self.take(path, now)
                taken += 1
        return taken

    def _root_of(self, path: Path) -> Path | None:
        for root in self.roots:
            if root == path or root in path.parents:
                return root
        return None

    # taking a stable file
    def take(self, path: Path, now: float) -> None:
        """Record a stable file's version; a new version becomes ``pending``."""
        root = self._root_of(path)
        sig = stat_file(path)
        if root is None or sig is None:
            return
        try:
            data = read_regular_file(path, self.settings.max_upload_bytes)
        except LinkRefused:
            self._refuse_link(path, root, sig)
            return
        except TooLarge as exc:
            self._refuse(path, root, sig, f"size:{sig.size}", exc.code, str(exc))
            return
        except OSError:
            return
        sha = sha256_bytes(data)
        if self.ledger.is_output(path, sha):
            return
        known = self._version(path, root, sig, sha)
        if known is None:
            return  # same bytes re-saved: not a new version
        version, fp, entry = known
        stat_pair = (sig.size, sig.mtime_ns)
        if entry is not None and entry.state == "submitted" and entry.job_id:
            self.flow.cancel_superseded(entry.job_id)  # an older result must not land last
        try:
            preset = self.presets.get(root, path.parent)
            image = inspect_image(data, path.name, self.settings.image_limits())
        except (ImageError, ParamsError) as exc:
            self.ledger.record_failed_version(path, root, stat_pair, sha, version, fp,
                                              exc.code, exc.message)
            log.warning("%s not submitted: %s", path, exc.message)
            return
        if self._looks_like_output(path, preset, image.size):
            return
        self.ledger.record_version(path, root, stat_pair, sha, version, fp)
        new = self.ledger.get(path)
        expected = (self.flow.expected_outputs(new, preset, image.size, image.format)
                    if new else [])
        for out in expected:  # an animation's sheet and .webp preview are images too
            if out != path:
                self.ledger.remember_output(out, None)

    def _version(self, path: Path, root: Path, sig: FileStat, sha: str
                 ) -> tuple[str, str, Entry | None] | None:
        """The version key of ``path``'s content ``sha`` under its preset, with the preset's
        fingerprint and the ledger entry; None when the ledger already has this version (its
        stat signature is refreshed: the same bytes saved again are not a new version)."""
        fp = self._fingerprint(root, path.parent)
        rel = PurePosixPath(path.relative_to(root).as_posix())
        version = hashlib.sha256(f"{sha}|{rel}|{fp}".encode()).hexdigest()
        entry = self.ledger.get(path)
        if entry is not None and entry.version_key == version:
            self.ledger.touch(path, (sig.size, sig.mtime_ns), fp)
            return None
        return version, fp, entry

    def _refuse_link(self, path: Path, root: Path, sig: FileStat) -> None:
        """A symbolic link is never followed (anyone who can write into a shared inbox could
        otherwise copy any image this host can read into the repo): it is recorded as failed
        with ``path_escape``, which `aat watch --status` lists, and logged once per version."""
        try:
            target = os.readlink(path)
        except OSError:
            target = ""
        self._refuse(path, root, sig, f"link:{target}", LinkRefused.code, link_message(path))

    def _refuse(self, path: Path, root: Path, sig: FileStat, seed: str, code: str,
                message: str) -> None:
        """Record a file that is not read (a link, a file over the upload limit) as a failed
        version, left where it is; ``seed`` stands in for its content in the version's hash,
        so the refusal is recorded and logged once per version."""
        sha = hashlib.sha256(seed.encode()).hexdigest()
        known = self._version(path, root, sig, sha)
        if known is None:
            return
        version, fp, _entry = known
        self.ledger.record_failed_version(path, root, (sig.size, sig.mtime_ns), sha, version, fp,
                                          code, message)
        log.warning("%s not submitted: %s", path, message)

    def _looks_like_output(self, path: Path, preset: Preset, size: tuple[int, int]) -> bool:
        """A suffix-named result (``*_x2.png``, an animation's ``*_walk.png``) where results
        may land in a watched folder."""
        if not preset.repo or preset.naming != "suffix" \
                or not path.stem.endswith(preset.result_tag(size)):
            return False
        repo = self.settings.repos.get(preset.repo or "")
        if repo is None:
            return True
        return any(repo == r or repo in r.parents or r in repo.parents for r in self.roots)

    # the loop
    def tick(self, now: float) -> None:
        self._fingerprints.clear()  # presets are re-read (cheaply, by mtime) once per tick
        if now >= self._next_full_scan:
            self.full_scan(now)
        else:
            for folder in _outermost(self.hints.drain()):
                root = self._root_of(folder)
                if root is not None:
                    self.rescan(folder, root, now)
        self.check_candidates(now)
        self.flow.submit_due(time.time())
        self.flow.poll_due(time.time())

    def run(self, stop_event: threading.Event) -> None:
        tick_s = max(0.05, min(0.25, self.settings.watch_stable_s / 4))
        self.observer = start_observer(self.roots, self.hints, self.settings.watch_polling)
        log.info("watching %s (observer: %s, delivery: %s)", ", ".join(map(str, self.roots)),
                 "polling" if self.settings.watch_polling else "native events",
                 "download" if self.flow.download else "service")
        try:
            while not stop_event.is_set():
                if not self.observer.is_alive():
                    log.warning("file observer stopped; restarting it and rescanning")
                    self.observer_restarts += 1
                    self.observer = start_observer(self.roots, self.hints,
                                                   self.settings.watch_polling)
                    self._next_full_scan = 0.0
                try:
                    self.tick(time.time())
                except AatError as exc:
                    log.error("watch step failed: %s", exc.message)
                except Exception:  # a daemon keeps going; the next tick starts from the ledger
                    log.exception("watch step failed unexpectedly")
                stop_event.wait(tick_s)
        finally:
            stop_observer(self.observer)
            self.close()
            log.info("watcher stopped")

    def close(self) -> None:
        self.flow.close()
        self.client.close()
        self.ledger.close()


def _outermost(folders: set[Path]) -> list[Path]:
    """Drop folders whose ancestor is also in the set (its rescan covers them)."""
    return [f for f in folders if not any(p in folders for p in f.parents)]


def run_watcher(settings: Settings, stop_event: threading.Event) -> None:
    """Watch ``settings.watch_folders`` until ``stop_event`` is set (safe to run in a thread)."""
    Watcher(settings).run(stop_event)
