"""Where a job came from: ``rerun_of`` names the job a rerun (``POST .../rerun``) was made
from, ``retry_of`` the failed or canceled job a retry (``POST .../retry``) submitted again.
Jobs submitted directly, and jobs stored before this revision, have neither.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("rerun_of", sa.String(40), nullable=True))
        batch.add_column(sa.Column("retry_of", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_of")
        batch.drop_column("rerun_of")
