"""People in the loop: human tasks, feedback records and received events.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_tasks",
        sa.Column("task_id", sa.String(220), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("form", sa.Text, nullable=False),
        sa.Column("case_data", sa.Text, nullable=True),
        sa.Column("suggestion", sa.Text, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("model_version", sa.String(220), nullable=True),
        sa.Column("input_digest", sa.String(80), nullable=True),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("assignee", sa.String(300), nullable=True),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("sla_seconds", sa.Float, nullable=True),
        sa.Column("due_at", sa.Float, nullable=True),
        sa.Column("escalate_to", sa.String(100), nullable=True),
        sa.Column("escalated_at", sa.Float, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("submitted_by", sa.String(300), nullable=True),
        sa.Column("submitted_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_aevos_tasks_inbox",
        "aevos_tasks",
        ["tenant", "status", "queue", "priority", "created_at"],
    )
    op.create_index("ix_aevos_tasks_run", "aevos_tasks", ["run_id"])
    op.create_index("ix_aevos_tasks_due", "aevos_tasks", ["status", "due_at"])
    op.create_table(
        "aevos_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(220), nullable=False, unique=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("model_version", sa.String(220), nullable=True),
        sa.Column("input_digest", sa.String(80), nullable=True),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("suggestion", sa.Text, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("overridden", sa.Integer, nullable=False),
        sa.Column("reviewer", sa.String(300), nullable=False),
        sa.Column("asked_at", sa.Float, nullable=False),
        sa.Column("decided_at", sa.Float, nullable=False),
    )
    op.create_index("ix_aevos_feedback_tenant", "aevos_feedback", ["tenant", "decided_at"])
    op.create_index("ix_aevos_feedback_model", "aevos_feedback", ["tenant", "model", "decided_at"])
    op.create_table(
        "aevos_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("payload_digest", sa.String(80), nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_index("ix_aevos_events_source", "aevos_events", ["tenant", "source", "received_at"])


def downgrade() -> None:
    for table in ("aevos_events", "aevos_feedback", "aevos_tasks"):
        op.drop_table(table)
