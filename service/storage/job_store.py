"""The job store: the job row is the truth (status, stage, progress, lease, costs, output, error).

``SqlJobStore`` works on SQLite and PostgreSQL. Every change is a compare-and-set on the row's
``version`` counter (which also lets the API wait for changes), so concurrent writers on several
hosts never lose an update. Status changes go through :meth:`SqlJobStore.transition`, which uses
``check_transition`` and refuses illegal moves. A runner owns a running job through a lease
(``owner``, ``lease_until``); writes fenced by ``owner`` fail with :class:`LeaseLost` once another
runner has re-claimed the job; so do the runner's tile writes (:meth:`SqlJobStore.update_tile`
with ``owner``). The rule is written once, :func:`_leased_to`.

Reads return typed, frozen records and writes take typed changes (``service.storage.records``):
``JobRecord``/``JobUpdate``, ``TileRecord``/``NewTile``/``TileUpdate``, ``DeliveryRecord``.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Unpack

from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from service.core.errors import JobError, NotFound
from service.core.jobs import JobStatus, check_transition
from service.storage.db import make_engine, migrate, shown_url
from service.storage.records import (
    DeliveryRecord,
    JobRecord,
    JobUpdate,
    NewJob,
    NewTile,
    Queue,
    TileRecord,
    TileUpdate,
)
from service.storage.tables import deliveries, jobs, tiles

log = logging.getLogger(__name__)

REUSABLE = (JobStatus.failed, JobStatus.canceled)  # a dedupe hit on these starts a new job


class LeaseLost(JobError):
    """Another runner re-claimed the job: this runner must stop writing. It cancels none of the
    job's RunPod jobs: the new owner re-polls them by their recorded ids (cancelling them would
    make it pay again); those in flight here finish into the cache (``drain``)."""

    code = "lease_lost"
    drain = True


def utcnow() -> datetime:
    return datetime.now(UTC)


def _on_queue(queue: Queue | None) -> builtins.list[ColumnElement[bool]]:
    """``queue``'s jobs and jobs stored before jobs had a queue; nothing when ``queue`` is None."""
    if queue is None:
        return []
    return [or_(jobs.c.queue == queue, jobs.c.queue.is_(None))]


def _tile_rows(job_id: str, plan: builtins.list[NewTile]) -> builtins.list[dict[str, Any]]:
    return [{"job_id": job_id, **dataclasses.asdict(t)} for t in plan]


def _leased_to(owner: str) -> builtins.list[ColumnElement[bool]]:
    """The lease rule, the one place it is written: the job is running and ``owner`` holds it.
    Every write fenced by ``owner`` (the job row's and its tiles') lands only under it."""
    return [jobs.c.owner == owner, jobs.c.status == JobStatus.running.value]


class _Changes(JobUpdate, total=False):
    """What the store itself writes besides a caller's :class:`JobUpdate`."""

    status: JobStatus
    owner: str | None
    attempts: int
    started_at: datetime | None
    cancel_requested: bool


Mutation = Callable[[JobRecord], JobUpdate | None]


class SqlJobStore:
    """Jobs and tiles in one SQL database (see module docstring)."""

    def __init__(self, url: str, *, run_migrations: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock`` gives the epoch seconds leases are measured in (tests pass their own)."""
        self.url = url
        self.clock = clock
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)

    @property
    def shown_url(self) -> str:
        """The store's URL without its password, for messages."""
        return shown_url(self.engine)

    # ---- reads -------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except Exception:  # readiness probe: any failure means "not ready"
            log.warning("job store not reachable", exc_info=True)
            return False

    def get(self, job_id: str) -> JobRecord:
        with self.engine.connect() as conn:
            found = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if found is None:
            raise NotFound(f"no job {job_id!r}; list jobs with GET /v1/jobs or `aat jobs`")
        return JobRecord.from_row(found)

    def owned(self, job_id: str, owner: str) -> JobRecord:
        """The job row while ``owner`` holds its lease, else :class:`LeaseLost`."""
        with self.engine.connect() as conn:
            found = conn.execute(select(jobs).where(jobs.c.id == job_id, *_leased_to(owner))
                                 ).mappings().first()
        if found is None:
            raise LeaseLost(f"job {job_id} is no longer owned by this runner")
        return JobRecord.from_row(found)

    def version(self, job_id: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(jobs.c.version).where(jobs.c.id == job_id)).scalar()
        if value is None:
            raise NotFound(f"no job {job_id!r}")
        return int(value)

    def list(
        self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[JobRecord], str | None]:
        """Newest first; ``cursor`` is the last id of the previous page."""
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if cursor:
            query = query.where(jobs.c.id < cursor)
        with self.engine.connect() as conn:
            found = [JobRecord.from_row(m) for m in conn.execute(query).mappings()]
        next_cursor = found[limit - 1].id if len(found) > limit else None
        return found[:limit], next_cursor

    def reclaimable(self, now: float | None = None, *, queue: Queue | None = None
                    ) -> builtins.list[str]:
        """Ids of queued jobs and running jobs whose lease has expired (oldest first); with
        ``queue``, only jobs sent to that queue (and jobs older than the ``queue`` column)."""
        now = self.clock() if now is None else now
        cond = or_(
            jobs.c.status == JobStatus.queued.value,
            and_(jobs.c.status == JobStatus.running.value,
                 or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now)),
        )
        query = select(jobs.c.id).where(cond, *_on_queue(queue)).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def queued_since(self, older_than_s: float, *, queue: Queue | None = None
                     ) -> builtins.list[str]:
        """Ids of queued jobs untouched for ``older_than_s`` seconds (oldest first)."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        query = select(jobs.c.id).where(jobs.c.status == JobStatus.queued.value,
                                        jobs.c.updated_at <= cutoff, *_on_queue(queue)
                                        ).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def unfinished_on(self, queue: Queue) -> int:
        """How many queued or running jobs were sent to ``queue``."""
        query = select(func.count()).select_from(jobs).where(
            jobs.c.queue == queue,
            jobs.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def lease_ends(self, *, queue: Queue | None = None) -> builtins.list[float]:
        """When the leases of the running jobs end (epoch seconds, latest first): each runner
        heartbeat pushes its job's end ``lease_s`` ahead."""
        query = select(jobs.c.lease_until).where(
            jobs.c.status == JobStatus.running.value, jobs.c.lease_until.is_not(None),
            *_on_queue(queue)).order_by(jobs.c.lease_until.desc())
        with self.engine.connect() as conn:
            return [float(v) for v in conn.execute(query).scalars()]

    def finished_before(self, cutoff: datetime) -> builtins.list[JobRecord]:
        done = [s.value for s in JobStatus if s.terminal]
        query = select(jobs).where(jobs.c.status.in_(done), jobs.c.finished_at < cutoff)
        with self.engine.connect() as conn:
            return [JobRecord.from_row(m) for m in conn.execute(query).mappings()]

    def all_rows(self) -> builtins.list[JobRecord]:
        with self.engine.connect() as conn:
            return [JobRecord.from_row(m) for m in conn.execute(select(jobs)).mappings()]

    # ---- creation ----------------------------------------------------------------------------
    def insert(self, new: NewJob, plan: builtins.list[NewTile] | None = None
               ) -> tuple[JobRecord, bool]:
        """Insert a new queued job, or return the existing one for the same idempotency or
        dedupe key (``(row, False)``). A failed/canceled duplicate gives way to a new job.
        ``plan`` (a rerun's) is its tile rows, written in the same transaction: no
        runner can claim the job before they exist and plan rows of its own."""
        for _ in range(3):
            existing = self._existing(new.idempotency_key, new.dedupe_key)
            if existing is not None:
                return existing, False
            now = utcnow()
            row = {"status": JobStatus.queued.value, "stage": "queued", "progress": 0.0,
                   "stages": {}, "version": 1, "created_at": now, "updated_at": now,
                   "attempts": 0, "cancel_requested": False, "remote_jobs": [], "timings": {},
                   "cost_runpod_jobs": 0, "cost_execution_s": 0.0, "cost_usd": 0.0,
                   **{k: v for k, v in dataclasses.asdict(new).items() if v is not None}}
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(jobs).values(**row))
                    if plan:
                        conn.execute(insert(tiles), _tile_rows(new.id, plan))
                return self.get(new.id), True
            except IntegrityError:
                log.debug("concurrent insert with the same key; re-reading")
        raise JobError("could not create the job (conflicting submissions); try again",
                       retryable=True)

    def by_idempotency_key(self, key: str) -> JobRecord | None:
        """The job submitted with this ``Idempotency-Key``, if any."""
        with self.engine.connect() as conn:
            m = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).mappings().first()
        return JobRecord.from_row(m) if m is not None else None

    def _existing(self, idem: str | None, dedupe: str | None) -> JobRecord | None:
        with self.engine.begin() as conn:
            if idem:
                m = conn.execute(select(jobs).where(jobs.c.idempotency_key == idem)).mappings().first()
                if m is not None:
                    return JobRecord.from_row(m)
            if dedupe:
                m = conn.execute(select(jobs).where(jobs.c.dedupe_key == dedupe)).mappings().first()
                if m is not None:
                    if JobStatus(m["status"]) not in REUSABLE:
                        return JobRecord.from_row(m)
                    conn.execute(update(jobs).where(jobs.c.id == m["id"]).values(dedupe_key=None))
        return None

    # ---- changes -----------------------------------------------------------------------------
    def mutate(self, job_id: str, fn: Mutation, *, owner: str | None = None) -> JobRecord:
        """Apply ``fn(row) -> changes`` with compare-and-set on ``version``; ``None`` = no change.
        With ``owner``, refuse (LeaseLost) when the row is no longer owned by it."""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            row = self.get(job_id) if owner is None else self.owned(job_id, owner)
            changes = fn(row)
            if changes is None:
                return row
            values: dict[str, Any] = {**changes, "version": row.version + 1,
                                      "updated_at": utcnow()}
            if "status" in values:
                values["status"] = JobStatus(values["status"]).value
            with self.engine.begin() as conn:
                res = conn.execute(update(jobs).where(
                    jobs.c.id == job_id, jobs.c.version == row.version,
                    *(_leased_to(owner) if owner is not None else [])).values(**values))
            if res.rowcount == 1:
                return row.changed(values)
            time.sleep(random.uniform(0.001, 0.01))  # lost the race: jittered retry
        raise JobError(f"job {job_id} is too busy to update; try again", retryable=True)

    def update(self, job_id: str, *, owner: str | None = None,
               **fields: Unpack[JobUpdate]) -> JobRecord:
        return self.mutate(job_id, lambda _: fields, owner=owner)

    def transition(self, job_id: str, new: JobStatus, *, owner: str | None = None,
                   **fields: Unpack[JobUpdate]) -> JobRecord:
        """The one function that changes a job's status (illegal moves raise IllegalTransition)."""

        def fn(row: JobRecord) -> _Changes:
            check_transition(row.status, new)
            changes: _Changes = {**fields, "status": new}
            if new.terminal:
                changes.setdefault("finished_at", utcnow())
                changes["owner"] = None
                changes["lease_until"] = None
            return changes

        return self.mutate(job_id, fn, owner=owner)

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
        """Take a queued job, or a running one whose lease expired (re-claim after a crash).
        Returns the claimed row, or None when the job is not claimable now."""
        claimed: builtins.list[bool] = []

        def fn(row: JobRecord) -> _Changes | None:
            claimed.clear()
            now = self.clock()
            if row.status == JobStatus.running and (row.lease_until or 0) < now:
                check_transition(JobStatus.running, JobStatus.queued)  # the runner died
            elif row.status != JobStatus.queued:
                return None
            check_transition(JobStatus.queued, JobStatus.running)
            claimed.append(True)
            return {"status": JobStatus.running, "owner": owner,
                    "lease_until": now + lease_s, "attempts": row.attempts + 1,
                    "started_at": row.started_at or utcnow()}

        row = self.mutate(job_id, fn)
        return row if claimed else None

    def requeue(self, job_id: str) -> bool:
        """Put a running job with an expired lease back to queued (a runner died).
        True only for the one caller that made the change."""
        changed: builtins.list[bool] = []

        def fn(row: JobRecord) -> _Changes | None:
            changed.clear()
            if row.status != JobStatus.running or (row.lease_until or 0) >= self.clock():
                return None
            check_transition(row.status, JobStatus.queued)
            changed.append(True)
            return {"status": JobStatus.queued, "owner": None, "lease_until": None}

        self.mutate(job_id, fn)
        return bool(changed)

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> JobRecord:
        return self.update(job_id, owner=owner, lease_until=self.clock() + lease_s)

    def request_cancel(self, job_id: str) -> JobRecord:
        """Queued → canceled at once; running → flag for the runner; terminal → unchanged."""

        def fn(row: JobRecord) -> _Changes | None:
            if row.status == JobStatus.queued:
                check_transition(row.status, JobStatus.canceled)
                return {"status": JobStatus.canceled, "cancel_requested": True,
                        "finished_at": utcnow(), "stage": "done"}
            if row.status == JobStatus.running and not row.cancel_requested:
                return {"cancel_requested": True}
            return None

        return self.mutate(job_id, fn)

    def delete_jobs(self, job_ids: builtins.list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(tiles).where(tiles.c.job_id.in_(job_ids)))
            conn.execute(delete(jobs).where(jobs.c.id.in_(job_ids)))

    # ---- tiles -------------------------------------------------------------------------------
    def put_tiles(self, job_id: str, plan: builtins.list[NewTile]) -> None:
        """Record the tile plan once (a resumed job keeps its captions, seeds and prompts)."""
        with self.engine.begin() as conn:
            have = set(conn.execute(select(tiles.c.idx).where(tiles.c.job_id == job_id)).scalars())
            new = _tile_rows(job_id, [t for t in plan if t.idx not in have])
            if new:
                conn.execute(insert(tiles), new)

    def get_tiles(self, job_id: str) -> builtins.list[TileRecord]:
        query = select(tiles).where(tiles.c.job_id == job_id).order_by(tiles.c.idx)
        with self.engine.connect() as conn:
            return [TileRecord.from_row(m) for m in conn.execute(query).mappings()]

    def update_tile(self, job_id: str, idx: int, *, owner: str | None = None,
                    **fields: Unpack[TileUpdate]) -> TileRecord:
        """Change one tile row. With ``owner`` (the runner's writes: progress, RunPod job ids,
        results) the change lands only while ``owner`` holds the job's lease, checked in the
        same transaction, else :class:`LeaseLost` and the row is unchanged; the API's edits (a
        user's prompt) pass no owner."""
        values: dict[str, Any] = dict(fields)
        where = [tiles.c.job_id == job_id, tiles.c.idx == idx]
        with self.engine.begin() as conn:
            if owner is not None:
                # PostgreSQL: hold the job row shared, so a re-claim waits for this write;
                # SQLite (one writer at a time): the condition in the UPDATE decides
                conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)
                             .with_for_update(read=True))
                where.append(exists().where(jobs.c.id == job_id, *_leased_to(owner)))
            if "timings" in fields:  # merged into the stored ones (see TileUpdate.timings)
                stored = conn.execute(select(tiles.c.timings).where(
                    tiles.c.job_id == job_id, tiles.c.idx == idx).with_for_update()).scalar()
                values["timings"] = {**(stored or {}), **fields["timings"]}
            res = conn.execute(update(tiles).where(*where).values(**values))
            if res.rowcount != 1:
                there = conn.execute(select(tiles.c.idx).where(
                    tiles.c.job_id == job_id, tiles.c.idx == idx)).first()
                if there is not None and owner is not None:
                    raise LeaseLost(f"job {job_id} is no longer owned by this runner")
                raise NotFound(f"job {job_id} has no tile {idx}; list tiles with GET .../tiles")
            found = conn.execute(select(tiles).where(
                tiles.c.job_id == job_id, tiles.c.idx == idx)).mappings().one()
        return TileRecord.from_row(found)

    def tile_keys(self) -> set[str]:
        with self.engine.connect() as conn:
            return {k for k in conn.execute(select(tiles.c.cache_key)).scalars() if k}

    # ---- deliveries --------------------------------------------------------------------------
    def last_delivery(self, repo: str, path: str) -> DeliveryRecord | None:
        """The last file this service wrote to ``repo``/``path``, if any."""
        query = select(deliveries).where(deliveries.c.repo == repo, deliveries.c.path == path)
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return DeliveryRecord.from_row(found) if found is not None else None

    def record_delivery(self, repo: str, path: str, sha256: str, job_id: str) -> None:
        values = {"sha256": sha256, "job_id": job_id, "delivered_at": utcnow()}
        with self.engine.begin() as conn:
            res = conn.execute(update(deliveries).where(
                deliveries.c.repo == repo, deliveries.c.path == path).values(**values))
            if res.rowcount == 0:
                conn.execute(insert(deliveries).values(repo=repo, path=path, **values))
