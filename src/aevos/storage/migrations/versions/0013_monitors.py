"""Monitors: each model's monitor configuration (versioned), check results and alerts.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_monitor_configs",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("check_interval", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(300), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("checked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "aevos_monitor_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("monitor", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("alert", sa.Boolean, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("since", sa.Float, nullable=True),
        sa.Column("until", sa.Float, nullable=True),
        sa.Column("figures", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_aevos_monitor_results_model", "aevos_monitor_results", ["tenant", "model", "at"]
    )
    op.create_table(
        "aevos_monitor_alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("monitor", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("open_key", sa.String(320), nullable=True, unique=True),
        sa.Column("figures", sa.Text, nullable=False),
        sa.Column("since", sa.Float, nullable=True),
        sa.Column("until", sa.Float, nullable=True),
        sa.Column("actions", sa.Text, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("closed_by", sa.String(300), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_aevos_monitor_alerts_model", "aevos_monitor_alerts", ["tenant", "model", "opened_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_aevos_monitor_alerts_model", table_name="aevos_monitor_alerts")
    op.drop_table("aevos_monitor_alerts")
    op.drop_index("ix_aevos_monitor_results_model", table_name="aevos_monitor_results")
    op.drop_table("aevos_monitor_results")
    op.drop_table("aevos_monitor_configs")
