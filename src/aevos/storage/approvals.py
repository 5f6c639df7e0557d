"""Approvals: a mixin of :class:`~aevos.storage.store.Store`.

An approval leaves ``pending`` exactly once: every transition is one UPDATE conditional on
``status = 'PENDING'``, so two approvers (or an approver and the expiry sweep) racing on
either backend cannot both win; the loser gets :class:`ApprovalConflictError` naming the
status the winner left, and its transaction (a promotion, say) rolls back.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import codec
from ..errors import ApprovalConflictError, ApprovalNotFoundError
from ..records.approval import Approval, ApprovalStatus
from .schema import approvals

_PENDING = ApprovalStatus.PENDING.value
Also = Callable[[Connection, Approval], object]


def approval_of(row: Any) -> Approval:
    return Approval(
        approval_id=row.approval_id,
        tenant=row.tenant,
        kind=row.kind,
        model=row.model,
        version=row.version,
        alias=row.alias,
        alias_was=row.alias_was,
        policy=row.policy,
        evidence=codec.decode(row.evidence),
        decision=codec.decode(row.decision),
        status=ApprovalStatus(row.status),
        requested_by=row.requested_by,
        requester_token=row.requester_token,
        requester_name=row.requester_name,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        reason=row.reason,
    )


class Approvals:
    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _read(self) -> AbstractContextManager[Connection]: ...

    def insert_approval(
        self, values: dict[str, Any], also: Callable[[Connection], object]
    ) -> Approval:
        """Insert a pending approval and run ``also`` (its audit record) in one transaction."""
        with self._tx() as conn:
            conn.execute(approvals.insert(), values)
            row = conn.execute(
                sa.select(approvals).where(approvals.c.approval_id == values["approval_id"])
            ).one()
            also(conn)
        return approval_of(row)

    def get_approval(self, approval_id: str, *, tenant: str | None = None) -> Approval:
        with self._read() as conn:
            row = conn.execute(
                sa.select(approvals).where(approvals.c.approval_id == approval_id)
            ).one_or_none()
        if row is None or (tenant is not None and row.tenant != tenant):
            raise ApprovalNotFoundError(f"no approval with id {approval_id!r}")
        return approval_of(row)

    def list_approvals(
        self,
        tenant: str,
        *,
        status: ApprovalStatus | None = None,
        model: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        """The tenant's approvals, newest first."""
        c = approvals.c
        query = sa.select(approvals).where(c.tenant == tenant)
        if status is not None:
            query = query.where(c.status == status.value)
        if model is not None:
            query = query.where(c.model == model)
        query = query.order_by(c.requested_at.desc(), c.approval_id).limit(limit)
        with self._read() as conn:
            return [approval_of(row) for row in conn.execute(query)]

    def pending_approval(
        self, tenant: str, model: str, version: int, alias: str
    ) -> Approval | None:
        """The newest pending request to move ``alias`` of ``model`` to ``version``."""
        c = approvals.c
        query = (
            sa.select(approvals)
            .where(
                c.tenant == tenant,
                c.status == _PENDING,
                c.model == model,
                c.version == version,
                c.alias == alias,
            )
            .order_by(c.requested_at.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else approval_of(row)

    def overdue_approvals(self, now: float, *, limit: int = 100) -> list[Approval]:
        """Pending approvals past their expiry, of every tenant."""
        c = approvals.c
        query = (
            sa.select(approvals)
            .where(c.status == _PENDING, c.expires_at <= now)
            .order_by(c.expires_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [approval_of(row) for row in conn.execute(query)]

    @staticmethod
    def close_approval(
        conn: Connection,
        approval: Approval,
        status: ApprovalStatus,
        by: str,
        reason: str | None,
        now: float,
        also: Also,
        *,
        before_expiry: bool = False,
    ) -> Approval:
        """Move a pending approval to ``status`` in the caller's transaction, then run
        ``also`` (its audit record); ApprovalConflictError if it is no longer pending (or,
        with ``before_expiry``, if it expired)."""
        c = approvals.c
        condition = [c.approval_id == approval.approval_id, c.status == _PENDING]
        if before_expiry:
            condition.append(c.expires_at > now)
        result = conn.execute(
            sa.update(approvals)
            .where(*condition)
            .values(status=status.value, decided_by=by, decided_at=now, reason=reason)
        )
        row = conn.execute(sa.select(approvals).where(c.approval_id == approval.approval_id)).one()
        done = approval_of(row)
        if result.rowcount != 1:
            if done.status is ApprovalStatus.PENDING:  # only the expiry stood in the way
                raise ApprovalConflictError(
                    approval.approval_id,
                    ApprovalStatus.EXPIRED.value,
                    "it expired before it was approved",
                )
            raise ApprovalConflictError(
                approval.approval_id, done.status.value, "it was decided meanwhile"
            )
        also(conn, done)
        return done
