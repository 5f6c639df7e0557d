"""Schedules: workflows started on cron expressions in a time zone, exactly once per tick
across every worker, with catch-up of missed ticks up to a limit, pause and resume."""

from .cron import Cron
from .service import Schedule, Schedules, ScheduleView

__all__ = ["Cron", "Schedule", "ScheduleView", "Schedules"]
