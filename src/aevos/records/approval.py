"""An approval: a gated action (a promotion) waiting for, or given, a second person.

The record the approvals service (:mod:`aevos.people.approvals`) creates and closes and
storage persists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ApprovalStatus(StrEnum):
    PENDING = "PENDING"  # waiting for a second person
    APPROVED = "APPROVED"  # approved; the action was done in the same transaction
    REJECTED = "REJECTED"  # rejected by a person, withdrawn, or denied by the policy since
    EXPIRED = "EXPIRED"  # nobody decided before expires_at
    SUPERSEDED = "SUPERSEDED"  # the alias moved since the request: approving it is stale

    @property
    def closed(self) -> bool:
        return self is not ApprovalStatus.PENDING


@dataclass(frozen=True)
class Approval:
    """A promotion of ``model@version`` to ``alias`` waiting for (or given) a second person."""

    approval_id: str
    tenant: str
    kind: str  # "promotion"
    model: str
    version: int
    alias: str
    alias_was: int | None  # the version the alias named when the promotion was asked
    policy: str
    evidence: Mapping[str, Any]
    decision: Mapping[str, Any]  # the policy's decision record when it was asked
    status: ApprovalStatus
    requested_by: str  # the requester's actor
    requester_token: str  # their token id and name: the four-eyes check compares both
    requester_name: str
    requested_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    reason: str | None
