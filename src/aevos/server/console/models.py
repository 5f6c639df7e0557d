"""Model pages: versions and their certified thresholds, aliases, rollout, live metrics, and
promotion approvals."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Form, Path, Request
from fastapi.responses import RedirectResponse, Response

from ...access import Access
from ...identity import Principal
from ...telemetry.metrics import ModelMetrics
from ..deps import AccessDep
from .page import (
    WINDOWS,
    CheckedViewerDep,
    ViewerDep,
    Window,
    render,
    router,
)
from .rollout_panel import rollout_panel as _rollout


@router.get("/models")
def models(request: Request, access: AccessDep, viewer: ViewerDep) -> Response:
    return render(request, "models.html", models=access.models.list(viewer.principal))


@router.get("/models/{name}")
def model(
    request: Request, name: str, access: AccessDep, viewer: ViewerDep, window: Window = "day"
) -> Response:
    overview = access.models.get(viewer.principal, name)
    route, breakers = access.models.rollout(viewer.principal, name)
    title, seconds, buckets, label_format = WINDOWS[window]
    width = seconds / buckets
    until = (time.time() // width + 1) * width
    live = access.metrics.model(
        viewer.principal, name, since=until - seconds, until=until, buckets=buckets
    )
    pointing: dict[int, list[str]] = {}
    for alias in overview.aliases:
        pointing.setdefault(alias.version, []).append(alias.alias)
    me = viewer.principal
    approvals = access.approvals.list(me, model=name, limit=20)
    return render(
        request,
        "model.html",
        model=overview,
        approvals=approvals,
        can_decide=viewer.can("models:promote"),
        # Four eyes: Access refuses the requester's own approval; the page offers them only
        # the withdrawal.
        asked_by_viewer={
            a.approval_id
            for a in approvals
            if me.token_id == a.requester_token or me.name == a.requester_name
        },
        versions=list(reversed(overview.versions)),
        certifications=access.certifications.by_version(me, name),
        retraining=_retraining(access, me, name),
        monitors=_monitors(access, me, name),
        can_retrain=viewer.can("models:write"),
        rollout=_rollout(access, me, name),
        can_steer=viewer.can("models:promote"),
        pointing=pointing,
        route=route,
        breakers=breakers,
        window=window,
        windows=[(key, spec[0]) for key, spec in WINDOWS.items()],
        window_title=title,
        live=_model_series(live, label_format),
    )


def _retraining(access: Access, principal: Principal, name: str) -> dict[str, Any] | None:
    """The model's retraining configuration and latest retrainings; None when it has no
    configuration (the page then says how to set one)."""
    from ...errors import RetrainingNotConfiguredError

    try:
        config = access.retraining.config(principal, name)
    except RetrainingNotConfiguredError:
        return None
    return {"config": config, "runs": access.retraining.runs(principal, name, limit=10)}


def _monitors(access: Access, principal: Principal, name: str) -> dict[str, Any] | None:
    """The model's open alerts and the latest result of each monitor; None when it is not
    monitored."""
    from ...errors import MonitorNotConfiguredError

    try:
        config = access.monitors.config(principal, name)
    except MonitorNotConfiguredError:
        return None
    latest: dict[str, Any] = {}
    for result in access.monitors.results(principal, name, limit=60):
        latest.setdefault(result.monitor, result)
    alerts = access.monitors.alerts(principal, model=name, status="open", limit=20)
    return {"config": config, "latest": list(latest.values()), "alerts": alerts}


@router.post("/models/{name}/retrain")
def retrain(name: str, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    """The model page's "Retrain now" button: enqueue a retraining (a worker trains it)."""
    access.retraining.start(viewer.principal, name)
    return RedirectResponse(f"/console/models/{quote(name)}#retraining", 303)


ReasonForm = Annotated[str, Form(max_length=2000)]


@router.post("/rollouts/{rollout_id}/{action}")
def steer_rollout(
    rollout_id: Annotated[str, Path(min_length=1, max_length=200)],
    action: Literal["pause", "resume", "abort", "promote"],
    access: AccessDep,
    viewer: CheckedViewerDep,
    reason: ReasonForm = "",
) -> Response:
    """The rollout panel's buttons (plain forms, or htmx swapping the panel in place)."""
    rollout = access.rollouts.act(viewer.principal, rollout_id, action, reason=reason)
    return RedirectResponse(f"/console/models/{quote(rollout.model)}#rollout", 303)


@router.post("/approvals/{approval_id}/approve")
def approve(
    approval_id: str, access: AccessDep, viewer: CheckedViewerDep, reason: ReasonForm = ""
) -> Response:
    approval, _ = access.approvals.approve(viewer.principal, approval_id, reason=reason or None)
    return RedirectResponse(f"/console/models/{quote(approval.model)}#approvals", 303)


@router.post("/approvals/{approval_id}/reject")
def reject(
    approval_id: str, access: AccessDep, viewer: CheckedViewerDep, reason: ReasonForm = ""
) -> Response:
    approval = access.approvals.reject(viewer.principal, approval_id, reason=reason or None)
    return RedirectResponse(f"/console/models/{quote(approval.model)}#approvals", 303)


def _model_series(live: ModelMetrics, label_format: str) -> dict[str, Any]:
    """Per version, one list per chart (null: no data in that bucket), for console.js."""
    versions = live.versions
    return {
        "labels": [datetime.fromtimestamp(t, tz=UTC).strftime(label_format) for t in live.starts],
        "versions": sorted(versions),
        "calls": {ref: [b.calls for b in series] for ref, series in versions.items()},
        "p95": {ref: [b.latency_p95_ms for b in series] for ref, series in versions.items()},
        "errors": {ref: [b.error_rate for b in series] for ref, series in versions.items()},
        "confidence": {
            ref: [b.mean_confidence for b in series] for ref, series in versions.items()
        },
        "overrides": {ref: [b.override_rate for b in series] for ref, series in versions.items()},
        "totals": {
            ref: {
                "calls": sum(b.calls for b in series),
                "errors": sum(b.errors for b in series),
                "decisions": sum(b.decisions for b in series),
                "overrides": sum(b.overrides for b in series),
            }
            for ref, series in versions.items()
        },
    }
