"""``/v1/schedules``: workflows started on cron expressions (declared in code).

``GET /v1/schedules`` lists the tenant's schedules with their state, ``GET
/v1/schedules/{name}`` shows one with its latest ticks (``runs:read``).
``POST /v1/schedules/{name}/pause`` and ``/resume`` (``runs:control``) stop and restart its
ticks; ``POST /v1/schedules/{name}/trigger`` (``runs:start``) starts a run now, outside its
cron. Another tenant's schedule is 403, an unknown one 404; each refusal is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ..deps import AccessDep, PrincipalDep

if TYPE_CHECKING:
    from ...records.schedule import TickRecord
    from ...schedules import ScheduleView

router = APIRouter(tags=["schedules"])

ScheduleName = Annotated[
    str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


class ScheduleOut(BaseModel):
    name: str
    tenant: str
    workflow: str
    cron: str
    timezone: str = Field(description="The IANA time zone the expression is read in.")
    catch_up: int = Field(description="How many missed ticks start when several are due.")
    queue: str | None
    paused: bool
    last_tick: float = Field(description="Ticks after this instant (epoch seconds) are due.")
    next_tick: float | None
    declared: bool = Field(description="Whether this server's app declares it.")
    updated_at: float
    updated_by: str

    @classmethod
    def of(cls, view: ScheduleView) -> ScheduleOut:
        return cls.model_validate(view.to_json())


class TickOut(BaseModel):
    schedule: str
    status: str = Field(description="started, skipped or triggered.")
    tick_at: float
    first_at: float = Field(description="For skipped ticks: the oldest of the range.")
    count: int
    run_id: str | None
    lateness: float | None = Field(description="Seconds from the tick to its run's start.")
    actor: str
    at: float

    @classmethod
    def of(cls, record: TickRecord) -> TickOut:
        return cls.model_validate(record.to_json())


class ScheduleDetail(ScheduleOut):
    ticks: list[TickOut] = Field(description="Its newest tick records, newest first.")


@router.get("/v1/schedules")
def list_schedules(access: AccessDep, principal: PrincipalDep) -> list[ScheduleOut]:
    """The tenant's schedules."""
    return [ScheduleOut.of(v) for v in access.schedules.list(principal)]


@router.get("/v1/schedules/{name}")
def get_schedule(
    name: ScheduleName,
    access: AccessDep,
    principal: PrincipalDep,
    ticks: Annotated[int, Query(ge=0, le=500, description="How many tick records.")] = 20,
) -> ScheduleDetail:
    """One schedule of the tenant's, with its newest tick records."""
    view = access.schedules.get(principal, name)
    records = access.schedules.ticks(principal, name, ticks) if ticks else []
    return ScheduleDetail(
        **ScheduleOut.of(view).model_dump(), ticks=[TickOut.of(r) for r in records]
    )


@router.post("/v1/schedules/{name}/pause")
def pause_schedule(name: ScheduleName, access: AccessDep, principal: PrincipalDep) -> ScheduleOut:
    """Pause the schedule: its ticks start nothing until it is resumed."""
    return ScheduleOut.of(access.schedules.pause(principal, name))


@router.post("/v1/schedules/{name}/resume")
def resume_schedule(name: ScheduleName, access: AccessDep, principal: PrincipalDep) -> ScheduleOut:
    """Resume the schedule; ticks count from now (those of the pause are not caught up)."""
    return ScheduleOut.of(access.schedules.resume(principal, name))


@router.post("/v1/schedules/{name}/trigger", status_code=201)
def trigger_schedule(name: ScheduleName, access: AccessDep, principal: PrincipalDep) -> TickOut:
    """Start a run of the schedule now, outside its cron (its ticks are left as they were)."""
    return TickOut.of(access.schedules.trigger(principal, name))
