"""Schedules: their definitions and state (``aevos_schedules``) and what each tick did
(``aevos_schedule_ticks``), revision 0018.

A tick is claimed by :meth:`ScheduleRepository.advance`, a compare-and-set of the
schedule's ``last_tick`` made in the transaction that inserts the tick's run: the run and
the claim commit together or neither does, so however many workers race, each tick starts
one run and a lost race leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..records.schedule import TICK_STARTED, ScheduleState, TickRecord
from .repository import Repository
from .schema import schedule_ticks, schedules


def state_of(row: Any) -> ScheduleState:
    return ScheduleState(
        name=row.name,
        tenant=row.tenant,
        workflow=row.workflow,
        cron=row.cron,
        timezone=row.timezone,
        catch_up=int(row.catch_up),
        queue=row.queue,
        paused=bool(row.paused),
        last_tick=float(row.last_tick),
        next_tick=None if row.next_tick is None else float(row.next_tick),
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        updated_by=row.updated_by,
    )


def tick_of(row: Any) -> TickRecord:
    return TickRecord(
        schedule=row.schedule,
        tenant=row.tenant,
        status=row.status,
        tick_at=float(row.tick_at),
        first_at=float(row.first_at),
        count=int(row.count),
        run_id=row.run_id,
        lateness=None if row.lateness is None else float(row.lateness),
        actor=row.actor,
        at=float(row.at),
    )


class ScheduleRepository(Repository):
    """Schedules and their ticks, in the unit of work it is bound to."""

    def all(self, tenant: str | None = None) -> list[ScheduleState]:
        c = schedules.c
        query = sa.select(schedules).order_by(c.name)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        return [state_of(row) for row in self.conn.execute(query)]

    def get(self, name: str) -> ScheduleState | None:
        row = self.conn.execute(sa.select(schedules).where(schedules.c.name == name)).first()
        return None if row is None else state_of(row)

    def insert(self, state: ScheduleState) -> bool:
        """Store a new schedule; False when one of that name exists (another process
        stored it first)."""
        stmt = (
            self.uow.store.dialect.insert(schedules)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(schedules.c.name)
        )
        return self.conn.execute(stmt, state.to_json()).first() is not None

    def redefine(self, state: ScheduleState) -> None:
        """Replace the definition of ``state.name`` (its state is kept, but for the next
        tick, which a new expression or time zone moves)."""
        c = schedules.c
        self.conn.execute(
            schedules.update()
            .where(c.name == state.name)
            .values(
                tenant=state.tenant,
                workflow=state.workflow,
                cron=state.cron,
                timezone=state.timezone,
                catch_up=state.catch_up,
                queue=state.queue,
                next_tick=state.next_tick,
                updated_at=state.updated_at,
                updated_by=state.updated_by,
            )
        )

    def due(self, names: Sequence[str], now: float) -> list[ScheduleState]:
        """The schedules among ``names``, not paused, whose next tick is at or before ``now``."""
        if not names:
            return []
        c = schedules.c
        rows = self.conn.execute(
            sa.select(schedules)
            .where(
                c.name.in_(list(names)),
                c.paused.is_(False),
                c.next_tick.is_not(None),
                c.next_tick <= now,
            )
            .order_by(c.name)
        )
        return [state_of(row) for row in rows]

    def advance(self, name: str, last: float, to: float, next_tick: float | None) -> bool:
        """Move ``name``'s last tick from ``last`` to ``to`` (claiming the ticks between);
        False when another worker moved it first or the schedule was paused meanwhile."""
        c = schedules.c
        moved = self.conn.execute(
            schedules.update()
            .where(c.name == name, c.last_tick == last, c.paused.is_(False))
            .values(last_tick=to, next_tick=next_tick)
        )
        return bool(moved.rowcount == 1)

    def set_paused(
        self,
        name: str,
        paused: bool,
        *,
        now: float,
        actor: str,
        last_tick: float | None = None,
        next_tick: float | None = None,
    ) -> bool:
        """Pause or resume ``name`` (resuming moves its last tick to ``last_tick``); False
        when it already was."""
        c = schedules.c
        values: dict[str, Any] = {"paused": paused, "updated_at": now, "updated_by": actor}
        if last_tick is not None:
            values["last_tick"] = last_tick
            values["next_tick"] = next_tick
        moved = self.conn.execute(
            schedules.update().where(c.name == name, c.paused.is_(not paused)).values(**values)
        )
        return bool(moved.rowcount == 1)

    # -- ticks --------------------------------------------------------------------------------

    def add_ticks(self, records: Sequence[TickRecord]) -> None:
        if records:
            self.conn.execute(schedule_ticks.insert(), [r.to_json() for r in records])

    def ticks(self, name: str, *, status: str | None = None, limit: int = 100) -> list[TickRecord]:
        """``name``'s tick records, newest tick first."""
        t = schedule_ticks.c
        query = sa.select(schedule_ticks).where(t.schedule == name)
        if status is not None:
            query = query.where(t.status == status)
        rows = self.conn.execute(query.order_by(t.tick_at.desc(), t.id.desc()).limit(limit))
        return [tick_of(row) for row in rows]

    # -- metrics ------------------------------------------------------------------------------

    def tick_counts(self, tenant: str) -> list[tuple[str, str, int]]:
        """(schedule, status, ticks) of the tenant's schedules."""
        t = schedule_ticks.c
        rows = self.conn.execute(
            sa.select(t.schedule, t.status, sa.func.sum(t.count))
            .where(t.tenant == tenant)
            .group_by(t.schedule, t.status)
        )
        return [(s, status, int(n or 0)) for s, status, n in rows]

    def last_lateness(self, tenant: str) -> list[tuple[str, float]]:
        """(schedule, lateness in seconds) of each of the tenant's schedules' newest started
        tick."""
        t = schedule_ticks.c
        newest = (
            sa.select(t.schedule, sa.func.max(t.tick_at).label("tick_at"))
            .where(t.tenant == tenant, t.status == TICK_STARTED)
            .group_by(t.schedule)
            .subquery()
        )
        rows = self.conn.execute(
            sa.select(t.schedule, sa.func.max(t.lateness))
            .join(
                newest,
                sa.and_(t.schedule == newest.c.schedule, t.tick_at == newest.c.tick_at),
            )
            .where(t.tenant == tenant, t.status == TICK_STARTED)
            .group_by(t.schedule)
        )
        return [(s, float(late or 0.0)) for s, late in rows]
