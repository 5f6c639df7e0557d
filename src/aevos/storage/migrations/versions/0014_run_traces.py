"""Run traces: the W3C trace context each traced run continues, on any worker.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_run_traces",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("traceparent", sa.String(55), nullable=False),
        sa.Column("tracestate", sa.String(512), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("aevos_run_traces")
