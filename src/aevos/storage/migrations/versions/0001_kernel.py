"""The durable kernel: runs, steps, blobs, signals, queues.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_runs",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("input", sa.Text, nullable=True),
        sa.Column("input_ref", sa.String(64), nullable=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("output_ref", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("parent_run_id", sa.String(200), nullable=True),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("wake_at", sa.Float, nullable=True),
        sa.Column("executions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_aevos_runs_idempotency"),
    )
    op.create_index(
        "ix_aevos_runs_claim", "aevos_runs", ["queue", "status", "priority", "created_at"]
    )
    op.create_index("ix_aevos_runs_owner", "aevos_runs", ["owner", "status"])
    op.create_index("ix_aevos_runs_parent", "aevos_runs", ["parent_run_id"])
    op.create_index("ix_aevos_runs_created", "aevos_runs", ["created_at"])
    op.create_table(
        "aevos_steps",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("output_ref", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
    )
    op.create_table(
        "aevos_blobs",
        sa.Column("ref", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "aevos_signals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_aevos_signals_run_topic", "aevos_signals", ["run_id", "topic", "id"])
    op.create_table(
        "aevos_queues",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("rate_limit", sa.Integer, nullable=True),
        sa.Column("rate_period", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("aevos_queues", "aevos_signals", "aevos_blobs", "aevos_steps", "aevos_runs"):
        op.drop_table(table)
