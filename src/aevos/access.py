"""Governed entry points: every request that carries a token goes through here.

Each operation authenticates nothing itself (callers pass the :class:`Principal` that
``Access.authenticate`` returned), checks the role's permission, scopes every read and
write to the principal's tenant, and records what it did in the audit log. Objects of
another tenant are refused (403, like any operation a token may not perform) and the attempt
is audited; nothing about the other tenant's object is returned or named. The HTTP API is a thin
layer over this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .errors import AuthorizationError
from .handle import RunHandle
from .identity import Permission, Principal
from .lineage import Lineage, lineage
from .run import RunInfo, StepInfo
from .status import RunStatus

if TYPE_CHECKING:
    from .app import Aevos
    from .audit import AuditRecord, VerifyReport
    from .models.gateway import CallResult
    from .models.types import ModelVersion
    from .policy import Decision


@dataclass(frozen=True)
class Promotion:
    """What a promotion request came to: the policy's decision, and the promoted version
    (None when the policy denied it or it awaits a person's approval)."""

    decision: Decision
    promoted: ModelVersion | None

    @property
    def needs_approval(self) -> bool:
        return self.promoted is None and self.decision.result == "approve"


class Access:
    def __init__(self, app: Aevos) -> None:
        self.app = app

    # -- identity ---------------------------------------------------------------------------

    def authenticate(self, token: str | None, *, tenant_hint: str = "default") -> Principal:
        """The principal behind a bearer token; AuthenticationError (401) otherwise."""
        return self.app.identity.authenticate(token, tenant_hint=tenant_hint)

    def _allow(self, principal: Principal, permission: Permission, action: str) -> None:
        self.app.identity.authorize(principal, permission, action=action)

    def _audit(
        self,
        principal: Principal,
        action: str,
        *,
        subject: str | None = None,
        run_id: str | None = None,
        **data: Any,
    ) -> None:
        from .audit import AuditEvent

        self.app.audit.append(
            AuditEvent(
                action=action,
                actor=principal.actor,
                tenant=principal.tenant,
                subject=subject,
                run_id=run_id,
                data=data,
            )
        )

    def _own_run(self, principal: Principal, run_id: str) -> RunInfo:
        info = self.app.store.get_run(run_id)  # RunNotFoundError for unknown ids
        if info.tenant != principal.tenant:
            self.app.identity.deny_cross_tenant(principal, "run", run_id)
            # 403, as for any request a token may not make; the message names nothing of
            # the other tenant.
            raise AuthorizationError(f"run {run_id!r} is not accessible with this token")
        return info

    # -- runs -------------------------------------------------------------------------------

    def get_run(self, principal: Principal, run_id: str) -> RunInfo:
        self._allow(principal, Permission.RUNS_READ, "read runs")
        return self._own_run(principal, run_id)

    def list_steps(self, principal: Principal, run_id: str) -> list[StepInfo]:
        self._allow(principal, Permission.RUNS_READ, "read runs")
        self._own_run(principal, run_id)
        return self.app.store.list_steps(run_id)

    def list_runs(
        self,
        principal: Principal,
        *,
        status: list[RunStatus] | None = None,
        workflow: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunInfo]:
        self._allow(principal, Permission.RUNS_READ, "read runs")
        return self.app.store.list_runs(
            status=status, workflow=workflow, tenant=principal.tenant, limit=limit, offset=offset
        )

    def start_run(
        self,
        principal: Principal,
        workflow: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> RunInfo:
        self._allow(principal, Permission.RUNS_START, "start runs")
        # The kernel audits the start (or the refusal) in the run's own transaction, with
        # the principal as its actor.
        handle = self.app.start(
            workflow,
            *(args or []),
            idempotency_key=idempotency_key,
            queue=queue,
            priority=priority,
            tenant=principal.tenant,
            actor=principal.actor,
            **(kwargs or {}),
        )
        return self.app.store.get_run(handle.run_id)

    def cancel_run(self, principal: Principal, run_id: str) -> RunStatus:
        self._allow(principal, Permission.RUNS_CONTROL, "cancel runs")
        self._own_run(principal, run_id)
        status = self.app.cancel(run_id)
        self._audit(principal, "run.cancelled", run_id=run_id, status=status.value)
        return status

    def resume_run(self, principal: Principal, run_id: str) -> RunInfo:
        self._allow(principal, Permission.RUNS_CONTROL, "resume runs")
        self._own_run(principal, run_id)
        self.app.resume(run_id)
        self._audit(principal, "run.resumed", run_id=run_id)
        return self.app.store.get_run(run_id)

    def fork_run(self, principal: Principal, run_id: str, from_step: int) -> RunInfo:
        self._allow(principal, Permission.RUNS_CONTROL, "fork runs")
        self._own_run(principal, run_id)
        handle: RunHandle[Any] = self.app.fork(run_id, from_step)
        self._audit(
            principal, "run.forked", run_id=handle.run_id, source=run_id, from_step=from_step
        )
        return self.app.store.get_run(handle.run_id)

    def lineage(self, principal: Principal, run_id: str) -> Lineage:
        """Why was this case decided so: the run, its steps, decisions and people."""
        self._allow(principal, Permission.RUNS_READ, "read lineage")
        self._own_run(principal, run_id)
        return lineage(self.app, run_id)

    # -- models -----------------------------------------------------------------------------

    def predict(
        self, principal: Principal, model: str, input: Any, *, key: str | None = None
    ) -> CallResult:
        """A governed model call outside workflows: the tenant's routes, budgets and rate
        limits apply, and the call is recorded with the principal as its actor."""
        self._allow(principal, Permission.MODELS_CALL, "call models")
        return self.app.gateway.predict(
            model, input, key=key, tenant=principal.tenant, actor=principal.actor
        )

    def promote_model(
        self,
        principal: Principal,
        name: str,
        version: int,
        *,
        evidence: Mapping[str, Any],
        alias: str = "champion",
        policy: str = "promotion-gate",
        approved_by: Principal | None = None,
    ) -> Promotion:
        """Move ``alias`` to ``version`` if the promotion policy allows it (an approval gate).

        The policy sees ``{"model": {"name": ...}, **evidence}`` (the candidate's and the
        champion's metrics). ``allow`` promotes; ``approve`` promotes only with
        ``approved_by``, a different principal of the tenant who may promote (four eyes);
        ``deny`` never does. The decision is audited either way.
        """
        self._allow(principal, Permission.MODELS_PROMOTE, "promote models")
        self.app.models.get(name, version, tenant=principal.tenant)  # 404 before deciding
        decision = self.app.policies.evaluate(policy, {"model": {"name": name}, **evidence})
        self._audit(
            principal,
            "policy.decided",
            subject=f"policy:{decision.policy}@{decision.version}",
            **decision.to_record(),
            model=f"{name}@{version}",
        )
        approver = None
        if decision.result == "approve" and approved_by is not None:
            self._allow(approved_by, Permission.MODELS_PROMOTE, "approve promotions")
            if approved_by.tenant != principal.tenant or approved_by.token_id == principal.token_id:
                raise AuthorizationError(
                    "a promotion needing approval must be approved by another principal of "
                    "the same tenant"
                )
            approver = approved_by.actor
        if decision.result == "allow" or approver is not None:
            by = (
                principal.actor if approver is None else f"{principal.actor} approved by {approver}"
            )
            promoted = self.app.models.promote(
                name, version, alias=alias, tenant=principal.tenant, by=by
            )
            return Promotion(decision, promoted)
        return Promotion(decision, None)

    # -- personal data ----------------------------------------------------------------------

    def reveal(self, principal: Principal, text: str) -> str:
        """``text`` with this tenant's PII tokens replaced by the original values.

        Needs ``pii:reveal`` (admins and auditors); every reveal is audited with how many
        tokens it resolved, never with what they resolved to.
        """
        self._allow(principal, Permission.PII_REVEAL, "reveal personal data")
        revealed = self.app.redactor.detokenize(
            text, tenant=principal.tenant, vault=self.app.vault, allowed=True
        )
        from .pii.vault import TOKEN

        self._audit(principal, "pii.revealed", tokens=len(TOKEN.findall(text)))
        return revealed

    # -- audit ------------------------------------------------------------------------------

    def audit_query(self, principal: Principal, **filters: Any) -> list[AuditRecord]:
        self._allow(principal, Permission.AUDIT_READ, "read the audit log")
        return self.app.audit.query(principal.tenant, **filters)

    def audit_verify(self, principal: Principal) -> VerifyReport:
        self._allow(principal, Permission.AUDIT_READ, "verify the audit log")
        report = self.app.audit.verify(principal.tenant)
        self._audit(principal, "audit.verified", ok=report.ok, checked=report.checked)
        return report

    def audit_export(self, principal: Principal, out: IO[str], *, after_seq: int = 0) -> int:
        self._allow(principal, Permission.AUDIT_EXPORT, "export the audit log")
        self._audit(principal, "audit.exported", after_seq=after_seq)
        return self.app.audit.export_jsonl(principal.tenant, out, after_seq=after_seq)
