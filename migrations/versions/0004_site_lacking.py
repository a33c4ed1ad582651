"""sites.lacking: blobs a site's newest receipt says it lacks (sent again by the next export)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 02:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("lacking", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("lacking")
