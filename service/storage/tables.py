"""The job store's SQL schema (SQLAlchemy Core): one ``jobs`` row per job, one ``tiles`` row per tile.

The migrations in ``migrations/versions`` create exactly these tables; a test compares them.
JSON columns hold pydantic dumps (params, target, stages, output, error, remote ids).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("stage", String(16), nullable=False, default="queued"),
    Column("progress", Float, nullable=False, default=0.0),
    Column("stages", JSON, nullable=False, default=dict),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("filename", String(255), nullable=False),
    Column("input_sha256", String(64), nullable=False),
    Column("input_ext", String(8), nullable=False),
    Column("input_width", Integer, nullable=False),
    Column("input_height", Integer, nullable=False),
    Column("input_format", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("seed", BigInteger),
    Column("target", JSON),
    Column("dedupe_key", String(64), unique=True),
    Column("idempotency_key", String(200), unique=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("owner", String(200)),
    Column("lease_until", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("remote_jobs", JSON, nullable=False, default=list),
    Column("timings", JSON, nullable=False, default=dict),
    Column("cost_runpod_jobs", Integer, nullable=False, default=0),
    Column("cost_execution_s", Float, nullable=False, default=0.0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("output", JSON),
    Column("output_sha256", String(64)),
    Column("output_ext", String(8)),
    Column("error", JSON),
    Column("backend", String(16)),  # resolved at submit (migration 0003)
    Column("queue", String(16)),  # "embedded" | "celery": which executor runs it (0003)
    # "upscale" | "animate": what params hold and which pipeline runs (0004)
    Column("kind", String(16), nullable=False, server_default="upscale"),
    # the job a rerun was made from, the job a retry submitted again (0006)
    Column("rerun_of", String(40)),
    Column("retry_of", String(40)),
)

tiles = Table(
    "tiles",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("x", Integer, nullable=False),
    Column("y", Integer, nullable=False),
    Column("w", Integer, nullable=False),
    Column("h", Integer, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("caption", Text),
    Column("prompt", Text),
    Column("seed", BigInteger),
    Column("cache_key", String(64)),
    Column("remote_job_id", String(200)),
    Column("rerun", Integer, nullable=False, default=0),
    # {"caption": s, "caption_gpu": s, "refine": s, "refine_gpu": s}, each set when that stage
    # of the tile finished (migration 0005)
    Column("timings", JSON),
    UniqueConstraint("job_id", "idx", name="uq_tiles_job_idx"),
)

# The last file each target received from us: a later job refuses to overwrite a file that
# was edited since (migration 0002).
deliveries = Table(
    "deliveries",
    metadata,
    Column("repo", String(100), primary_key=True),
    Column("path", String(1000), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("job_id", String(40), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
)
