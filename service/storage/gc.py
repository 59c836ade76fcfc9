"""Garbage collection of artifacts (`aat gc`).

An artifact is deleted when no job that is still young (or unfinished) references it and the
file itself is older than the cutoff: so inputs, outputs and cached tiles of jobs finished more
than ``days`` ago go, while anything a running or recent job may still read stays. What the call
that made a cached result cost (kept beside it, ``service.pipeline.refine.keep_spent``) lives
exactly as long as that result. Job rows are kept (history); their ``result`` then answers that
it was garbage-collected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from service.pipeline.refine import spent_key
from service.storage.artifacts import ArtifactStore
from service.storage.job_store import SqlJobStore, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcReport:
    old_jobs: int
    files: int
    bytes: int
    dry_run: bool


def collect_garbage(store: SqlJobStore, artifacts: ArtifactStore, *, days: float,
                    dry_run: bool = False) -> GcReport:
    cutoff = utcnow() - timedelta(days=days)
    old_ids = {row.id for row in store.finished_before(cutoff)}
    keep: set[str] = set()
    for row in store.all_rows():
        if row.id in old_ids:
            continue
        keep.update(k for k in (row.input_sha256, row.output_sha256) if k)
        keep.update(((row.output or {}).get("files") or {}).values())  # an animation's .json...
        keep.update(t.cache_key for t in store.get_tiles(row.id) if t.cache_key)
    cutoff_ts = time.time() - days * 86400
    young = {e.key for e in artifacts.entries() if e.mtime >= cutoff_ts}
    kept = keep | young
    # a cached result's accounting goes with the result, whatever the age of its own file
    kept |= {spent_key(k) for k in kept}
    files, size = artifacts.delete_unreferenced(kept, dry_run=dry_run)
    log.info("gc: %d old jobs, %d files (%d bytes) %s", len(old_ids), files, size,
             "would be deleted" if dry_run else "deleted")
    return GcReport(len(old_ids), files, size, dry_run)
