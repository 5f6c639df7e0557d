"""Events from every channel (webhook, NATS JetStream, HTTP signal) and their dead letters.

Revision ID: 0016
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("aevos_events") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(16), nullable=False, server_default="webhook")
        )
    op.create_table(
        "aevos_dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("payload_digest", sa.String(80), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint(
            "tenant", "channel", "source", "event_id", name="uq_aevos_dead_letters_event"
        ),
    )
    op.create_index(
        "ix_aevos_dead_letters_status",
        "aevos_dead_letters",
        ["tenant", "status", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_aevos_dead_letters_status", table_name="aevos_dead_letters")
    op.drop_table("aevos_dead_letters")
    with op.batch_alter_table("aevos_events") as batch:
        batch.drop_column("channel")
