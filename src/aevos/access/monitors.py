"""Monitors behind the guard: read a model's monitor configuration, results and alerts
(``models:read``); configure, check and acknowledge (``models:write``).

A configuration or check the service refuses (a bad setting, no configuration) is recorded
as ``monitor.rejected`` with its reason. A check asked for here is never computed in the
process serving the request: it is made due, and the next worker sweep computes it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import AevosError
from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..monitoring import Monitors as MonitorService
    from ..records.monitors import Alert, MonitorConfig, MonitorResult

T = TypeVar("T")


class Services(Protocol):
    @property
    def monitors(self) -> MonitorService: ...


class Monitors:
    """Monitors of the tenant's models, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def _recorded(self, principal: Principal, model: str, act: Callable[[], T]) -> T:
        try:
            return act()
        except AevosError as exc:
            self.guard.record(
                principal,
                "monitor.rejected",
                subject=f"model:{model[:200]}",
                model=model[:200],
                code=exc.code,
                reason=exc.message,
            )
            raise

    def configure(
        self, principal: Principal, model: str, settings: Mapping[str, Any]
    ) -> MonitorConfig:
        """Set how the tenant's ``model`` is monitored (a new configuration version)."""
        self.guard.allow(principal, Permission.MODELS_WRITE, "configure monitors")
        service = self.services.monitors
        return self._recorded(
            principal,
            model,
            lambda: service.configure(
                model, tenant=principal.tenant, actor=principal.actor, **settings
            ),
        )

    def config(self, principal: Principal, model: str) -> MonitorConfig:
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.monitors.config(model, tenant=principal.tenant)

    def check(self, principal: Principal, model: str) -> dict[str, Any]:
        """Ask the workers to check the tenant's ``model`` now; what was scheduled."""
        self.guard.allow(principal, Permission.MODELS_WRITE, "check monitors")
        service = self.services.monitors
        return self._recorded(
            principal,
            model,
            lambda: service.request_check(model, tenant=principal.tenant, actor=principal.actor),
        )

    def results(
        self, principal: Principal, model: str, *, limit: int = 50
    ) -> builtins.list[MonitorResult]:
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.monitors.results(model, tenant=principal.tenant, limit=limit)

    def alerts(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Alert]:
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.monitors.alerts(
            tenant=principal.tenant, model=model, status=status, limit=limit
        )

    def acknowledge(
        self, principal: Principal, alert_id: str, *, reason: str = "", dismiss: bool = False
    ) -> Alert:
        """Acknowledge (or dismiss) one of the tenant's alerts (404 for another tenant's)."""
        self.guard.allow(principal, Permission.MODELS_WRITE, "acknowledge alerts")
        return self.services.monitors.acknowledge(
            alert_id,
            tenant=principal.tenant,
            actor=principal.actor,
            reason=reason,
            dismiss=dismiss,
        )
