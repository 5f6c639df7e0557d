"""Kept cases' rows: encrypted inputs addressed by (tenant, case_id), and their subjects.

Encryption and keys are :mod:`aevos.cases`' business; this repository stores, finds and
deletes ciphertexts with their lineage (model, version, run, position, call, task). The
data subjects a case mentions (vault tokens) are rows of their own, so that forgetting a
subject is an indexed delete. Lists and deletions go by chunks, so a long list never makes
one statement with more parameters than a backend accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .repository import Repository, StoreHandle
from .schema import case_subjects, cases

_CHUNK = 500


@dataclass(frozen=True)
class CaseRow:
    """One kept case as stored: its lineage, digests and ciphertext; ``subjects`` are the
    vault tokens its input mentions."""

    tenant: str
    case_id: str
    kind: str  # model_call | task
    input_digest: str
    ciphertext: bytes
    created_at: float
    expires_at: float | None = None
    model: str | None = None
    version: int | None = None
    run_id: str | None = None
    seq: int | None = None
    call_id: str | None = None
    task_id: str | None = None
    model_input_digest: str | None = None
    subjects: tuple[str, ...] = ()


def _insert_case(store: StoreHandle) -> Any:
    # RETURNING tells a new row from one kept already on both backends (a driver's
    # rowcount for a skipped conflict is not portable).
    return (
        store.dialect.insert(cases)
        .on_conflict_do_nothing(index_elements=["tenant", "case_id"])
        .returning(cases.c.case_id)
    )


def _insert_subject(store: StoreHandle) -> Any:
    return store.dialect.insert(case_subjects).on_conflict_do_nothing(
        index_elements=["tenant", "token", "case_id"]
    )


_COLUMNS = (
    "tenant",
    "case_id",
    "kind",
    "model",
    "version",
    "run_id",
    "seq",
    "call_id",
    "task_id",
    "input_digest",
    "model_input_digest",
    "ciphertext",
    "created_at",
    "expires_at",
)


def _row(row: Any) -> CaseRow:
    return CaseRow(
        tenant=row.tenant,
        case_id=row.case_id,
        kind=row.kind,
        input_digest=row.input_digest,
        ciphertext=bytes(row.ciphertext),
        created_at=row.created_at,
        expires_at=row.expires_at,
        model=row.model,
        version=row.version,
        run_id=row.run_id,
        seq=row.seq,
        call_id=row.call_id,
        task_id=row.task_id,
        model_input_digest=row.model_input_digest,
    )


class CaseRepository(Repository):
    """Kept cases of every tenant, in the unit of work it is bound to."""

    def add(self, rows: Sequence[CaseRow]) -> int:
        """Store cases; a case id the tenant already has keeps its first row (a replay or
        a retried batch keeps nothing twice). Returns how many were new."""
        if not rows:
            return 0
        added = 0
        for row in rows:
            values = {name: getattr(row, name) for name in _COLUMNS}
            added += len(self.conn.execute(self.uow.prepared(_insert_case), values).all())
            if row.subjects:
                self.conn.execute(
                    self.uow.prepared(_insert_subject),
                    [
                        {"tenant": row.tenant, "token": token, "case_id": row.case_id}
                        for token in sorted(set(row.subjects))
                    ],
                )
        return added

    def get(self, tenant: str, case_id: str) -> CaseRow | None:
        c = cases.c
        row = self.conn.execute(
            sa.select(cases).where(c.tenant == tenant, c.case_id == case_id)
        ).one_or_none()
        return None if row is None else _row(row)

    def get_many(self, tenant: str, case_ids: Sequence[str]) -> list[CaseRow]:
        """The tenant's cases among ``case_ids`` (unknown ids are left out)."""
        c = cases.c
        found: list[CaseRow] = []
        wanted = sorted(set(case_ids))
        for i in range(0, len(wanted), _CHUNK):
            rows = self.conn.execute(
                sa.select(cases).where(c.tenant == tenant, c.case_id.in_(wanted[i : i + _CHUNK]))
            )
            found.extend(_row(row) for row in rows)
        return found

    def find(
        self,
        tenant: str,
        *,
        model: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[CaseRow]:
        """The tenant's cases, oldest first, filtered; at most ``limit``."""
        c = cases.c
        query = sa.select(cases).where(c.tenant == tenant)
        if model is not None:
            query = query.where(c.model == model)
        if run_id is not None:
            query = query.where(c.run_id == run_id)
        if since is not None:
            query = query.where(c.created_at >= since)
        if until is not None:
            query = query.where(c.created_at < until)
        query = query.order_by(c.created_at, c.case_id).limit(limit)
        return [_row(row) for row in self.conn.execute(query)]

    def subjects(self, tenant: str, case_id: str) -> list[str]:
        s = case_subjects.c
        rows = self.conn.execute(
            sa.select(s.token).where(s.tenant == tenant, s.case_id == case_id).order_by(s.token)
        )
        return [token for (token,) in rows]

    def delete(self, tenant: str, case_ids: Sequence[str]) -> int:
        """Delete the tenant's cases among ``case_ids`` with their subject rows; how many."""
        c, s = cases.c, case_subjects.c
        deleted = 0
        wanted = sorted(set(case_ids))
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            self.conn.execute(
                sa.delete(case_subjects).where(s.tenant == tenant, s.case_id.in_(chunk))
            )
            deleted += self.conn.execute(
                sa.delete(cases).where(c.tenant == tenant, c.case_id.in_(chunk))
            ).rowcount
        return deleted

    def delete_run(self, tenant: str, run_id: str) -> int:
        """Delete every case of a run of the tenant; how many."""
        c = cases.c
        ids = [
            case_id
            for (case_id,) in self.conn.execute(
                sa.select(c.case_id).where(c.tenant == tenant, c.run_id == run_id)
            )
        ]
        return self.delete(tenant, ids)

    def delete_subject(self, tenant: str, token: str) -> int:
        """Delete every case of the tenant that mentions ``token``; how many."""
        s = case_subjects.c
        ids = [
            case_id
            for (case_id,) in self.conn.execute(
                sa.select(s.case_id).where(s.tenant == tenant, s.token == token)
            )
        ]
        return self.delete(tenant, ids)

    def delete_expired(self, now: float, limit: int) -> dict[str, int]:
        """Delete at most ``limit`` cases whose retention ended before ``now``; how many
        per tenant (the caller sweeps again while a batch comes back full)."""
        c = cases.c
        due = self.conn.execute(
            sa.select(c.tenant, c.case_id)
            .where(c.expires_at.is_not(None), c.expires_at <= now)
            .order_by(c.expires_at)
            .limit(limit)
        ).all()
        by_tenant: dict[str, list[str]] = {}
        for tenant, case_id in due:
            by_tenant.setdefault(tenant, []).append(case_id)
        return {tenant: self.delete(tenant, ids) for tenant, ids in by_tenant.items()}
