"""The job's kind: ``upscale`` (``params`` holds ``UpscaleParams``) or ``animate`` (``params``
holds ``AnimateParams``; the sprite-to-spritesheet pipeline runs it). Jobs stored before this
revision are upscale jobs.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="upscale"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("kind")
