"""Certifications: a model version's certified automation thresholds.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_certifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("target", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("dataset", sa.String(100), nullable=True),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_aevos_certifications_version",
        "aevos_certifications",
        ["tenant", "model", "version", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_aevos_certifications_version", table_name="aevos_certifications")
    op.drop_table("aevos_certifications")
