"""Schedules (``app.schedules``): workflows started on cron expressions, exactly once per
tick however many workers on however many hosts run the ticker.

A schedule is declared in code (``app.schedule(name, workflow, cron=..., tz=...)``) and
stored in ``aevos_schedules`` the first time a process syncs it, with its state: paused or
not, and the instant after which ticks are due (``last_tick``). Workers tick between claims
(:meth:`Schedules.tick`): for each schedule due, the ticks after ``last_tick`` up to now.

**Exactly once.** A tick's run is inserted with the idempotency key
``schedule:<name>:<tick in UTC>``, and in the same transaction ``last_tick`` moves from the
value the worker read to the tick (a compare-and-set, :meth:`ScheduleRepository.advance`).
Two workers on one tick: the second's insert finds the first's run by its key (PostgreSQL
makes it wait for the first's commit) and inserts nothing. Two workers that read the same
``last_tick`` but chose different ticks (one looked later): the loser's compare-and-set
matches no row, which rolls its run back. Either way one run per tick, and a worker that
dies anywhere leaves either both the run and the claim or neither.

**Catch-up.** When several ticks are due at once (no worker ran for a while), the newest
``catch_up`` of them start (each with its lateness) and the older ones are skipped: one
``skipped`` record counts them, in the transaction of the first start.

**Pause, resume, trigger.** A paused schedule starts nothing; resuming it counts ticks
from the moment it resumed (the ticks of the pause are not caught up). ``trigger`` starts a
run now, outside the cron (its own key), and leaves the schedule's ticks as they were.
Each is audited (``schedule.paused``, ``schedule.resumed``, ``schedule.triggered``).
"""

from __future__ import annotations

import builtins
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent
from ..errors import AevosError, DefinitionError, ScheduleNotFoundError
from ..identity import check_tenant
from ..kernel.workflow import StartOptions
from ..records.schedule import (
    TICK_SKIPPED,
    TICK_STARTED,
    TICK_TRIGGERED,
    ScheduleState,
    TickRecord,
)
from .cron import Cron

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..kernel.runtime import Runtime
    from ..storage import Store, UnitOfWork

__all__ = ["MAX_CATCH_UP", "Schedule", "ScheduleView", "Schedules"]

log = logging.getLogger("aevos.schedules")

#: The most missed ticks one schedule may catch up.
MAX_CATCH_UP = 1000
# Ticks looked at per pass: a schedule behind by more skips them in ranges of this many,
# each pass one bounded transaction.
_SCAN = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _TickTaken(Exception):
    """Another worker claimed the tick first (or the schedule was paused): roll back."""


@dataclass(frozen=True)
class Schedule:
    """A schedule as declared in code."""

    name: str
    workflow: str
    cron: Cron
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    catch_up: int = 1
    tenant: str = "default"
    queue: str | None = None

    def key(self, tick: float) -> str:
        """The idempotency key of the run of ``tick``: the tick's time names it."""
        return f"schedule:{self.name}:{_iso(tick)}"


@dataclass(frozen=True)
class ScheduleView:
    """A stored schedule with whether this process declares it."""

    state: ScheduleState
    declared: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.state.to_json(), "declared": self.declared}


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Schedules:
    """The app's schedules: declare (in code), sync to the table, tick (workers do),
    list, pause, resume, trigger."""

    def __init__(self, runtime: Runtime, store: Callable[[], Store], audit: Callable[[], AuditLog]):
        self.runtime = runtime
        self._store = store
        self._audit = audit
        self.declared: dict[str, Schedule] = {}

    @property
    def store(self) -> Store:
        return self._store()

    # -- declaring ----------------------------------------------------------------------------

    def declare(
        self,
        name: str,
        workflow: str,
        *,
        cron: str,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        catch_up: int = 1,
        tenant: str = "default",
        queue: str | None = None,
    ) -> Schedule:
        """Declare a schedule (see ``Aevos.schedule``); everything is checked here."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise DefinitionError(
                f"schedule name {str(name)[:40]!r} must be 1-100 letters, digits, '_', '.', '-'"
            )
        if name in self.declared:
            raise DefinitionError(f"schedule {name!r} is declared twice")
        if isinstance(catch_up, bool) or not isinstance(catch_up, int):
            raise DefinitionError(f"catch_up must be an integer, got {type(catch_up).__name__}")
        if not 1 <= catch_up <= MAX_CATCH_UP:
            raise DefinitionError(f"catch_up must be between 1 and {MAX_CATCH_UP}, got {catch_up}")
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise DefinitionError(
                "schedule args must be a list or tuple of the workflow's arguments"
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise DefinitionError("schedule kwargs must be a mapping of the workflow's arguments")
        check_tenant(tenant)
        if queue is not None:
            self.runtime.queue_named(queue)
        schedule = Schedule(
            name=name,
            workflow=workflow,
            cron=Cron.parse(cron, tz),
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            catch_up=catch_up,
            tenant=tenant,
            queue=queue,
        )
        registered = self.runtime.workflows.get(workflow)
        if registered is not None:
            # Arguments that do not fit (or are not JSON) fail here, not at the first tick.
            registered.encode_input(schedule.args, schedule.kwargs)
        self.declared[name] = schedule
        return schedule

    # -- the table ----------------------------------------------------------------------------

    def sync(self, now: float | None = None) -> None:
        """Store the declared schedules not stored yet (counting ticks from ``now``) and the
        new definition of those changed in code (their state is kept)."""
        if not self.declared:
            return
        moment = time.time() if now is None else now
        with self.store.reading() as uow:
            stored = {s.name: s for s in uow.schedules.all()}
        for schedule in self.declared.values():
            state = stored.get(schedule.name)
            if state is None:
                fresh = self._state(schedule, moment)
                with self.store.transaction() as uow:
                    uow.schedules.insert(fresh)
            elif _definition(state) != _definition(self._state(schedule, state.last_tick)):
                changed = replace(
                    self._state(schedule, state.last_tick),
                    paused=state.paused,
                    created_at=state.created_at,
                    updated_at=moment,
                )
                with self.store.transaction() as uow:
                    uow.schedules.redefine(changed)

    def _state(self, schedule: Schedule, last_tick: float) -> ScheduleState:
        return ScheduleState(
            name=schedule.name,
            tenant=schedule.tenant,
            workflow=schedule.workflow,
            cron=schedule.cron.expression,
            timezone=schedule.cron.timezone,
            catch_up=schedule.catch_up,
            queue=schedule.queue,
            paused=False,
            last_tick=last_tick,
            next_tick=schedule.cron.next_after(last_tick),
            created_at=last_tick,
            updated_at=last_tick,
            updated_by=f"code:{self.runtime.code_version}",
        )

    # -- ticking ------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[TickRecord]:
        """Start the runs of the ticks due at ``now`` (default: the clock) for every declared
        schedule that is not paused; what this call recorded (another worker may have
        started some of the ticks: each starts once)."""
        moment = time.time() if now is None else now
        self.sync(moment)
        with self.store.reading() as uow:
            due = uow.schedules.due(sorted(self.declared), moment)
        recorded: list[TickRecord] = []
        for state in due:
            schedule = self.declared[state.name]
            try:
                # A schedule declared before its workflow was registered has its arguments
                # checked here: refused, it is logged on every sweep instead of recording a
                # rejected run each time.
                self.runtime.workflow_named(schedule.workflow).encode_input(
                    schedule.args, schedule.kwargs
                )
                recorded.extend(self._catch_up(schedule, state, moment))
            except AevosError as exc:
                log.warning(
                    "schedule %s could not start its tick: [%s] %s",
                    state.name,
                    exc.code,
                    exc.message,
                )
        return recorded

    def _catch_up(self, schedule: Schedule, state: ScheduleState, now: float) -> list[TickRecord]:
        recorded: list[TickRecord] = []
        cron, last = schedule.cron, state.last_tick
        while True:
            ticks = cron.ticks(last, now, _SCAN)
            if not ticks:
                return recorded
            later = cron.ticks(ticks[-1], now, schedule.catch_up) if len(ticks) == _SCAN else []
            if later:
                # More are due after these: skip at once those of them older than the newest
                # catch_up ticks, then look again.
                keep = schedule.catch_up - len(later)
                older = ticks[: len(ticks) - keep] if keep > 0 else ticks
                skipped = self._skipped(schedule, older, now)
                with self.store.transaction() as uow:
                    following = cron.next_after(older[-1])
                    if not uow.schedules.advance(schedule.name, last, older[-1], following):
                        return recorded
                    uow.schedules.add_ticks([skipped])
                recorded.append(skipped)
                last = older[-1]
                continue
            older, starting = ticks[: -schedule.catch_up], ticks[-schedule.catch_up :]
            pending = [self._skipped(schedule, older, now)] if older else []
            for tick in starting:
                started = self._start_tick(schedule, last, tick, pending, now)
                if started is None:
                    return recorded
                recorded.extend([*pending, started])
                pending = []
                last = tick
            return recorded

    def _skipped(self, schedule: Schedule, ticks: Sequence[float], now: float) -> TickRecord:
        return TickRecord(
            schedule=schedule.name,
            tenant=schedule.tenant,
            status=TICK_SKIPPED,
            tick_at=ticks[-1],
            first_at=ticks[0],
            count=len(ticks),
            run_id=None,
            lateness=None,
            actor=self._actor(schedule),
            at=now,
        )

    def _actor(self, schedule: Schedule) -> str:
        return f"schedule:{schedule.name}"

    def _start_tick(
        self,
        schedule: Schedule,
        last: float,
        tick: float,
        skipped: list[TickRecord],
        now: float,
    ) -> TickRecord | None:
        """Start ``tick``'s run and claim it in one transaction; None if another worker
        had claimed it (or the schedule was paused)."""
        run_id = uuid.uuid4().hex
        record = TickRecord(
            schedule=schedule.name,
            tenant=schedule.tenant,
            status=TICK_STARTED,
            tick_at=tick,
            first_at=tick,
            count=1,
            run_id=run_id,
            lateness=max(0.0, now - tick),
            actor=self._actor(schedule),
            at=now,
        )
        next_tick = schedule.cron.next_after(tick)

        def claim(uow: UnitOfWork) -> None:
            if not uow.schedules.advance(schedule.name, last, tick, next_tick):
                raise _TickTaken
            uow.schedules.add_ticks([*skipped, record])

        try:
            got = self._start(
                schedule,
                schedule.key(tick),
                run_id,
                claim,
                tick=_iso(tick),
                lateness=record.lateness,
            )
        except _TickTaken:
            return None
        if got == run_id:
            return record
        # The key had started a run already, so its claim committed with it, unless the
        # schedule's row was lost since (restored, recreated): then the tick is done and
        # only the claim is missing.
        with self.store.transaction() as uow:
            if not uow.schedules.advance(schedule.name, last, tick, next_tick):
                return None
            settled = replace(record, run_id=got)
            uow.schedules.add_ticks([*skipped, settled])
        return settled

    def _start(
        self,
        schedule: Schedule,
        key: str,
        run_id: str,
        also: Callable[[UnitOfWork], object],
        **data: Any,
    ) -> str:
        """Enqueue the schedule's run; the id of the run its key names."""
        runtime = self.runtime
        opts = StartOptions(
            queue=schedule.queue,
            idempotency_key=key,
            run_id=run_id,
            tenant=schedule.tenant,
            actor=self._actor(schedule),
        )
        workflow = runtime.workflow_named(schedule.workflow)
        handle = runtime.enqueue(
            workflow,
            schedule.args,
            dict(schedule.kwargs),
            opts,
            also=lambda uow, _run_id: also(uow),
            schedule=schedule.name,
            **data,
        )
        return handle.run_id

    # -- operating ----------------------------------------------------------------------------

    def list(self, tenant: str | None = None) -> list[ScheduleView]:
        """The stored schedules (of ``tenant``, if given), declared here or not."""
        self.sync()
        with self.store.reading() as uow:
            states = uow.schedules.all(tenant)
        return [ScheduleView(s, s.name in self.declared) for s in states]

    def get(self, name: str, tenant: str | None = None) -> ScheduleView:
        """The schedule ``name`` (:class:`ScheduleNotFoundError` if none, or if it is
        another tenant's)."""
        self.sync()
        with self.store.reading() as uow:
            state = uow.schedules.get(name)
        if state is None or (tenant is not None and state.tenant != tenant):
            raise ScheduleNotFoundError(f"no schedule named {name[:100]!r}")
        return ScheduleView(state, state.name in self.declared)

    def ticks(
        self, name: str, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> builtins.list[TickRecord]:
        """``name``'s tick records, newest first."""
        self.get(name, tenant)
        with self.store.reading() as uow:
            return uow.schedules.ticks(name, status=status, limit=limit)

    def pause(
        self, name: str, *, actor: str, tenant: str | None = None, now: float | None = None
    ) -> ScheduleView:
        """Pause ``name``: no tick starts a run until it is resumed (audited)."""
        return self._set_paused(name, True, actor, tenant, now)

    def resume(
        self, name: str, *, actor: str, tenant: str | None = None, now: float | None = None
    ) -> ScheduleView:
        """Resume ``name``; ticks count from now, those of the pause are not caught up."""
        return self._set_paused(name, False, actor, tenant, now)

    def _set_paused(
        self, name: str, paused: bool, actor: str, tenant: str | None, now: float | None
    ) -> ScheduleView:
        view = self.get(name, tenant)
        moment = time.time() if now is None else now
        cron = Cron.parse(view.state.cron, view.state.timezone)
        with self.store.transaction() as uow:
            changed = uow.schedules.set_paused(
                name,
                paused,
                now=moment,
                actor=actor,
                last_tick=None if paused else moment,
                next_tick=None if paused else cron.next_after(moment),
            )
            if changed:
                self._audit().append(
                    AuditEvent(
                        action="schedule.paused" if paused else "schedule.resumed",
                        actor=actor,
                        tenant=view.state.tenant,
                        subject=f"schedule:{name}",
                        data={"schedule": name, "workflow": view.state.workflow},
                    ),
                    uow=uow,
                )
        return self.get(name, tenant)

    def trigger(
        self, name: str, *, actor: str, tenant: str | None = None, now: float | None = None
    ) -> TickRecord:
        """Start a run of ``name`` now, outside its cron (audited ``schedule.triggered``;
        the run's start is audited too). Paused or not; its ticks are left as they were."""
        view = self.get(name, tenant)
        schedule = self.declared.get(name)
        if schedule is None:
            raise ScheduleNotFoundError(
                f"schedule {name[:100]!r} is stored but not declared by this app "
                "(pass the app that declares it, e.g. --app module:app)"
            )
        moment = time.time() if now is None else now
        run_id = uuid.uuid4().hex
        record = TickRecord(
            schedule=name,
            tenant=schedule.tenant,
            status=TICK_TRIGGERED,
            tick_at=moment,
            first_at=moment,
            count=1,
            run_id=run_id,
            lateness=None,
            actor=actor,
            at=moment,
        )
        audit = self._audit()

        def record_it(uow: UnitOfWork) -> None:
            uow.schedules.add_ticks([record])
            audit.append(
                AuditEvent(
                    action="schedule.triggered",
                    actor=actor,
                    tenant=view.state.tenant,
                    subject=f"schedule:{name}",
                    run_id=run_id,
                    data={"schedule": name, "workflow": schedule.workflow},
                ),
                uow=uow,
            )

        self._start(schedule, f"schedule:{name}:trigger:{run_id}", run_id, record_it)
        return record


def _definition(state: ScheduleState) -> tuple[Any, ...]:
    return (
        state.tenant,
        state.workflow,
        state.cron,
        state.timezone,
        state.catch_up,
        state.queue,
        state.next_tick,
    )
