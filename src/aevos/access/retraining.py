"""Retraining behind the guard: start one (``models:write``: it registers a version), read
a model's configuration and retrainings (``models:read``).

Starting only enqueues: the training runs on a worker, never in the process serving the
request. A start the service refuses (no configuration, say) is recorded as
``retraining.rejected`` with its reason.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Protocol

from ..errors import AevosError
from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..records.retraining import RetrainingConfig, RetrainingRun
    from ..retraining import Retraining as RetrainingService


class Services(Protocol):
    @property
    def retraining(self) -> RetrainingService: ...


class Retraining:
    """Retraining of the tenant's models, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def start(self, principal: Principal, model: str) -> RetrainingRun:
        """Enqueue a retraining of the tenant's ``model`` with its configuration in force;
        returns its record (status ``queued``; its ``run_id`` is the workflow run's)."""
        self.guard.allow(principal, Permission.MODELS_WRITE, "retrain models")
        service = self.services.retraining
        try:
            handle = service.start(model, tenant=principal.tenant, actor=principal.actor)
        except AevosError as exc:
            self.guard.record(
                principal,
                "retraining.rejected",
                subject=f"model:{model[:200]}",
                model=model[:200],
                code=exc.code,
                reason=exc.message,
            )
            raise
        return service.run(handle.run_id, tenant=principal.tenant)

    def config(self, principal: Principal, model: str) -> RetrainingConfig:
        """The configuration in force for the tenant's ``model`` (404 without one)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.retraining.config(model, tenant=principal.tenant)

    def runs(
        self, principal: Principal, model: str, *, limit: int = 50
    ) -> builtins.list[RetrainingRun]:
        """The tenant's retrainings of ``model``, newest first."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.retraining.runs(model, tenant=principal.tenant, limit=limit)

    def run(self, principal: Principal, run_id: str) -> RetrainingRun:
        """One of the tenant's retrainings (404 for another tenant's)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.retraining.run(run_id, tenant=principal.tenant)
