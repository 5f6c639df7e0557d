"""Metrics: the tenant's Prometheus exposition, the console's time series and the
evolution report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..identity import Permission, Principal
from ..storage.health import store_health
from ..telemetry.metrics import dashboard, exposition, model_metrics
from ..telemetry.report import evolution_report
from ..telemetry.storage import storage_exposition
from .guard import Guard

if TYPE_CHECKING:
    from ..models.registry import ModelRegistry
    from ..storage import Store
    from ..telemetry.metrics import CallTotalsCache, Dashboard, ModelMetrics
    from ..telemetry.report import EvolutionReport


class Services(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def call_totals(self) -> CallTotalsCache: ...

    @property
    def models(self) -> ModelRegistry: ...


class Metrics:
    """Metrics, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def exposition(self, principal: Principal) -> bytes:
        """The tenant's Prometheus exposition, read from the database (see aevos.telemetry.metrics)."""
        self.guard.allow(principal, Permission.RUNS_READ, "read metrics")
        text = exposition(self.services.store, self.services.call_totals, principal.tenant)
        if principal.can(Permission.CONFIG_WRITE):
            # The database's health (aevos doctor's figures) for administrators only: its
            # size and free space speak of every tenant's activity, not one tenant's.
            text += storage_exposition(store_health(self.services.store))
        return text

    def dashboard(
        self, principal: Principal, *, since: float, until: float, buckets: int
    ) -> Dashboard:
        """The console's time series for the tenant (see :func:`aevos.telemetry.metrics.dashboard`)."""
        self.guard.allow(principal, Permission.RUNS_READ, "read metrics")
        return dashboard(
            self.services.store, principal.tenant, since=since, until=until, buckets=buckets
        )

    def model(
        self, principal: Principal, name: str, *, since: float, until: float, buckets: int
    ) -> ModelMetrics:
        """One model's live metrics per version (see :func:`aevos.telemetry.metrics.model_metrics`);
        404 for a model the tenant does not have."""
        self.guard.allow(principal, Permission.MODELS_READ, "read model metrics")
        self.services.models.versions(name, tenant=principal.tenant)  # ModelNotFoundError
        return model_metrics(
            self.services.store, principal.tenant, name, since=since, until=until, buckets=buckets
        )

    def evolution(
        self,
        principal: Principal,
        model: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        buckets: int,
    ) -> EvolutionReport:
        """The evolution report of a model of the tenant, or of all of them (see
        :func:`aevos.telemetry.report.evolution_report`); 404 for a model the tenant does
        not have, 422 for a window no report answers. It counts people's tasks as well as
        the model's decisions, so it needs ``tasks:read`` beside ``models:read`` (a
        ``service`` token, a machine's, has not)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read the evolution report")
        self.guard.allow(principal, Permission.TASKS_READ, "read the evolution report")
        return evolution_report(
            self.services.store,
            principal.tenant,
            model,
            since=since,
            until=until,
            buckets=buckets,
        )
