"""Runs: read, start, cancel, resume and fork the tenant's runs; a run's lineage."""

from __future__ import annotations

import builtins
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from ..audit.lineage import Lineage, lineage
from ..identity import Permission, Principal
from ..kernel.handle import RunHandle
from ..kernel.workflow import StartOptions
from ..pii.datapolicy import reveal_value
from ..records.run import RunInfo, StepInfo
from ..records.status import RunStatus
from .guard import Guard

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..audit import AuditLog
    from ..audit.lineage import Lineage
    from ..kernel.handle import RunHandle
    from ..kernel.runtime import Runtime
    from ..pii import Vault
    from ..storage import Store, VersionRuns


class Services(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def vault(self) -> Vault: ...

    def fork(
        self, run_id: str, from_step: int = 0, *, queue: str | None = None
    ) -> RunHandle[Any]: ...


class Runs:
    """Runs, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def _own(self, principal: Principal, run_id: str) -> RunInfo:
        info = self.services.store.get_run(run_id)  # RunNotFoundError for unknown ids
        self.guard.own(principal, "run", run_id, info.tenant)
        return info

    def get(self, principal: Principal, run_id: str, *, reveal: bool = False) -> RunInfo:
        """A run of the principal's tenant, its input as stored (its data policy applied).

        ``reveal=True`` returns the input and output with their PII tokens replaced by the
        originals: it needs ``pii:reveal`` as well (a refusal is a 403, audited), and each
        reveal is audited as ``pii.revealed`` with the run and the number of tokens.
        """
        self.guard.allow(principal, Permission.RUNS_READ, "read runs")
        info = self._own(principal, run_id)
        if reveal:
            info = self._revealed(principal, info)
        return info

    def _revealed(self, principal: Principal, info: RunInfo) -> RunInfo:
        self.guard.allow(principal, Permission.PII_REVEAL, "reveal personal data")
        services = self.services
        value, tokens = reveal_value(
            {"input": info.input, "output": info.output},
            tenant=principal.tenant,
            vault=lambda: services.vault,
            allowed=True,
        )
        self.guard.record(
            principal,
            "pii.revealed",
            subject=f"run:{info.run_id}",
            run_id=info.run_id,
            tokens=tokens,
        )
        return replace(info, input=value["input"], output=value["output"])

    def steps(self, principal: Principal, run_id: str) -> builtins.list[StepInfo]:
        self.guard.allow(principal, Permission.RUNS_READ, "read runs")
        self._own(principal, run_id)
        return self.services.store.list_steps(run_id)

    def list(
        self,
        principal: Principal,
        *,
        status: builtins.list[RunStatus] | None = None,
        workflow: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[RunInfo]:
        self.guard.allow(principal, Permission.RUNS_READ, "read runs")
        return self.services.store.list_runs(
            status=status, workflow=workflow, tenant=principal.tenant, limit=limit, offset=offset
        )

    def versions(self, principal: Principal) -> builtins.list[VersionRuns]:
        """The tenant's runs in flight per the code version they started on, oldest first."""
        self.guard.allow(principal, Permission.RUNS_READ, "read runs")
        return self.services.store.versions_in_flight(tenant=principal.tenant)

    def start(
        self,
        principal: Principal,
        workflow: str,
        args: builtins.list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        trace: Mapping[str, str] | None = None,
    ) -> RunInfo:
        """Start a run in the principal's tenant. ``args`` and ``kwargs`` are the workflow's
        alone (a keyword named ``tenant`` goes to the workflow, never sets the run's tenant);
        arguments that do not fit it are a :class:`~aevos.errors.WorkflowArgumentError`.
        ``trace``: the caller's W3C trace context headers, the parent of the run's trace
        when tracing is on."""
        self.guard.allow(principal, Permission.RUNS_START, "start runs")
        options = StartOptions(
            queue=queue,
            idempotency_key=idempotency_key,
            priority=priority,
            tenant=principal.tenant,
            actor=principal.actor,
        )
        # The kernel audits the start (or the refusal) in the run's own transaction, with
        # the principal as its actor.
        runtime = self.services.runtime
        if runtime.tracing is None:
            handle = runtime.start(workflow, args or [], kwargs or {}, options)
        else:
            attributes = {"aevos.workflow": workflow[:200], "aevos.tenant": principal.tenant}
            with runtime.tracing.incoming(trace, "aevos.api start_run", attributes) as span:
                handle = runtime.start(workflow, args or [], kwargs or {}, options)
                span.set_attribute("aevos.run.id", handle.run_id)
        return self.services.store.get_run(handle.run_id)

    def cancel(self, principal: Principal, run_id: str) -> RunStatus:
        self.guard.allow(principal, Permission.RUNS_CONTROL, "cancel runs")
        self._own(principal, run_id)
        # The record commits with the cancellation: one never stands without the other.
        return self.services.runtime.cancel(
            run_id,
            also=lambda uow, status: self.guard.record(
                principal, "run.cancelled", run_id=run_id, uow=uow, status=status.value
            ),
        )

    def resume(self, principal: Principal, run_id: str) -> RunInfo:
        self.guard.allow(principal, Permission.RUNS_CONTROL, "resume runs")
        self._own(principal, run_id)
        self.services.runtime.resume(
            run_id,
            also=lambda uow: self.guard.record(principal, "run.resumed", run_id=run_id, uow=uow),
        )
        return self.services.store.get_run(run_id)

    def fork(self, principal: Principal, run_id: str, from_step: int) -> RunInfo:
        self.guard.allow(principal, Permission.RUNS_CONTROL, "fork runs")
        self._own(principal, run_id)
        handle: RunHandle[Any] = self.services.fork(run_id, from_step)
        self.guard.record(
            principal, "run.forked", run_id=handle.run_id, source=run_id, from_step=from_step
        )
        return self.services.store.get_run(handle.run_id)

    def lineage(self, principal: Principal, run_id: str) -> Lineage:
        """Why was this case decided so: the run, its steps, decisions and people."""
        self.guard.allow(principal, Permission.RUNS_READ, "read lineage")
        self._own(principal, run_id)
        return lineage(self.services.store, self.services.audit, run_id)
