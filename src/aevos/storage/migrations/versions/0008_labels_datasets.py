"""Labels, their conflicts, dataset versions; a task's purpose (review or qa).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("aevos_tasks") as batch:
        batch.add_column(
            sa.Column("purpose", sa.String(16), nullable=False, server_default="review")
        )
        batch.add_column(sa.Column("unbiased", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("label_field", sa.String(100), nullable=True))
        batch.add_column(sa.Column("ranked", sa.Text, nullable=True))
    with op.batch_alter_table("aevos_feedback") as batch:
        batch.add_column(
            sa.Column("purpose", sa.String(16), nullable=False, server_default="review")
        )
        batch.add_column(sa.Column("unbiased", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "aevos_labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(230), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("model_version", sa.String(220), nullable=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("unbiased", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("task_id", sa.String(220), nullable=True),
        sa.Column("feedback_id", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("labelled_at", sa.Float, nullable=False),
    )
    op.create_index("ix_aevos_labels_case", "aevos_labels", ["tenant", "case_id"])
    op.create_index("ix_aevos_labels_model", "aevos_labels", ["tenant", "model", "labelled_at"])
    op.create_table(
        "aevos_label_conflicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(230), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("label_id", sa.Integer, nullable=False),
        sa.Column("other_id", sa.Integer, nullable=False),
        sa.Column("winner_id", sa.Integer, nullable=False),
        sa.Column("recorded_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_aevos_label_conflicts_tenant", "aevos_label_conflicts", ["tenant", "recorded_at"]
    )
    op.create_table(
        "aevos_datasets",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("people", sa.Integer, nullable=False),
        sa.Column("unbiased", sa.Integer, nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("until", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
    )
    op.create_index("ix_aevos_datasets_model", "aevos_datasets", ["tenant", "model", "created_at"])
    op.create_table(
        "aevos_dataset_rows",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.String(230), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("unbiased", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("labelled_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("aevos_dataset_rows")
    op.drop_table("aevos_datasets")
    op.drop_table("aevos_label_conflicts")
    op.drop_table("aevos_labels")
    with op.batch_alter_table("aevos_feedback") as batch:
        batch.drop_column("unbiased")
        batch.drop_column("purpose")
    with op.batch_alter_table("aevos_tasks") as batch:
        batch.drop_column("ranked")
        batch.drop_column("label_field")
        batch.drop_column("unbiased")
        batch.drop_column("purpose")
