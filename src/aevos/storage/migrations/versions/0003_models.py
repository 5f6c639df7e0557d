"""Model layer: registry (models, versions, aliases) and gateway budgets.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_models",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "aevos_model_versions",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("flavor", sa.String(50), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("card", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "aevos_model_aliases",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("previous_version", sa.Integer, nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "aevos_budgets",
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("window_start", sa.Float, primary_key=True),
        sa.Column("window_seconds", sa.Float, nullable=False),
        sa.Column("cost_limit", sa.Float, nullable=True),
        sa.Column("calls_limit", sa.Integer, nullable=True),
        sa.Column("tokens_limit", sa.Integer, nullable=True),
        sa.Column("cost_used", sa.Float, nullable=False),
        sa.Column("calls_used", sa.Integer, nullable=False),
        sa.Column("tokens_used", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("aevos_budgets", "aevos_model_aliases", "aevos_model_versions", "aevos_models"):
        op.drop_table(table)
