"""image_dates: creation dates of images by manifest digest (ranking tags for `latest`)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_dates",
        sa.Column("manifest_digest", sa.String(length=71), nullable=False),
        sa.Column("created", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("manifest_digest", name=op.f("pk_image_dates")),
    )


def downgrade() -> None:
    op.drop_table("image_dates")
