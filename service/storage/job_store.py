"""The job store: the job row is the truth (status, stage, progress, lease, costs, output, error).

``SqlJobStore`` works on SQLite and PostgreSQL. Every change is a compare-and-set on the row's
``version`` counter (which also lets the API wait for changes), so concurrent writers on several
hosts never lose an update. Status changes go through :meth:`SqlJobStore.transition`, which uses
``check_transition`` and refuses illegal moves. A runner owns a running job through a lease
(``owner``, ``lease_until``); writes fenced by ``owner`` fail with :class:`LeaseLost` once another
runner has re-claimed the job.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from service.core.errors import JobError, NotFound
from service.core.jobs import JobStatus, check_transition
from service.storage.db import make_engine, migrate
from service.storage.tables import deliveries, jobs, tiles

log = logging.getLogger(__name__)

REUSABLE = (JobStatus.failed, JobStatus.canceled)  # a dedupe hit on these starts a new job


class LeaseLost(JobError):
    """Another runner re-claimed the job: this runner must stop writing."""

    code = "lease_lost"


class JobRow(dict[str, Any]):
    """One ``jobs`` row as a dict with attribute access (``row.status`` is a JobStatus)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


def _row(mapping: Any) -> JobRow:
    row = JobRow(mapping)
    row["status"] = JobStatus(row["status"])
    for key in ("created_at", "updated_at", "started_at", "finished_at"):
        value = row.get(key)
        if isinstance(value, datetime) and value.tzinfo is None:
            row[key] = value.replace(tzinfo=UTC)
    return row


Mutation = Callable[[JobRow], dict[str, Any] | None]


class SqlJobStore:
    """Jobs and tiles in one SQL database (see module docstring)."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)

    # ---- reads -------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except Exception:  # readiness probe: any failure means "not ready"
            log.warning("job store not reachable", exc_info=True)
            return False

    def get(self, job_id: str) -> JobRow:
        with self.engine.connect() as conn:
            found = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if found is None:
            raise NotFound(f"no job {job_id!r}; list jobs with GET /v1/jobs or `aat jobs`")
        return _row(found)

    def version(self, job_id: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(jobs.c.version).where(jobs.c.id == job_id)).scalar()
        if value is None:
            raise NotFound(f"no job {job_id!r}")
        return int(value)

    def list(
        self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[JobRow], str | None]:
        """Newest first; ``cursor`` is the last id of the previous page."""
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if cursor:
            query = query.where(jobs.c.id < cursor)
        with self.engine.connect() as conn:
            found = [_row(m) for m in conn.execute(query).mappings()]
        next_cursor = found[limit - 1].id if len(found) > limit else None
        return found[:limit], next_cursor

    def reclaimable(self, now: float | None = None) -> builtins.list[str]:
        """Ids of queued jobs and running jobs whose lease has expired (oldest first)."""
        now = time.time() if now is None else now
        cond = or_(
            jobs.c.status == JobStatus.queued.value,
            and_(jobs.c.status == JobStatus.running.value,
                 or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now)),
        )
        with self.engine.connect() as conn:
            return list(conn.execute(select(jobs.c.id).where(cond).order_by(jobs.c.id)).scalars())

    def queued_since(self, older_than_s: float) -> builtins.list[str]:
        """Ids of queued jobs untouched for ``older_than_s`` seconds (oldest first)."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        query = select(jobs.c.id).where(jobs.c.status == JobStatus.queued.value,
                                        jobs.c.updated_at <= cutoff).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def finished_before(self, cutoff: datetime) -> builtins.list[JobRow]:
        done = [s.value for s in JobStatus if s.terminal]
        query = select(jobs).where(jobs.c.status.in_(done), jobs.c.finished_at < cutoff)
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def all_rows(self) -> builtins.list[JobRow]:
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(select(jobs)).mappings()]

    # ---- creation ----------------------------------------------------------------------------
    def insert(self, values: dict[str, Any]) -> tuple[JobRow, bool]:
        """Insert a new queued job, or return the existing one for the same idempotency or
        dedupe key (``(row, False)``). A failed/canceled duplicate gives way to a new job."""
        for _ in range(3):
            existing = self._existing(values.get("idempotency_key"), values.get("dedupe_key"))
            if existing is not None:
                return existing, False
            now = utcnow()
            row = {"status": JobStatus.queued.value, "stage": "queued", "progress": 0.0,
                   "stages": {}, "version": 1, "created_at": now, "updated_at": now,
                   "attempts": 0, "cancel_requested": False, "remote_jobs": [], "timings": {},
                   "cost_runpod_jobs": 0, "cost_execution_s": 0.0, "cost_usd": 0.0, **values}
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(jobs).values(**row))
                return self.get(row["id"]), True
            except IntegrityError:
                log.debug("concurrent insert with the same key; re-reading")
        raise JobError("could not create the job (conflicting submissions); try again",
                       retryable=True)

    def by_idempotency_key(self, key: str) -> JobRow | None:
        """The job submitted with this ``Idempotency-Key``, if any."""
        with self.engine.connect() as conn:
            m = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).mappings().first()
        return _row(m) if m is not None else None

    def _existing(self, idem: str | None, dedupe: str | None) -> JobRow | None:
        with self.engine.begin() as conn:
            if idem:
                m = conn.execute(select(jobs).where(jobs.c.idempotency_key == idem)).mappings().first()
                if m is not None:
                    return _row(m)
            if dedupe:
                m = conn.execute(select(jobs).where(jobs.c.dedupe_key == dedupe)).mappings().first()
                if m is not None:
                    if JobStatus(m["status"]) not in REUSABLE:
                        return _row(m)
                    conn.execute(update(jobs).where(jobs.c.id == m["id"]).values(dedupe_key=None))
        return None

    # ---- changes -----------------------------------------------------------------------------
    def mutate(self, job_id: str, fn: Mutation, *, owner: str | None = None) -> JobRow:
        """Apply ``fn(row) -> changes`` with compare-and-set on ``version``; ``None`` = no change.
        With ``owner``, refuse (LeaseLost) when the row is no longer owned by it."""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            row = self.get(job_id)
            if owner is not None and (row.owner != owner or row.status != JobStatus.running):
                raise LeaseLost(f"job {job_id} is no longer owned by this runner")
            changes = fn(row)
            if changes is None:
                return row
            changes = {**changes, "version": row.version + 1, "updated_at": utcnow()}
            with self.engine.begin() as conn:
                res = conn.execute(update(jobs).where(
                    jobs.c.id == job_id, jobs.c.version == row.version).values(**changes))
            if res.rowcount == 1:
                row.update(changes)
                return _row(row)
            time.sleep(random.uniform(0.001, 0.01))  # lost the race: jittered retry
        raise JobError(f"job {job_id} is too busy to update; try again", retryable=True)

    def update(self, job_id: str, *, owner: str | None = None, **fields: Any) -> JobRow:
        return self.mutate(job_id, lambda _row: dict(fields), owner=owner)

    def transition(
        self, job_id: str, new: JobStatus, *, owner: str | None = None, **fields: Any
    ) -> JobRow:
        """The one function that changes a job's status (illegal moves raise IllegalTransition)."""

        def fn(row: JobRow) -> dict[str, Any]:
            check_transition(row.status, new)
            changes = {"status": new.value, **fields}
            if new.terminal:
                changes.setdefault("finished_at", utcnow())
                changes.update(owner=None, lease_until=None)
            return changes

        return self.mutate(job_id, fn, owner=owner)

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRow | None:
        """Take a queued job, or a running one whose lease expired (re-claim after a crash).
        Returns the claimed row, or None when the job is not claimable now."""
        claimed: builtins.list[bool] = []

        def fn(row: JobRow) -> dict[str, Any] | None:
            claimed.clear()
            now = time.time()
            if row.status == JobStatus.running and (row.lease_until or 0) < now:
                check_transition(JobStatus.running, JobStatus.queued)  # the runner died
            elif row.status != JobStatus.queued:
                return None
            check_transition(JobStatus.queued, JobStatus.running)
            claimed.append(True)
            return {"status": JobStatus.running.value, "owner": owner,
                    "lease_until": now + lease_s, "attempts": row.attempts + 1,
                    "started_at": row.started_at or utcnow()}

        row = self.mutate(job_id, fn)
        return row if claimed else None

    def requeue(self, job_id: str) -> bool:
        """Put a running job with an expired lease back to queued (a runner died).
        True only for the one caller that made the change."""
        changed: builtins.list[bool] = []

        def fn(row: JobRow) -> dict[str, Any] | None:
            changed.clear()
            if row.status != JobStatus.running or (row.lease_until or 0) >= time.time():
                return None
            check_transition(row.status, JobStatus.queued)
            changed.append(True)
            return {"status": JobStatus.queued.value, "owner": None, "lease_until": None}

        self.mutate(job_id, fn)
        return bool(changed)

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> JobRow:
        return self.update(job_id, owner=owner, lease_until=time.time() + lease_s)

    def request_cancel(self, job_id: str) -> JobRow:
        """Queued → canceled at once; running → flag for the runner; terminal → unchanged."""

        def fn(row: JobRow) -> dict[str, Any] | None:
            if row.status == JobStatus.queued:
                check_transition(row.status, JobStatus.canceled)
                return {"status": JobStatus.canceled.value, "cancel_requested": True,
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
    def put_tiles(self, job_id: str, rows: builtins.list[dict[str, Any]]) -> None:
        """Record the tile plan once (a resumed job keeps its captions, seeds and prompts)."""
        with self.engine.begin() as conn:
            have = set(conn.execute(select(tiles.c.idx).where(tiles.c.job_id == job_id)).scalars())
            new = [{"job_id": job_id, "status": "pending", "rerun": 0, **r}
                   for r in rows if r["idx"] not in have]
            if new:
                conn.execute(insert(tiles), new)

    def get_tiles(self, job_id: str) -> builtins.list[dict[str, Any]]:
        query = select(tiles).where(tiles.c.job_id == job_id).order_by(tiles.c.idx)
        with self.engine.connect() as conn:
            return [dict(m) for m in conn.execute(query).mappings()]

    def update_tile(self, job_id: str, idx: int, **fields: Any) -> dict[str, Any]:
        with self.engine.begin() as conn:
            res = conn.execute(update(tiles).where(
                tiles.c.job_id == job_id, tiles.c.idx == idx).values(**fields))
            if res.rowcount != 1:
                raise NotFound(f"job {job_id} has no tile {idx}; list tiles with GET .../tiles")
            found = conn.execute(select(tiles).where(
                tiles.c.job_id == job_id, tiles.c.idx == idx)).mappings().one()
        return dict(found)

    def tile_keys(self) -> set[str]:
        with self.engine.connect() as conn:
            return {k for k in conn.execute(select(tiles.c.cache_key)).scalars() if k}

    # ---- deliveries --------------------------------------------------------------------------
    def last_delivery(self, repo: str, path: str) -> str | None:
        """sha256 of the last file this service wrote to ``repo``/``path``, if any."""
        query = select(deliveries.c.sha256).where(deliveries.c.repo == repo,
                                                  deliveries.c.path == path)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def record_delivery(self, repo: str, path: str, sha256: str, job_id: str) -> None:
        values = {"sha256": sha256, "job_id": job_id, "delivered_at": utcnow()}
        with self.engine.begin() as conn:
            res = conn.execute(update(deliveries).where(
                deliveries.c.repo == repo, deliveries.c.path == path).values(**values))
            if res.rowcount == 0:
                conn.execute(insert(deliveries).values(repo=repo, path=path, **values))
