"""Escalation chains: a task past its SLA escalates level by level.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("aevos_tasks") as batch:
        batch.add_column(sa.Column("escalation_chain", sa.Text, nullable=True))
        batch.add_column(sa.Column("escalations", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0")
        )
    # Tasks asked before chains existed: one escalation if they have an SLA, made already
    # if they were escalated.
    tasks = sa.table(
        "aevos_tasks",
        sa.column("sla_seconds", sa.Float),
        sa.column("escalated_at", sa.Float),
        sa.column("escalations", sa.Integer),
        sa.column("escalation_level", sa.Integer),
    )
    op.execute(tasks.update().where(tasks.c.sla_seconds.is_not(None)).values(escalations=1))
    op.execute(tasks.update().where(tasks.c.escalated_at.is_not(None)).values(escalation_level=1))


def downgrade() -> None:
    with op.batch_alter_table("aevos_tasks") as batch:
        batch.drop_column("escalation_level")
        batch.drop_column("escalations")
        batch.drop_column("escalation_chain")
