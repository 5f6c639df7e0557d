"""Approvals: promotions waiting for a second person of the tenant."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Protocol

from ..errors import AuthorizationError
from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..models.types import ModelVersion
    from ..people.approvals import Approvals as ApprovalService
    from ..records.approval import Approval, ApprovalStatus


class Services(Protocol):
    @property
    def approvals(self) -> ApprovalService: ...


class Approvals:
    """Approvals, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def _own(self, principal: Principal, approval_id: str) -> Approval:
        approval = self.services.approvals.get(approval_id)  # ApprovalNotFoundError if unknown
        self.guard.own(principal, "approval", approval_id, approval.tenant)
        return approval

    def list(
        self,
        principal: Principal,
        *,
        status: ApprovalStatus | str | None = None,
        model: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Approval]:
        """The tenant's approvals, newest first."""
        self.guard.allow(principal, Permission.MODELS_READ, "read approvals")
        return self.services.approvals.list(
            tenant=principal.tenant, status=status, model=model, limit=limit
        )

    def get(self, principal: Principal, approval_id: str) -> Approval:
        self.guard.allow(principal, Permission.MODELS_READ, "read approvals")
        return self._own(principal, approval_id)

    def approve(
        self, principal: Principal, approval_id: str, *, reason: str | None = None
    ) -> tuple[Approval, ModelVersion]:
        """Approve a pending promotion and promote (four eyes: not the requester)."""
        self.guard.allow(principal, Permission.MODELS_PROMOTE, "approve promotions")
        self._own(principal, approval_id)
        try:
            return self.services.approvals.approve(approval_id, approver=principal, reason=reason)
        except AuthorizationError as exc:
            self.guard.record(
                principal, "authz.denied", reason=exc.message, attempted=f"approve {approval_id}"
            )
            raise

    def reject(
        self, principal: Principal, approval_id: str, *, reason: str | None = None
    ) -> Approval:
        """Reject (or, as its requester, withdraw) a pending promotion."""
        self.guard.allow(principal, Permission.MODELS_PROMOTE, "reject promotions")
        self._own(principal, approval_id)
        return self.services.approvals.reject(approval_id, by=principal, reason=reason)
