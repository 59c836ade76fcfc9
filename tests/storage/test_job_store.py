"""The job store on SQLite and real PostgreSQL: lifecycle, dedupe, leases, concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from service.core.errors import IllegalTransition, NotFound
from service.core.jobs import JobStatus
from service.storage.db import HEAD_REVISION, current_revision
from service.storage.job_store import LeaseLost, SqlJobStore
from service.storage.records import NewJob, NewTile, Queue
from service.storage.tables import jobs


def _values(job_id: str, dedupe_key: str | None = None, idempotency_key: str | None = None,
            queue: Queue | None = None) -> NewJob:
    return NewJob(id=job_id, filename="rock.png", input_sha256="a" * 64, input_ext=".png",
                  input_width=8, input_height=8, input_format="PNG", params={"scale": 2.0},
                  seed=2**32 - 1, dedupe_key=dedupe_key, idempotency_key=idempotency_key,
                  queue=queue)


def test_migrations_run_at_start_and_are_idempotent(db_url: str) -> None:
    store = SqlJobStore(db_url)
    assert current_revision(store.engine) == HEAD_REVISION
    again = SqlJobStore(db_url)  # a second starter migrates nothing and loses nothing
    store.insert(_values("j_1"))
    assert again.get("j_1").seed == 2**32 - 1


def test_lifecycle_refuses_illegal_moves(db_url: str) -> None:
    store = SqlJobStore(db_url)
    row, created = store.insert(_values("j_1"))
    assert created and row.status == JobStatus.queued and row.version == 1
    with pytest.raises(IllegalTransition):
        store.transition("j_1", JobStatus.succeeded)
    claimed = store.claim("j_1", "runner-a", lease_s=30)
    assert claimed is not None and claimed.status == JobStatus.running and claimed.attempts == 1
    done = store.transition("j_1", JobStatus.succeeded, owner="runner-a")
    assert done.finished_at is not None and done.owner is None
    with pytest.raises(IllegalTransition):
        store.transition("j_1", JobStatus.running)
    assert store.get("j_1").status == JobStatus.succeeded
    with pytest.raises(NotFound):
        store.get("j_missing")


def test_dedupe_and_idempotency_return_the_existing_job(db_url: str) -> None:
    store = SqlJobStore(db_url)
    first, created = store.insert(_values("j_1", dedupe_key="k", idempotency_key="idem"))
    again, created_again = store.insert(_values("j_2", dedupe_key="k"))
    by_key, created_key = store.insert(_values("j_3", dedupe_key="other", idempotency_key="idem"))
    assert created and not created_again and not created_key
    assert again.id == by_key.id == "j_1"
    # a failed job does not block a new attempt with the same input and params
    store.claim("j_1", "r", 30)
    store.transition("j_1", JobStatus.failed, owner="r", error={"code": "x", "message": "m"})
    retry, created_retry = store.insert(_values("j_4", dedupe_key="k"))
    assert created_retry and retry.id == "j_4"


def test_expired_lease_is_reclaimed_and_the_old_owner_is_fenced(db_url: str) -> None:
    now = [1_000_000.0]  # the store's clock, moved by hand: no sleeping past a lease
    store = SqlJobStore(db_url, clock=lambda: now[0])
    store.insert(_values("j_1"))
    assert store.claim("j_1", "dead-runner", lease_s=60) is not None
    now[0] += 59.9
    assert store.claim("j_1", "other", lease_s=30) is None  # lease still live
    assert "j_1" not in store.reclaimable()
    assert store.requeue("j_1") is False
    now[0] += 0.2  # the lease ran out: the runner died without a heartbeat
    assert "j_1" in store.reclaimable()
    row = store.claim("j_1", "other", lease_s=30)
    assert row is not None and row.owner == "other" and row.attempts == 2
    with pytest.raises(LeaseLost):
        store.heartbeat("j_1", "dead-runner", 30)
    with pytest.raises(LeaseLost):
        store.transition("j_1", JobStatus.succeeded, owner="dead-runner")
    assert store.transition("j_1", JobStatus.succeeded, owner="other").status == "succeeded"


def test_tile_writes_of_a_runner_that_lost_its_lease_are_refused(db_url: str) -> None:
    """A runner's tile writes (RunPod job ids, states, results) land only while it holds the
    lease: a stalled runner cannot overwrite the RunPod job id the new owner is re-polling.
    A user's edit (a prompt, no owner) still lands while the job runs."""
    now = [1_000_000.0]
    store = SqlJobStore(db_url, clock=lambda: now[0])
    store.insert(_values("j_1"))
    store.put_tiles("j_1", [NewTile(0, 0, 0, 8, 8), NewTile(1, 8, 0, 8, 8)])
    assert store.claim("j_1", "stalled", lease_s=10) is not None
    store.update_tile("j_1", 0, owner="stalled", remote_job_id="rp-1", cache_key="k")
    now[0] += 11  # the stalled runner missed its heartbeats; another runner takes the job
    assert store.claim("j_1", "new-owner", lease_s=10) is not None
    with pytest.raises(LeaseLost):
        store.update_tile("j_1", 0, owner="stalled", remote_job_id="rp-2", cache_key="k")
    with pytest.raises(LeaseLost):
        store.update_tile("j_1", 1, owner="stalled", status="refining")
    with pytest.raises(NotFound):
        store.update_tile("j_1", 7, owner="new-owner", status="refining")
    tiles = store.get_tiles("j_1")
    assert tiles[0].remote_job_id == "rp-1" and tiles[1].status == "pending"
    store.update_tile("j_1", 1, owner="new-owner", status="refining")
    store.update_tile("j_1", 1, prompt="a mossy rock")  # the API's edit: not a runner's write
    assert store.get_tiles("j_1")[1].status == "refining"
    assert store.get_tiles("j_1")[1].prompt == "a mossy rock"
    store.transition("j_1", JobStatus.succeeded, owner="new-owner")
    with pytest.raises(LeaseLost):  # a finished job is nobody's to write into
        store.update_tile("j_1", 1, owner="new-owner", status="refined")


def test_only_one_of_many_concurrent_claimers_wins(db_url: str) -> None:
    store = SqlJobStore(db_url)
    store.insert(_values("j_1"))
    winners: list[str] = []

    def claim(name: str) -> None:
        if store.claim("j_1", name, lease_s=30) is not None:
            winners.append(name)

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert store.get("j_1").owner == winners[0]


def test_concurrent_progress_updates_are_not_lost(db_url: str) -> None:
    store = SqlJobStore(db_url)
    store.insert(_values("j_1"))
    store.claim("j_1", "r", 30)

    def bump() -> None:
        for _ in range(10):
            store.mutate("j_1", lambda row: {"cost_runpod_jobs": row.cost_runpod_jobs + 1},
                         owner="r")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row = store.get("j_1")
    assert row.cost_runpod_jobs == 40
    assert row.version >= 42  # every change bumps the version the API waits on


def test_cancel_queued_is_immediate_running_is_flagged(db_url: str) -> None:
    store = SqlJobStore(db_url)
    store.insert(_values("j_1"))
    store.insert(_values("j_2"))
    assert store.request_cancel("j_1").status == JobStatus.canceled
    store.claim("j_2", "r", 30)
    flagged = store.request_cancel("j_2")
    assert flagged.status == JobStatus.running and flagged.cancel_requested
    assert store.request_cancel("j_1").status == JobStatus.canceled  # terminal: unchanged


def test_list_pages_newest_first(db_url: str) -> None:
    store = SqlJobStore(db_url)
    for i in range(5):
        store.insert(_values(f"j_{i}"))
    store.claim("j_3", "r", 30)
    page, cursor = store.list(limit=2)
    assert [r.id for r in page] == ["j_4", "j_3"] and cursor == "j_3"
    page2, cursor2 = store.list(limit=2, cursor=cursor)
    assert [r.id for r in page2] == ["j_2", "j_1"]
    last, end = store.list(limit=2, cursor=cursor2)
    assert [r.id for r in last] == ["j_0"] and end is None
    running, _ = store.list(status=JobStatus.running, limit=10)
    assert [r.id for r in running] == ["j_3"]


def test_tiles_are_recorded_once_and_keep_prompts(db_url: str) -> None:
    store = SqlJobStore(db_url)
    store.insert(_values("j_1"))
    plan = [NewTile(i, x=i * 8, y=0, w=8, h=8) for i in range(3)]
    store.put_tiles("j_1", plan)
    store.update_tile("j_1", 1, prompt="mossy stone")
    store.put_tiles("j_1", plan)  # a resumed job re-plans: nothing is overwritten
    tiles = store.get_tiles("j_1")
    assert [t.idx for t in tiles] == [0, 1, 2] and tiles[1].prompt == "mossy stone"
    with pytest.raises(NotFound):
        store.update_tile("j_1", 9, prompt="x")


def test_an_older_database_is_upgraded_in_place(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from service.storage.db import MIGRATIONS_DIR, make_engine

    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")  # a database from the first release
    with engine.begin() as conn:  # a job as the first release wrote it (its columns only)
        now = datetime.now(UTC)
        conn.execute(insert(jobs).values(
            id="j_old", status="queued", created_at=now, updated_at=now, filename="rock.png",
            input_sha256="a" * 64, input_ext=".png", input_width=8, input_height=8,
            input_format="PNG", params={"scale": 2.0}, seed=1))
    assert current_revision(engine) == "0001"
    store = SqlJobStore(db_url)  # starting the new version migrates it
    assert current_revision(store.engine) == HEAD_REVISION
    old = store.get("j_old")
    assert old.filename == "rock.png" and old.backend is None and old.queue is None
    assert old.kind == "upscale"  # jobs stored before revision 0004 are upscale jobs
    assert store.reclaimable(queue="embedded") == store.reclaimable(queue="celery") == ["j_old"]
    store.record_delivery("game", "tex/a_x2.png", "b" * 64, "j_old")
    store.record_delivery("game", "tex/a_x2.png", "c" * 64, "j_new")
    last = store.last_delivery("game", "tex/a_x2.png")
    assert last is not None and last.sha256 == "c" * 64 and last.job_id == "j_new"
    assert last.delivered_at.tzinfo is not None
    assert store.last_delivery("game", "tex/other.png") is None


def test_each_executor_takes_only_the_jobs_sent_to_its_queue(db_url: str) -> None:
    """An `aat up` on a Celery fleet's store must not run the fleet's jobs (nor the other way)."""
    store = SqlJobStore(db_url)
    store.insert(_values("j_1", queue="celery"))
    store.insert(_values("j_2", queue="embedded"))
    store.insert(_values("j_3"))  # stored before jobs had a queue: anyone may run it
    assert store.reclaimable(queue="embedded") == ["j_2", "j_3"]
    assert store.reclaimable(queue="celery") == ["j_1", "j_3"]
    assert store.queued_since(0.0, queue="celery") == ["j_1", "j_3"]
    assert store.unfinished_on("celery") == 1 and store.unfinished_on("embedded") == 1
    store.claim("j_1", "r", 30)
    store.transition("j_1", JobStatus.succeeded, owner="r")
    assert store.unfinished_on("celery") == 0
