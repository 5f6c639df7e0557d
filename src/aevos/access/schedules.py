"""Schedules behind the guard: list and read the tenant's schedules and their ticks
(``runs:read``); pause and resume one (``runs:control``); trigger a run now (``runs:start``).

A schedule of another tenant is refused like any object of another tenant (403, audited);
an unknown one is 404. A refused action is recorded as ``schedule.rejected`` with its reason.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..errors import AevosError
from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..records.schedule import TickRecord
    from ..schedules import Schedules as ScheduleService
    from ..schedules import ScheduleView

T = TypeVar("T")


class Services(Protocol):
    @property
    def schedules(self) -> ScheduleService: ...


class Schedules:
    """The tenant's schedules, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def _owned(self, principal: Principal, name: str) -> ScheduleView:
        view = self.services.schedules.get(name)
        self.guard.own(principal, "schedule", name, view.state.tenant)
        return view

    def _recorded(self, principal: Principal, name: str, act: Callable[[], T]) -> T:
        try:
            return act()
        except AevosError as exc:
            self.guard.record(
                principal,
                "schedule.rejected",
                subject=f"schedule:{name[:100]}",
                schedule=name[:100],
                code=exc.code,
                reason=exc.message,
            )
            raise

    def list(self, principal: Principal) -> builtins.list[ScheduleView]:
        self.guard.allow(principal, Permission.RUNS_READ, "read schedules")
        return self.services.schedules.list(principal.tenant)

    def get(self, principal: Principal, name: str) -> ScheduleView:
        self.guard.allow(principal, Permission.RUNS_READ, "read schedules")
        return self._owned(principal, name)

    def ticks(self, principal: Principal, name: str, limit: int) -> builtins.list[TickRecord]:
        """The schedule's tick records, newest first."""
        self.guard.allow(principal, Permission.RUNS_READ, "read schedules")
        self._owned(principal, name)
        return self.services.schedules.ticks(name, tenant=principal.tenant, limit=limit)

    def pause(self, principal: Principal, name: str) -> ScheduleView:
        self.guard.allow(principal, Permission.RUNS_CONTROL, "pause schedules")
        service = self.services.schedules

        def act() -> ScheduleView:
            self._owned(principal, name)
            return service.pause(name, actor=principal.actor, tenant=principal.tenant)

        return self._recorded(principal, name, act)

    def resume(self, principal: Principal, name: str) -> ScheduleView:
        self.guard.allow(principal, Permission.RUNS_CONTROL, "resume schedules")
        service = self.services.schedules

        def act() -> ScheduleView:
            self._owned(principal, name)
            return service.resume(name, actor=principal.actor, tenant=principal.tenant)

        return self._recorded(principal, name, act)

    def trigger(self, principal: Principal, name: str) -> TickRecord:
        """Start a run of the schedule now (its run's start is audited as the token's)."""
        self.guard.allow(principal, Permission.RUNS_START, "trigger schedules")
        service = self.services.schedules

        def act() -> TickRecord:
            self._owned(principal, name)
            return service.trigger(name, actor=principal.actor, tenant=principal.tenant)

        return self._recorded(principal, name, act)
