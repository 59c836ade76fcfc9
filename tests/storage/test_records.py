"""The typed hub: every column is a typed record field, and mypy refuses a column typo."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from service.core.jobs import JobStatus
from service.storage.job_store import SqlJobStore
from service.storage.records import (
    DeliveryRecord,
    JobRecord,
    JobUpdate,
    NewJob,
    NewTile,
    TileRecord,
    TileUpdate,
)
from service.storage.tables import deliveries, jobs, tiles

ROOT = Path(__file__).resolve().parents[2]


def _names(record: type) -> set[str]:
    return {f.name for f in dataclasses.fields(record)}


def test_records_hold_exactly_the_tables_columns() -> None:
    """A migration that adds a column must add a typed field (and the other way round)."""
    assert _names(JobRecord) == {c.name for c in jobs.columns}
    assert _names(TileRecord) == {c.name for c in tiles.columns}
    assert _names(DeliveryRecord) == {c.name for c in deliveries.columns}
    assert set(JobUpdate.__annotations__) < {c.name for c in jobs.columns}
    assert set(TileUpdate.__annotations__) < {c.name for c in tiles.columns}
    assert _names(NewJob) < {c.name for c in jobs.columns}
    assert _names(NewTile) < {c.name for c in tiles.columns}


def test_a_caller_cannot_write_status_around_the_lifecycle() -> None:
    assert "status" not in JobUpdate.__annotations__
    assert {"id", "version", "created_at", "updated_at", "owner"}.isdisjoint(
        JobUpdate.__annotations__)


def test_records_read_back_typed_on_both_databases(db_url: str) -> None:
    store = SqlJobStore(db_url)
    row, _ = store.insert(NewJob(id="j_1", filename="rock.png", input_sha256="a" * 64,
                                 input_ext=".png", input_width=8, input_height=8,
                                 input_format="PNG", params={"scale": 2.0}, seed=7))
    assert isinstance(row, JobRecord) and row.status is JobStatus.queued
    assert row.stages == {} and row.remote_jobs == [] and row.timings == {}
    store.claim("j_1", "r", 30)
    moved = store.update("j_1", owner="r", stage="refine",
                         stages={"refine": {"done": 1, "total": 4}}, cost_usd=0.25)
    assert moved == store.get("j_1")  # the returned record is what a fresh read sees
    assert moved.stages["refine"]["done"] == 1 and moved.cost_usd == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        moved.stage = "blend"  # type: ignore[misc]
    done = store.transition("j_1", JobStatus.failed, owner="r",
                            error={"code": "x", "message": "m", "retryable": True})
    assert done.status is JobStatus.failed and done.error == {"code": "x", "message": "m",
                                                              "retryable": True}
    assert isinstance(done.finished_at, datetime) and done.finished_at.tzinfo is not None
    store.put_tiles("j_1", [NewTile(0, 0, 0, 8, 8, prompt="moss")])
    tile = store.update_tile("j_1", 0, status="refined", seed=3)
    assert tile == TileRecord("j_1", 0, 0, 0, 8, 8, "refined", None, "moss", 3, None, None, 0)


PROBE = '''
from service.storage.job_store import SqlJobStore
from service.storage.records import JobRecord, JobUpdate


def use(store: SqlJobStore, row: JobRecord) -> None:
    store.update(row.id, stgae="refine")
    print(row.stauts)
    store.update_tile(row.id, 0, captoin="x")
    changes: JobUpdate = {"progres": 0.5}
    store.update(row.id, progress="half")
    store.update(row.id, status="succeeded")
    store.update(row.id, stage="refine", progress=0.5)
'''


@pytest.mark.slow
def test_mypy_sees_a_column_typo(tmp_path: Path) -> None:
    """Every wrong line of the probe is an error; the last, correct one is not."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(probe)],
        cwd=ROOT, capture_output=True, text=True)
    lines = {int(line.split(":")[1]) for line in out.stdout.splitlines() if ": error:" in line}
    assert lines == {7, 8, 9, 10, 11, 12}, out.stdout + out.stderr


def test_the_migrations_build_exactly_these_tables(db_url: str) -> None:
    """What Alembic's revisions create equals ``tables.py`` (so the records match both)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from service.storage.tables import metadata

    store = SqlJobStore(db_url)
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    # tiles' uq_tiles_job_idx repeats the primary key; reflection does not report it back
    differences = [d for d in differences
                   if not (d[0] == "add_constraint" and d[1].name == "uq_tiles_job_idx")]
    assert differences == []
