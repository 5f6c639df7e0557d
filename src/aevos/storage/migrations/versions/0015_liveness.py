"""Liveness: the processes executing runs, each holding a lock for as long as it lives.

Revision ID: 0015
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_workers",
        sa.Column("owner", sa.String(100), primary_key=True),
        sa.Column("lock_key", sa.BigInteger, nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("aevos_workers")
