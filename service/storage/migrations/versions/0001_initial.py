"""Initial schema: jobs and tiles.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("stages", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
        sa.Column("started_at", tz),
        sa.Column("finished_at", tz),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("input_ext", sa.String(8), nullable=False),
        sa.Column("input_width", sa.Integer, nullable=False),
        sa.Column("input_height", sa.Integer, nullable=False),
        sa.Column("input_format", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("target", sa.JSON),
        sa.Column("dedupe_key", sa.String(64), unique=True),
        sa.Column("idempotency_key", sa.String(200), unique=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("lease_until", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("remote_jobs", sa.JSON, nullable=False),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("cost_runpod_jobs", sa.Integer, nullable=False),
        sa.Column("cost_execution_s", sa.Float, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("output", sa.JSON),
        sa.Column("output_sha256", sa.String(64)),
        sa.Column("output_ext", sa.String(8)),
        sa.Column("error", sa.JSON),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "tiles",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("x", sa.Integer, nullable=False),
        sa.Column("y", sa.Integer, nullable=False),
        sa.Column("w", sa.Integer, nullable=False),
        sa.Column("h", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("caption", sa.Text),
        sa.Column("prompt", sa.Text),
        sa.Column("seed", sa.BigInteger),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("remote_job_id", sa.String(200)),
        sa.Column("rerun", sa.Integer, nullable=False),
        sa.UniqueConstraint("job_id", "idx", name="uq_tiles_job_idx"),
    )


def downgrade() -> None:
    op.drop_table("tiles")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
