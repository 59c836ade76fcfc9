"""Per-tile timings: how long each tile spent captioning and refining (wall seconds, from the
moment it started to the moment its answer was in) and what the GPU billed for it
(``caption_gpu``/``refine_gpu``, RunPod execution seconds). The studio's tile panel shows
them. Tiles stored before this revision have none.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tiles") as batch:
        batch.add_column(sa.Column("timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tiles") as batch:
        batch.drop_column("timings")
