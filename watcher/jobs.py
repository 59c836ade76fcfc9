"""The service side of the watcher: submit pending versions, follow jobs, deliver results.

Each step reads its work from the ledger, so nothing lives only in memory: a watcher killed at
any point resumes from the ledger, and re-sending a version uses the same ``Idempotency-Key``,
which returns the job the service already has. When the service is unreachable every step
backs off together (one shared, jittered, capped delay) and the files stay ``pending``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from service.client import UNAVAILABLE, JobPublic, ServiceClient
from service.core.errors import AatError, DeliveryError, NotFound, ParamsError
from service.core.jobs import TargetSpec
from service.core.naming import confine, relative
from watcher.deliver import (
    animation_targets,
    relative_target,
    sha256_bytes,
    sha256_file,
    source_path,
    write_atomic,
    write_set,
)
from watcher.ledger import Entry, Ledger
from watcher.presets import Preset, PresetCache
from watcher.scan import LinkRefused, TooLarge, read_regular_file

log = logging.getLogger(__name__)

BATCH = 32  # ledger rows handled per step and tick
PARALLEL = 4  # HTTP calls in flight at once (the ledger is only touched by the loop thread)
_Work = tuple[Entry, bytes, Preset]


class Backoff:
    """One shared delay for calls to an unreachable service: 0.5 s doubling to ``cap_s``."""

    def __init__(self, cap_s: float = 15.0) -> None:
        self.cap_s = cap_s
        self.failures = 0
        self.until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until

    def fail(self, now: float, retry_after: float | None = None) -> float:
        self.failures += 1
        delay = min(self.cap_s, 0.5 * 2 ** (self.failures - 1)) * random.uniform(0.8, 1.2)
        self.until = now + max(delay, retry_after or 0.0)
        return self.until

    def ok(self) -> None:
        self.failures = 0
        self.until = 0.0


def idempotency_key(entry: Entry) -> str:
    """The version key, renewed by each ``aat watch --retry`` (a retry is a new request)."""
    if entry.retry_gen == 0:
        return entry.version_key
    return hashlib.sha256(f"{entry.version_key}:{entry.retry_gen}".encode()).hexdigest()


class JobFlow:
    """Moves ledger rows through pending → submitted → done | failed."""

    def __init__(self, ledger: Ledger, client: ServiceClient, presets: PresetCache,
                 repos: dict[str, Path], download: bool, backoff: Backoff, *,
                 max_bytes: int) -> None:
        self.ledger = ledger
        self.max_bytes = max_bytes  # the service's AAT_MAX_UPLOAD_BYTES: no larger file is read
        self.client = client
        self.presets = presets
        self.repos = repos
        self.download = download
        self.backoff = backoff
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="aat-watch-http")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # submit
    def submit_due(self, now: float) -> int:
        """Send due ``pending`` versions (a few at a time, in parallel); returns how many."""
        if not self.backoff.ready(now):
            return 0
        work = [w for e in self.ledger.due("pending", now, BATCH) if (w := self._prepare(e))]
        outcomes = list(self._pool.map(self._send, work))
        sent = 0
        down: list[tuple[Entry, AatError]] = []
        for (entry, _data, _preset), outcome in zip(work, outcomes, strict=True):
            if isinstance(outcome, AatError):
                if outcome.retryable or outcome.code == "unauthorized":
                    down.append((entry, outcome))
                else:
                    self.ledger.mark_failed(entry.path, outcome.code, outcome.message)
                    log.warning("%s failed: %s", entry.path, outcome.message)
                continue
            self.backoff.ok()
            log.info("submitted %s as job %s", entry.path, outcome.id)
            self._follow(entry, outcome)
            sent += 1
        if down:
            self._service_down(down)
        return sent

    def _prepare(self, entry: Entry) -> _Work | None:
        try:
            data = read_regular_file(entry.path, self.max_bytes)
        except (LinkRefused, TooLarge) as exc:  # swapped for a link, or grown, since taken
            self.ledger.mark_failed(entry.path, exc.code, str(exc))
            return None
        except OSError:
            self.ledger.mark_missing(entry.path)
            return None
        if sha256_bytes(data) != entry.sha256:
            return None  # changed since it was taken: the scan takes the new version
        try:
            preset = self.presets.get(entry.root, entry.path.parent)
        except ParamsError as exc:
            self.ledger.mark_failed(entry.path, exc.code, exc.message)
            return None
        return entry, data, preset

    def _send(self, work: _Work) -> JobPublic | AatError:
        entry, data, preset = work
        try:
            if preset.animate is not None:
                return self.client.submit_animation(data, entry.path.name, preset.animate,
                                                    self._target(entry, preset),
                                                    idempotency_key(entry))
            return self.client.submit(data, entry.path.name, preset.params,
                                      self._target(entry, preset), idempotency_key(entry))
        except AatError as exc:
            return exc

    def _service_down(self, down: list[tuple[Entry, AatError]]) -> None:
        now = time.time()
        retry_after = max((exc.retry_after or 0.0) for _, exc in down)
        until = self.backoff.fail(now, retry_after)
        for entry, exc in down:
            self.ledger.mark_retry_later(entry.path, until, exc.code, exc.message)
        log.warning("service not taking jobs (%s); %d file(s) wait, retrying in %.1f s",
                    down[0][1].message, len(down), until - now)

    def _target(self, entry: Entry, preset: Preset) -> TargetSpec | None:
        if self.download or not preset.repo:
            return None
        return TargetSpec.model_validate({"repo": preset.repo, "naming": preset.naming,
                                          "path": str(self._source_rel(entry, preset)),
                                          "mirror_dir": preset.mirror_dir or None})

    @staticmethod
    def _source_rel(entry: Entry, preset: Preset) -> PurePosixPath:
        rel = PurePosixPath(entry.path.relative_to(entry.root).as_posix())
        return source_path(rel, preset.target_dir)

    def expected_output(self, entry: Entry, preset: Preset, src_size: tuple[int, int],
                        input_format: str = "PNG") -> Path | None:
        """Where the service will deliver the result of ``entry`` on this machine, when we can
        know it (the service's own naming rule, :mod:`service.core.naming`); an animate
        job's sheet."""
        found = self.expected_outputs(entry, preset, src_size, input_format)
        return found[0] if found else None

    def expected_outputs(self, entry: Entry, preset: Preset, src_size: tuple[int, int],
                         input_format: str = "PNG") -> list[Path]:
        """Every file the job of ``entry`` will deliver on this machine: the result, or an
        animate job's sheet, .json, .tres and .webp preview (empty when we cannot know)."""
        root = self.repos.get(preset.repo or "")
        if root is None:
            return []
        rel = PurePosixPath(entry.path.relative_to(entry.root).as_posix())
        try:
            if preset.animate is not None:
                rels = animation_targets(rel, preset.animate, preset.naming, preset.target_dir,
                                         preset.mirror_dir)
            else:
                rels = [relative_target(rel, preset.params, preset.naming, preset.target_dir,
                                        preset.mirror_dir, src_size=src_size,
                                        input_format=input_format)]
            return [confine(root, r) for r in rels]
        except AatError:
            return []

    def cancel_superseded(self, job_id: str) -> None:
        """Best effort: cancel the job of a version that a newer one replaces."""
        try:
            self.client.cancel(job_id)
            log.info("canceled job %s: its file changed", job_id)
        except AatError as exc:
            log.warning("could not cancel superseded job %s: %s", job_id, exc.message)

    # follow
    def poll_due(self, now: float) -> int:
        """Read due ``submitted`` jobs, a few in parallel, and act on their status.

        A job still ``queued`` means the service has a backlog, and jobs sent after it are
        queued too: the round ends there rather than polling them all (polls cost the
        service time it would spend running jobs).
        """
        if not self.backoff.ready(now):
            return 0
        entries = self.ledger.due("submitted", now, BATCH)
        polled = 0
        for i in range(0, len(entries), PARALLEL):
            chunk = entries[i:i + PARALLEL]
            outcomes = list(self._pool.map(self._fetch, chunk))
            backlog = False
            for entry, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, NotFound):
                    log.warning("service lost job %s for %s; submitting again", entry.job_id,
                                entry.path)
                    self.ledger.mark_pending(entry.path)
                elif isinstance(outcome, AatError):
                    if outcome.retryable:
                        self.backoff.fail(now, outcome.retry_after)
                        return polled
                    self.ledger.mark_failed(entry.path, outcome.code, outcome.message)
                else:
                    self.backoff.ok()
                    backlog = backlog or outcome.status.value == "queued"
                    self._follow(entry, outcome)
                    polled += 1
            if backlog:
                break
        return polled

    def _fetch(self, entry: Entry) -> JobPublic | AatError:
        try:
            return self.client.job(entry.job_id or "")
        except AatError as exc:
            return exc

    def _follow(self, entry: Entry, job: JobPublic) -> None:
        status = job.status.value
        job_id = job.id
        if status == "succeeded":
            self._deliver(entry, job)
        elif status in ("failed", "canceled"):
            err = job.error
            self.ledger.mark_submitted(entry.path, job_id, 0)
            self.ledger.mark_failed(entry.path, err.code if err else f"job_{status}",
                                    err.message if err else f"job {job_id} was {status}")
            log.warning("%s: job %s %s: %s", entry.path, job_id, status,
                        err.message if err else "")
        else:
            polls = entry.attempts if entry.state == "submitted" else 0
            delay = min(5.0, 0.5 * 1.3 ** polls)
            self.ledger.mark_submitted(entry.path, job_id, time.time() + delay)

    def _deliver(self, entry: Entry, job: JobPublic) -> None:
        output = job.output
        job_id = job.id
        try:
            preset = self.presets.get(entry.root, entry.path.parent)
        except ParamsError as exc:
            self.ledger.mark_failed(entry.path, exc.code, exc.message)
            return
        if not self.download:
            delivered = output.delivered_path if output else None
            root = self.repos.get(preset.repo or "")
            abs_path = confine(root, relative(delivered)) if root and delivered else None
            if root and output is not None:  # an animation's .json/.tres/.webp beside it
                for rel in output.sidecars:
                    name = PurePosixPath(rel).name
                    self.ledger.remember_output(confine(root, relative(rel)),
                                                output.files.get(name))
            self.ledger.mark_submitted(entry.path, job_id, 0)
            self.ledger.mark_done(entry.path, delivered, output.sha256 if output else None,
                                  abs_path)
            return
        try:
            self._download(entry, preset, job)
        except AatError as exc:
            if exc.code == UNAVAILABLE:  # the service is down or busy: the file waits
                self.backoff.fail(time.time(), exc.retry_after)
                return
            self.ledger.mark_failed(entry.path, exc.code, exc.message)

    def _refuse_foreign(self, entry: Entry, preset: Preset, target: Path,
                        target_rel: PurePosixPath, digest: str) -> None:
        """As the service's delivery: in suffix and mirror naming a file this watcher never
        wrote there (an artist's own ``rock_x2.png``) is kept, unless it already holds these
        bytes."""
        if preset.naming == "replace" or not target.is_file():
            return
        current = sha256_file(target)
        if current != digest and not self.ledger.wrote(target, current):
            raise DeliveryError(f"{target_rel} already exists and was not written by AI Assets "
                                f"Toolbox; move it away, then run `aat watch --retry "
                                f"{entry.path}`", code="delivery_conflict")

    def _download(self, entry: Entry, preset: Preset, job: JobPublic) -> None:
        job_id, output = job.id, job.output
        self.ledger.mark_submitted(entry.path, job_id, 0)
        if not preset.repo:
            self.ledger.mark_done(entry.path, None, output.sha256 if output else None, None)
            return
        root = self.repos.get(preset.repo)
        if root is None:
            raise AatError(f"repo {preset.repo!r} is not configured on this machine; add it "
                           "to AAT_REPOS", code="config_invalid")
        data, _ctype = self.client.result(job_id)
        rel = PurePosixPath(entry.path.relative_to(entry.root).as_posix())
        if preset.animate is not None:
            self._download_animation(entry, preset, job, root, rel, data)
            return
        size = (job.input.width, job.input.height)
        target_rel = relative_target(rel, preset.params, preset.naming, preset.target_dir,
                                     preset.mirror_dir, output.format if output else None, size)
        target = confine(root, target_rel)
        digest = sha256_bytes(data)
        self._refuse_foreign(entry, preset, target, target_rel, digest)
        self.ledger.remember_output(target, digest)  # before the write: never an input
        written = write_atomic(target, data)
        log.info("%s -> %s (%s)", entry.path, target, "written" if written else "unchanged")
        self.ledger.mark_done(entry.path, str(target_rel), digest, target)

    def _download_animation(self, entry: Entry, preset: Preset, job: JobPublic, root: Path,
                            rel: PurePosixPath, sheet: bytes) -> None:
        """An animate job's sheet and companions, each checked, then written (sheet first)."""
        assert preset.animate is not None
        files = job.output.files if job.output else {}
        rels = animation_targets(rel, preset.animate, preset.naming, preset.target_dir,
                                 preset.mirror_dir)
        by_suffix = {PurePosixPath(name).suffix: name for name in files}
        blobs = [sheet] + [self.client.companion(job.id, by_suffix[r.suffix])
                           for r in rels[1:]]  # all fetched before anything is written
        targets = [confine(root, r) for r in rels]
        digests = [sha256_bytes(b) for b in blobs]
        for target, target_rel, digest in zip(targets, rels, digests, strict=True):
            self._refuse_foreign(entry, preset, target, target_rel, digest)
        for target, digest in zip(targets, digests, strict=True):
            self.ledger.remember_output(target, digest)  # before the write: never an input
        write_set([(t, b) for t, b in zip(targets, blobs, strict=True)])
        log.info("%s -> %s (+ %d files)", entry.path, targets[0], len(targets) - 1)
        self.ledger.mark_done(entry.path, str(rels[0]), digests[0], targets[0])
