"""Kept cases: encrypted model inputs and task cases, and the data subjects they mention.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aevos_cases",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(230), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("seq", sa.Integer, nullable=True),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("task_id", sa.String(220), nullable=True),
        sa.Column("input_digest", sa.String(80), nullable=False),
        sa.Column("model_input_digest", sa.String(80), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
    )
    op.create_index("ix_aevos_cases_model", "aevos_cases", ["tenant", "model", "created_at"])
    op.create_index("ix_aevos_cases_run", "aevos_cases", ["tenant", "run_id"])
    op.create_index("ix_aevos_cases_expiry", "aevos_cases", ["expires_at"])
    op.create_table(
        "aevos_case_subjects",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(230), primary_key=True),
    )
    op.create_index("ix_aevos_case_subjects_case", "aevos_case_subjects", ["tenant", "case_id"])


def downgrade() -> None:
    op.drop_index("ix_aevos_case_subjects_case", table_name="aevos_case_subjects")
    op.drop_table("aevos_case_subjects")
    op.drop_index("ix_aevos_cases_expiry", table_name="aevos_cases")
    op.drop_index("ix_aevos_cases_run", table_name="aevos_cases")
    op.drop_index("ix_aevos_cases_model", table_name="aevos_cases")
    op.drop_table("aevos_cases")
