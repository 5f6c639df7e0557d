"""Schedules: workflows started on cron expressions, their state and their ticks.

Revision ID: 0018
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_schedules",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("catch_up", sa.Integer, nullable=False),
        sa.Column("queue", sa.String(100), nullable=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("last_tick", sa.Float, nullable=False),
        sa.Column("next_tick", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(300), nullable=False),
    )
    op.create_table(
        "aevos_schedule_ticks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tick_at", sa.Float, nullable=False),
        sa.Column("first_at", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("lateness", sa.Float, nullable=True),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_aevos_schedule_ticks_schedule", "aevos_schedule_ticks", ["schedule", "tick_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_aevos_schedule_ticks_schedule", table_name="aevos_schedule_ticks")
    op.drop_table("aevos_schedule_ticks")
    op.drop_table("aevos_schedules")
