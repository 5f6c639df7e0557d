"""The operator's dashboard: throughput, latency, automation, overrides, cost, drift."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ...telemetry.metrics import Dashboard
from ..deps import AccessDep
from .page import (
    WINDOWS,
    ViewerDep,
    Window,
    render,
    router,
)


def _series(board: Dashboard, label_format: str) -> dict[str, Any]:
    """What console.js draws, one list per line, one value per bucket (null: no data)."""
    buckets = board.buckets
    models = sorted({model for b in buckets for model in b.drift})
    return {
        "labels": [datetime.fromtimestamp(b.start, tz=UTC).strftime(label_format) for b in buckets],
        "automated": [b.automated for b in buckets],
        "asked": [b.throughput - b.automated for b in buckets],
        "p50": [b.latency_p50 for b in buckets],
        "p95": [b.latency_p95 for b in buckets],
        "p99": [b.latency_p99 for b in buckets],
        "automation_rate": [b.automation_rate for b in buckets],
        "override_rate": [b.override_rate for b in buckets],
        "feedback": [b.feedback for b in buckets],
        "cost_per_decision": [b.cost_per_decision for b in buckets],
        "drift": {model: [b.drift.get(model) for b in buckets] for model in models},
    }


def _totals(board: Dashboard) -> dict[str, Any]:
    """The whole window's figures, for the tiles above the charts."""
    buckets = board.buckets
    finished = sum(b.throughput for b in buckets)
    decisions = sum(b.feedback for b in buckets)
    latest: dict[str, float] = {}
    for b in buckets:
        latest.update({model: psi for model, psi in b.drift.items() if psi is not None})
    worst = max(latest.items(), key=lambda item: item[1], default=None)
    return {
        "finished": finished,
        "automation_rate": sum(b.automated for b in buckets) / finished if finished else None,
        "decisions": decisions,
        "override_rate": sum(b.overrides for b in buckets) / decisions if decisions else None,
        "cost_per_decision": sum(b.cost for b in buckets) / finished if finished else None,
        "model_calls": sum(b.model_calls for b in buckets),
        "drift": worst,
    }


@router.get("/dashboard")
def dashboard(
    request: Request, access: AccessDep, viewer: ViewerDep, window: Window = "day"
) -> Response:
    title, seconds, buckets, label_format = WINDOWS[window]
    width = seconds / buckets
    # Buckets on round boundaries, so the same minute always falls in the same bucket.
    until = (time.time() // width + 1) * width
    board = access.metrics.dashboard(
        viewer.principal, since=until - seconds, until=until, buckets=buckets
    )
    return render(
        request,
        "dashboard.html",
        window=window,
        windows=[(name, spec[0]) for name, spec in WINDOWS.items()],
        title=title,
        width=width,
        series=_series(board, label_format),
        totals=_totals(board),
    )
