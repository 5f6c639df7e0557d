"""Retraining: each model's retraining configuration (versioned) and each retraining.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_retraining_configs",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("recipe", sa.String(64), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("every_labels", sa.Integer, nullable=True),
        sa.Column("interval", sa.Float, nullable=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("updated_by", sa.String(300), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "aevos_retraining_runs",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config_version", sa.Integer, nullable=False),
        sa.Column("requested_by", sa.String(300), nullable=False),
        sa.Column("label_count", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("dataset", sa.String(100), nullable=True),
        sa.Column("parent", sa.Integer, nullable=True),
        sa.Column("candidate", sa.Integer, nullable=True),
        sa.Column("certified", sa.Boolean, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("promotion", sa.String(16), nullable=True),
        sa.Column("lineage", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index(
        "ix_aevos_retraining_runs_model",
        "aevos_retraining_runs",
        ["tenant", "model", "started_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_aevos_retraining_runs_model", table_name="aevos_retraining_runs")
    op.drop_table("aevos_retraining_runs")
    op.drop_table("aevos_retraining_configs")
