"""Approvals: a gated action waiting for a second person (``app.approvals``).

When the promotion policy answers ``approve``, the promotion is neither done nor refused: it
becomes a pending :class:`Approval`. Another principal of the tenant who may promote models
approves it, and the alias moves in the same transaction that records the approval; or
someone rejects it (the requester too, to withdraw it). Four eyes means a different token
*and* a different name: one person holding two tokens of the same name cannot approve their
own request.

An approval is judged again when it is approved, so what it promotes is what the policy and
the registry allow then, not only when it was asked:

- the policy is evaluated again on the request's evidence; if it now denies, the approval
  is closed as rejected;
- if the alias moved since the request (another promotion, a rollback), the approval is
  stale and closed as superseded, rather than silently undoing that move;
- past ``expires_at`` it is closed as expired (workers also sweep these).

Every transition is one conditional UPDATE (``WHERE status = 'PENDING'``) audited in its
transaction, so two approvers racing cannot both promote. Like ``app.tasks`` this service
trusts its caller about who is acting; requests with a token go through
:class:`~aevos.access.Access`, which checks the role and the tenant first.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from . import codec
from .errors import AevosError, ApprovalConflictError, AuthorizationError, DefinitionError

if TYPE_CHECKING:
    from .app import Aevos
    from .audit import AuditEvent
    from .identity import Principal
    from .models.types import ModelVersion
    from .policy import Decision
    from .storage import UnitOfWork

log = logging.getLogger("aevos.approvals")

#: How long a request waits for its second person by default (seconds): a week.
DEFAULT_TTL = 7 * 24 * 3600.0
_MAX_REASON = 2_000


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


def _event(**fields: Any) -> AuditEvent:
    from .audit import AuditEvent  # the audit package imports storage, which imports this

    return AuditEvent(**fields)


def _reason(reason: str | None) -> str | None:
    if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
        raise DefinitionError(f"a reason is a string of at most {_MAX_REASON} characters")
    return reason or None


class Approvals:
    def __init__(self, app: Aevos) -> None:
        self.app = app

    # -- reads --------------------------------------------------------------------------------

    def get(self, approval_id: str, *, tenant: str | None = None) -> Approval:
        """The approval (ApprovalNotFoundError if unknown, or of another ``tenant``)."""
        with self.app.store.reading() as uow:
            return uow.approvals.get(approval_id, tenant=tenant)

    def list(
        self,
        *,
        tenant: str = "default",
        status: ApprovalStatus | str | None = None,
        model: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Approval]:
        """The tenant's approvals, newest first."""
        chosen = None if status is None else ApprovalStatus(status)
        with self.app.store.reading() as uow:
            return uow.approvals.find(tenant, status=chosen, model=model, limit=limit)

    # -- asking -------------------------------------------------------------------------------

    def request(
        self,
        requester: Principal,
        model: str,
        version: int,
        *,
        alias: str,
        alias_was: int | None,
        policy: str,
        evidence: Mapping[str, Any],
        decision: Decision,
        ttl: float = DEFAULT_TTL,
    ) -> Approval:
        """Record a promotion of ``model@version`` to ``alias`` (which named ``alias_was``
        when the policy judged ``evidence``) waiting for a second person.

        Asking again for the same promotion, on the same evidence, while the alias still
        names the same version, returns the pending approval (nothing new is recorded); a
        pending one that differs is superseded by the new request."""
        if not ttl > 0:
            raise DefinitionError("an approval's ttl must be > 0 seconds")
        tenant, store = requester.tenant, self.app.store
        evidence = dict(evidence)
        with store.reading() as uow:
            existing = uow.approvals.pending(tenant, model, version, alias)
        if existing is not None:
            if (
                existing.expires_at > time.time()
                and existing.alias_was == alias_was
                and existing.evidence == evidence
            ):
                return existing
            self._close_if_pending(
                existing,
                ApprovalStatus.SUPERSEDED,
                requester.actor,
                "asked again on new evidence or after the alias moved",
                None,
            )
        now = time.time()
        asked = Approval(
            approval_id=uuid.uuid4().hex,
            tenant=tenant,
            kind="promotion",
            model=model,
            version=version,
            alias=alias,
            alias_was=alias_was,
            policy=policy,
            evidence=evidence,
            decision=decision.to_record(),
            status=ApprovalStatus.PENDING,
            requested_by=requester.actor,
            requester_token=requester.token_id,
            requester_name=requester.name,
            requested_at=now,
            expires_at=now + ttl,
            decided_by=None,
            decided_at=None,
            reason=None,
        )
        event = _event(
            action="approval.requested",
            actor=requester.actor,
            tenant=tenant,
            subject=f"approval:{asked.approval_id}",
            data={
                "model": model,
                "version": version,
                "alias": alias,
                "alias_was": alias_was,
                "decision_id": decision.decision_id,
                "expires_at": asked.expires_at,
            },
        )
        with store.transaction() as uow:
            approval = uow.approvals.insert(asked)
            self.app.audit.append(event, uow=uow)
        return approval

    # -- deciding -----------------------------------------------------------------------------

    def approve(
        self, approval_id: str, *, approver: Principal, reason: str | None = None
    ) -> tuple[Approval, ModelVersion]:
        """Approve and promote, in one transaction; returns the approval and the promoted
        version. Raises AuthorizationError for the requester themself (four eyes), and
        ApprovalConflictError when the approval is no longer pending, has expired, went
        stale, or the policy now denies it (the last three are recorded as such first)."""
        reason = _reason(reason)
        approval = self.get(approval_id, tenant=approver.tenant)
        if (
            approver.token_id == approval.requester_token
            or approver.name == approval.requester_name
        ):
            raise AuthorizationError(
                "four eyes: a promotion must be approved by another person than the one who "
                f"asked for it ({approval.requested_by})"
            )
        self._check_open(approval)
        decision = self.app.policies.evaluate(
            approval.policy, {**approval.evidence, "model": {"name": approval.model}}
        )
        self._audit_decision(approver, approval, decision)
        if decision.result == "deny":
            self._close(
                approval,
                ApprovalStatus.REJECTED,
                f"policy:{decision.policy}@{decision.version}",
                f"the policy now denies it: {decision.reason}",
            )
            raise ApprovalConflictError(
                approval_id,
                ApprovalStatus.REJECTED.value,
                f"the {approval.policy} policy now denies it",
            )
        stale: list[int | None] = []

        def also(uow: UnitOfWork) -> None:
            current = uow.models.alias_version(approval.tenant, approval.model, approval.alias)
            if current != approval.alias_was:
                stale.append(current)
                raise _Stale
            done = uow.approvals.close(
                approval,
                ApprovalStatus.APPROVED,
                approver.actor,
                reason,
                time.time(),
                before_expiry=True,
            )
            self._audit(
                uow,
                approver.actor,
                done,
                requested_by=approval.requested_by,
                decision_id=decision.decision_id,
            )

        try:
            # The approver moves the alias; the approval record beside it, in the same
            # transaction, names who asked.
            promoted = self.app.models.promote(
                approval.model,
                approval.version,
                alias=approval.alias,
                tenant=approval.tenant,
                by=approver.actor,
                also=also,
            )
        except _Stale:
            was = "nothing" if approval.alias_was is None else f"version {approval.alias_was}"
            now = "nothing" if stale[0] is None else f"version {stale[0]}"
            why = f"alias {approval.alias!r} moved from {was} to {now} since the request"
            self._close(approval, ApprovalStatus.SUPERSEDED, f"system:{self.app.owner}", why)
            raise ApprovalConflictError(approval_id, ApprovalStatus.SUPERSEDED.value, why) from None
        return self.get(approval_id), promoted

    def reject(self, approval_id: str, *, by: Principal, reason: str | None = None) -> Approval:
        """Reject a pending approval; the requester rejecting it withdraws it."""
        reason = _reason(reason)
        approval = self.get(approval_id, tenant=by.tenant)
        self._check_open(approval)
        return self._close(approval, ApprovalStatus.REJECTED, by.actor, reason)

    def expire_overdue(self, now: float | None = None) -> builtins.list[Approval]:
        """Close every pending approval past its ``expires_at`` (all tenants); workers call
        this. Each is a conditional update, so many workers expire an approval once."""
        now = time.time() if now is None else now
        closed = []
        with self.app.store.reading() as uow:
            overdue = uow.approvals.overdue(now)
        for approval in overdue:
            try:
                done = self._close_if_pending(
                    approval, ApprovalStatus.EXPIRED, f"system:{self.app.owner}", "expired", now
                )
            except AevosError as exc:
                # One approval that cannot be closed (its tenant's audit chain is broken,
                # say) must not hold up every other tenant's.
                log.error("approval %s could not expire: %s", approval.approval_id, exc.code)
                continue
            if done is not None:
                closed.append(done)
        return closed

    # -- helpers ------------------------------------------------------------------------------

    def _check_open(self, approval: Approval) -> None:
        if approval.status.closed:
            raise ApprovalConflictError(
                approval.approval_id, approval.status.value, "it was already decided"
            )
        if approval.expires_at <= time.time():
            self._close_if_pending(
                approval, ApprovalStatus.EXPIRED, f"system:{self.app.owner}", "expired", None
            )
            raise ApprovalConflictError(
                approval.approval_id,
                ApprovalStatus.EXPIRED.value,
                "nobody approved it before it expired",
            )

    def _close(
        self,
        approval: Approval,
        status: ApprovalStatus,
        by: str,
        reason: str | None,
        now: float | None = None,
    ) -> Approval:
        at = time.time() if now is None else now
        with self.app.store.transaction() as uow:
            done = uow.approvals.close(approval, status, by, reason, at)
            self._audit(uow, by, done)
            return done

    def _close_if_pending(
        self,
        approval: Approval,
        status: ApprovalStatus,
        by: str,
        reason: str,
        now: float | None,
    ) -> Approval | None:
        try:
            return self._close(approval, status, by, reason, now)
        except ApprovalConflictError:
            return None  # decided meanwhile (another worker's sweep, an approver)

    def _audit(self, uow: UnitOfWork, actor: str, done: Approval, **data: Any) -> None:
        """Audit the transition ``done`` went through, in the unit of work that made it."""
        self.app.audit.append(
            _event(
                action=f"approval.{done.status.value.lower()}",
                actor=actor,
                tenant=done.tenant,
                subject=f"approval:{done.approval_id}",
                data={
                    "model": done.model,
                    "version": done.version,
                    "alias": done.alias,
                    # The reason as a digest: free text may hold personal data.
                    "reason_digest": None if done.reason is None else codec.digest(done.reason),
                    **data,
                },
            ),
            uow=uow,
        )

    def _audit_decision(self, approver: Principal, approval: Approval, decision: Decision) -> None:
        self.app.audit.append(
            _event(
                action="policy.decided",
                actor=approver.actor,
                tenant=approver.tenant,
                subject=f"policy:{decision.policy}@{decision.version}",
                data={
                    **decision.to_record(),
                    "model": f"{approval.model}@{approval.version}",
                    "approval_id": approval.approval_id,
                },
            )
        )


class _Stale(Exception):
    """The alias moved since the request (raised inside the promotion's transaction)."""
