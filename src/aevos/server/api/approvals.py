"""``/v1/approvals``: promotions waiting for a second person (four eyes).

``POST /v1/models/{name}/promote`` answers a promotion the policy sends for approval with a
pending approval; another principal of the tenant who may promote approves it here (the
alias moves in the same transaction) or rejects it; its requester may reject it to withdraw
it. Approving one's own request is a 403; approving one that is no longer pending, has
expired, went stale (its alias moved since) or that the policy now denies is a 409
``approval_conflict`` naming the status.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ...records.approval import Approval, ApprovalStatus
from ..deps import AccessDep, PrincipalDep
from .models import Version

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])

IdParam = Annotated[str, Path(min_length=1, max_length=32)]


class ApprovalOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), from_attributes=True)

    approval_id: str
    kind: str = Field(description="What waits for approval: promotion.")
    model: str
    version: int
    alias: str
    alias_was: int | None = Field(description="The version the alias named when asked.")
    policy: str
    evidence: dict[str, Any] = Field(description="What the policy judged.")
    decision: dict[str, Any] = Field(description="The policy's decision record when asked.")
    status: ApprovalStatus
    requested_by: str
    requested_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    reason: str | None

    @classmethod
    def of(cls, approval: Approval) -> ApprovalOut:
        return cls.model_validate(approval, from_attributes=True)


class Decide(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class Approved(BaseModel):
    approval: ApprovalOut
    promoted: Version = Field(description="The version the alias now names.")


@router.get("")
def list_approvals(
    access: AccessDep,
    principal: PrincipalDep,
    status: ApprovalStatus | None = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ApprovalOut]:
    """The tenant's approvals, newest first (``status=PENDING`` for those waiting)."""
    found = access.approvals.list(principal, status=status, model=model, limit=limit)
    return [ApprovalOut.of(a) for a in found]


@router.get("/{approval_id}")
def get_approval(approval_id: IdParam, access: AccessDep, principal: PrincipalDep) -> ApprovalOut:
    return ApprovalOut.of(access.approvals.get(principal, approval_id))


@router.post("/{approval_id}/approve")
def approve(
    approval_id: IdParam, access: AccessDep, principal: PrincipalDep, body: Decide | None = None
) -> Approved:
    """Approve and promote (403 for the requester; 409 if no longer pending)."""
    approval, promoted = access.approvals.approve(
        principal, approval_id, reason=None if body is None else body.reason
    )
    return Approved(approval=ApprovalOut.of(approval), promoted=Version.of(promoted))


@router.post("/{approval_id}/reject")
def reject(
    approval_id: IdParam, access: AccessDep, principal: PrincipalDep, body: Decide | None = None
) -> ApprovalOut:
    """Reject a pending approval (its requester withdraws it this way)."""
    return ApprovalOut.of(
        access.approvals.reject(
            principal, approval_id, reason=None if body is None else body.reason
        )
    )
