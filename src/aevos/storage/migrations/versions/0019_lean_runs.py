"""Lean runs: fewer index entries and b-trees written per run on the hot path.

The idempotency, owner and parent indexes of aevos_runs become partial (only rows whose
column is set), and SQLite keeps aevos_steps in its primary key's b-tree (WITHOUT ROWID).
SQLite cannot drop a table's inline UNIQUE constraint or change a table's rowid-ness in
place, so there both tables are rebuilt (Alembic's batch mode copies them).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_PARTIAL = {
    "ix_aevos_runs_owner": (["owner", "status"], "owner IS NOT NULL"),
    "ix_aevos_runs_parent": (["parent_run_id"], "parent_run_id IS NOT NULL"),
}


def _where(predicate: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(predicate), "postgresql_where": sa.text(predicate)}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in _PARTIAL:
        op.drop_index(name, table_name="aevos_runs")
    if sqlite:
        with op.batch_alter_table("aevos_runs", recreate="always") as batch:
            batch.drop_constraint("uq_aevos_runs_idempotency", type_="unique")
        with op.batch_alter_table(
            "aevos_steps", recreate="always", table_kwargs={"sqlite_with_rowid": False}
        ):
            pass
    else:
        op.drop_constraint("uq_aevos_runs_idempotency", "aevos_runs", type_="unique")
    op.create_index(
        "uq_aevos_runs_idempotency",
        "aevos_runs",
        ["tenant", "idempotency_key"],
        unique=True,
        **_where("idempotency_key IS NOT NULL"),
    )
    for name, (columns, predicate) in _PARTIAL.items():
        op.create_index(name, "aevos_runs", columns, **_where(predicate))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in _PARTIAL:
        op.drop_index(name, table_name="aevos_runs")
    op.drop_index("uq_aevos_runs_idempotency", table_name="aevos_runs")
    if sqlite:
        with op.batch_alter_table("aevos_runs", recreate="always") as batch:
            batch.create_unique_constraint(
                "uq_aevos_runs_idempotency", ["tenant", "idempotency_key"]
            )
        with op.batch_alter_table(
            "aevos_steps", recreate="always", table_kwargs={"sqlite_with_rowid": True}
        ):
            pass
    else:
        op.create_unique_constraint(
            "uq_aevos_runs_idempotency", "aevos_runs", ["tenant", "idempotency_key"]
        )
    op.create_index("ix_aevos_runs_owner", "aevos_runs", ["owner", "status"])
    op.create_index("ix_aevos_runs_parent", "aevos_runs", ["parent_run_id"])
