"""Replays: a candidate model version re-deciding kept cases before it sees traffic.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_replays",
        sa.Column("replay_id", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("champion", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("criteria", sa.Text, nullable=False),
        sa.Column("figures", sa.Text, nullable=False),
        sa.Column("since", sa.Float, nullable=True),
        sa.Column("case_limit", sa.Integer, nullable=False),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("requested_by", sa.String(300), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index(
        "ix_aevos_replays_version",
        "aevos_replays",
        ["tenant", "model", "version", "started_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_aevos_replays_version", table_name="aevos_replays")
    op.drop_table("aevos_replays")
