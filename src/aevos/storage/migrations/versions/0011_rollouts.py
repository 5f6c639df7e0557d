"""Rollouts: the rollout controller's state (one active rollout per model and tenant).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_rollouts",
        sa.Column("rollout_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("champion", sa.Integer, nullable=True),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("criteria", sa.Text, nullable=False),
        sa.Column("step_seconds", sa.Float, nullable=False),
        sa.Column("step_started_at", sa.Float, nullable=False),
        sa.Column("deadline", sa.Float, nullable=True),
        sa.Column("replay", sa.Boolean, nullable=False),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("last_verdict", sa.Text, nullable=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("active_model", sa.String(200), nullable=True),
        sa.UniqueConstraint("tenant", "active_model", name="uq_aevos_rollouts_active"),
    )
    op.create_index("ix_aevos_rollouts_model", "aevos_rollouts", ["tenant", "model", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_aevos_rollouts_model", table_name="aevos_rollouts")
    op.drop_table("aevos_rollouts")
