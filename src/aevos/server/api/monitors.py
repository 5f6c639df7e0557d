"""``/v1/models/{name}/monitor`` and ``/v1/alerts``: a model's monitors and their alerts.

``GET .../monitor`` shows the configuration in force, the latest result of each monitor and
the open alerts (``models:read``); ``PUT .../monitor`` sets a new configuration version and
``POST .../monitor/check`` asks the workers to check the model now (``models:write``;
202: the check is made due and the next worker sweep computes it, never the server). ``GET /v1/alerts`` lists
the tenant's alerts; ``POST /v1/alerts/{id}/ack`` acknowledges (or dismisses) one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ...records.monitors import Alert, MonitorConfig, MonitorResult
from ..deps import AccessDep, PrincipalDep
from .models import NameParam

router = APIRouter(tags=["monitors"])

AlertIdParam = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


class OnAlert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retrain: bool = Field(
        default=False, description="An alert starts a retraining (trigger drift)."
    )
    task: bool = Field(default=False, description="An alert asks an operator (queue operators).")


class MonitorIn(BaseModel):
    """How the model is monitored."""

    model_config = ConfigDict(extra="forbid")

    window_cases: int | None = Field(default=500, ge=10, le=20_000)
    window_seconds: float | None = Field(default=None, ge=60, le=366 * 86400)
    reference_cases: int = Field(default=500, ge=10, le=20_000)
    reference: tuple[float, float] | None = Field(
        None, description="A fixed reference time range [since, until] in epoch seconds."
    )
    thresholds: dict[Annotated[str, Field(max_length=40)], float] = Field(
        default_factory=dict, max_length=20
    )
    on_alert: OnAlert = Field(default_factory=lambda: OnAlert(retrain=False, task=False))
    interval: float = Field(
        default=300.0, ge=1, le=7 * 86400, description="Seconds between checks."
    )


class MonitorConfigOut(BaseModel):
    version: int
    window_cases: int | None
    window_seconds: float | None
    reference_cases: int
    reference_since: float | None
    reference_until: float | None
    thresholds: dict[str, float]
    on_alert: dict[str, bool]
    interval: float
    updated_by: str
    updated_at: float

    @classmethod
    def of(cls, config: MonitorConfig) -> MonitorConfigOut:
        data = config.to_json()
        for key in ("tenant", "model"):
            data.pop(key)
        return cls(**data)


class ResultOut(BaseModel):
    """One monitor's figure at one check."""

    monitor: str
    version: int | None
    status: str = Field(description="ok, alert or no_data.")
    value: float | None
    threshold: float | None
    p_value: float | None
    alert: bool
    n: int
    window: list[float | None]
    figures: dict[str, Any]
    at: float

    @classmethod
    def of(cls, result: MonitorResult) -> ResultOut:
        data = result.to_json()
        for key in ("tenant", "model"):
            data.pop(key)
        return cls(**data)


class AlertOut(BaseModel):
    alert_id: str
    model: str
    version: int | None
    monitor: str
    status: str = Field(description="open, acknowledged or resolved.")
    figures: dict[str, Any] = Field(description="The figures that raised it.")
    window: list[float | None]
    actions: dict[str, Any] = Field(description="What on_alert did (retraining, task).")
    opened_at: float
    closed_at: float | None
    closed_by: str | None
    reason: str | None

    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        data = alert.to_json()
        data.pop("tenant")
        return cls(**data)


class MonitorOverview(BaseModel):
    config: MonitorConfigOut
    latest: list[ResultOut] = Field(description="The latest result of each monitor.")
    open_alerts: list[AlertOut]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=1000)
    dismiss: bool = Field(default=False, description="Resolve it as a false alarm.")


@router.get("/v1/models/{name}/monitor")
def get_monitor(name: NameParam, access: AccessDep, principal: PrincipalDep) -> MonitorOverview:
    """The model's monitor configuration, latest results and open alerts."""
    config = access.monitors.config(principal, name)
    latest: dict[str, MonitorResult] = {}
    for result in access.monitors.results(principal, name, limit=60):
        latest.setdefault(result.monitor, result)
    alerts = access.monitors.alerts(principal, model=name, status="open")
    return MonitorOverview(
        config=MonitorConfigOut.of(config),
        latest=[ResultOut.of(r) for r in latest.values()],
        open_alerts=[AlertOut.of(a) for a in alerts],
    )


@router.put("/v1/models/{name}/monitor")
def put_monitor(
    name: NameParam, body: MonitorIn, access: AccessDep, principal: PrincipalDep
) -> MonitorConfigOut:
    """Set how the model is monitored: a new configuration version."""
    settings = body.model_dump()
    settings["on_alert"] = body.on_alert.model_dump()
    return MonitorConfigOut.of(access.monitors.configure(principal, name, settings))


class CheckScheduledOut(BaseModel):
    """A check made due: the next worker sweep computes it."""

    model: str
    config_version: int = Field(description="The configuration the check will use.")
    due_at: float = Field(description="When the check became due (epoch seconds).")
    last_checked_at: float | None = Field(description="The previous check, if any.")
    interval: float = Field(description="Seconds between the workers' checks.")
    requested_by: str


@router.post("/v1/models/{name}/monitor/check", status_code=202)
def check_monitor(name: NameParam, access: AccessDep, principal: PrincipalDep) -> CheckScheduledOut:
    """Ask the workers to check the model now: the check is made due and the next worker
    sweep computes it (results and alerts appear in ``GET .../monitor``)."""
    return CheckScheduledOut(**access.monitors.check(principal, name))


@router.get("/v1/alerts")
def list_alerts(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertOut]:
    """The tenant's alerts, newest first."""
    found = access.monitors.alerts(principal, model=model, status=status, limit=limit)
    return [AlertOut.of(a) for a in found]


@router.post("/v1/alerts/{alert_id}/ack")
def ack_alert(
    alert_id: AlertIdParam, access: AccessDep, principal: PrincipalDep, body: AckIn | None = None
) -> AlertOut:
    """Acknowledge (or dismiss) an open alert; an alert already closed is returned as is."""
    given = body or AckIn(reason="", dismiss=False)
    alert = access.monitors.acknowledge(
        principal, alert_id, reason=given.reason, dismiss=given.dismiss
    )
    return AlertOut.of(alert)
