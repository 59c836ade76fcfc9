"""The GPU backend resolved at submit, and the queue a job was sent to.

``backend``: what ``auto`` meant when the job was submitted (a resumed job keeps it).
``queue``: ``embedded`` (an ``aat up`` process runs it) or ``celery`` (``aat runner`` processes
run it); an executor only takes jobs sent to its own kind of queue. Both are NULL for jobs
stored before this revision (any executor takes those, as before).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("backend", sa.String(16)))
        batch.add_column(sa.Column("queue", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue")
        batch.drop_column("backend")
