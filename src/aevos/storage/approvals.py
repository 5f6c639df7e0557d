"""Approvals: the approvals repository.

An approval leaves ``pending`` exactly once: every transition is one UPDATE conditional on
``status = 'PENDING'``, so two approvers (or an approver and the expiry sweep) racing on
either backend cannot both win; the loser gets :class:`ApprovalConflictError` naming the
status the winner left, and its unit of work (a promotion, say) rolls back.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import codec
from ..errors import ApprovalConflictError, ApprovalNotFoundError
from ..records.approval import Approval, ApprovalStatus
from .repository import Repository
from .schema import approvals

_PENDING = ApprovalStatus.PENDING.value


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


class ApprovalRepository(Repository):
    """Pending and decided approvals, in the unit of work it is bound to."""

    def insert(self, approval: Approval) -> Approval:
        """Store a new approval; returns it as stored."""
        self.conn.execute(
            approvals.insert(),
            {
                "approval_id": approval.approval_id,
                "tenant": approval.tenant,
                "kind": approval.kind,
                "model": approval.model,
                "version": approval.version,
                "alias": approval.alias,
                "alias_was": approval.alias_was,
                "policy": approval.policy,
                "evidence": codec.encode(approval.evidence, "the promotion's evidence"),
                "decision": codec.encode(approval.decision, "the policy's decision"),
                "status": approval.status.value,
                "requested_by": approval.requested_by,
                "requester_token": approval.requester_token,
                "requester_name": approval.requester_name,
                "requested_at": approval.requested_at,
                "expires_at": approval.expires_at,
                "decided_by": approval.decided_by,
                "decided_at": approval.decided_at,
                "reason": approval.reason,
            },
        )
        return self.get(approval.approval_id)

    def get(self, approval_id: str, *, tenant: str | None = None) -> Approval:
        """The approval (ApprovalNotFoundError if unknown, or of another ``tenant``)."""
        row = self.conn.execute(
            sa.select(approvals).where(approvals.c.approval_id == approval_id)
        ).one_or_none()
        if row is None or (tenant is not None and row.tenant != tenant):
            raise ApprovalNotFoundError(f"no approval with id {approval_id!r}")
        return approval_of(row)

    def find(
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
        return [approval_of(row) for row in self.conn.execute(query)]

    def pending(self, tenant: str, model: str, version: int, alias: str) -> Approval | None:
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
        row = self.conn.execute(query).one_or_none()
        return None if row is None else approval_of(row)

    def overdue(self, now: float, *, limit: int = 100) -> list[Approval]:
        """Pending approvals past their expiry, of every tenant."""
        c = approvals.c
        query = (
            sa.select(approvals)
            .where(c.status == _PENDING, c.expires_at <= now)
            .order_by(c.expires_at)
            .limit(limit)
        )
        return [approval_of(row) for row in self.conn.execute(query)]

    def close(
        self,
        approval: Approval,
        status: ApprovalStatus,
        by: str,
        reason: str | None,
        now: float,
        *,
        before_expiry: bool = False,
    ) -> Approval:
        """Move a pending approval to ``status``; ApprovalConflictError if it is no longer
        pending (or, with ``before_expiry``, if it expired)."""
        c = approvals.c
        condition = [c.approval_id == approval.approval_id, c.status == _PENDING]
        if before_expiry:
            condition.append(c.expires_at > now)
        result = self.conn.execute(
            sa.update(approvals)
            .where(*condition)
            .values(status=status.value, decided_by=by, decided_at=now, reason=reason)
        )
        done = self.get(approval.approval_id)
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
        return done
