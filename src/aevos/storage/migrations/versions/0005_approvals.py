"""Approvals: gated actions (promotions) waiting for a second person.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_approvals",
        sa.Column("approval_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("alias_was", sa.Integer, nullable=True),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(300), nullable=False),
        sa.Column("requester_token", sa.String(32), nullable=False),
        sa.Column("requester_name", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("decided_by", sa.String(300), nullable=True),
        sa.Column("decided_at", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_aevos_approvals_tenant", "aevos_approvals", ["tenant", "status", "requested_at"]
    )
    op.create_index("ix_aevos_approvals_due", "aevos_approvals", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_table("aevos_approvals")
