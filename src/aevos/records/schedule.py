"""Schedules: a workflow started on a cron expression, its stored state, and what each
tick did.

A :class:`ScheduleState` is a schedule's row: its definition as last declared in code
(cron expression, time zone, workflow, catch-up limit) and its state, which survives
restarts (paused or not, the last tick handled, the next one due). A :class:`TickRecord`
says what happened to one tick (its run started, with its lateness), to a range of missed
ticks older than the catch-up limit (skipped, counted), or to a run started by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: What a tick record says happened.
TICK_STARTED = "started"
TICK_SKIPPED = "skipped"
TICK_TRIGGERED = "triggered"


@dataclass(frozen=True)
class ScheduleState:
    """A schedule as stored. ``last_tick`` is the instant (epoch seconds) after which ticks
    are due: the last tick handled, or when the schedule was first stored or resumed."""

    name: str
    tenant: str
    workflow: str
    cron: str
    timezone: str
    catch_up: int
    queue: str | None
    paused: bool
    last_tick: float
    next_tick: float | None
    created_at: float
    updated_at: float
    updated_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "workflow": self.workflow,
            "cron": self.cron,
            "timezone": self.timezone,
            "catch_up": self.catch_up,
            "queue": self.queue,
            "paused": self.paused,
            "last_tick": self.last_tick,
            "next_tick": self.next_tick,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class TickRecord:
    """One tick's outcome: ``started`` (``run_id``, ``lateness`` = seconds from the tick to
    the run's start), ``skipped`` (``count`` ticks from ``first_at`` to ``tick_at``, older
    than the catch-up limit), or ``triggered`` (a run started by hand at ``tick_at``)."""

    schedule: str
    tenant: str
    status: str
    tick_at: float
    first_at: float
    count: int
    run_id: str | None
    lateness: float | None
    actor: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "tenant": self.tenant,
            "status": self.status,
            "tick_at": self.tick_at,
            "first_at": self.first_at,
            "count": self.count,
            "run_id": self.run_id,
            "lateness": self.lateness,
            "actor": self.actor,
            "at": self.at,
        }
