"""The evolution page: a model's automation rate, realised precision, reviews per 100 cases,
cost per decision and drift over time, with its version changes, rollouts, retrainings and
drift alerts marked on the same time axis (:mod:`aevos.telemetry.report`)."""

from __future__ import annotations

import time
from bisect import bisect_right
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import Response

from ...telemetry.report import EvolutionReport
from ..deps import AccessDep
from .page import ViewerDep, render, router

# name -> (title, seconds (None: from the first case or marker), buckets, label format)
SPANS: dict[str, tuple[str, float | None, int, str]] = {
    "all": ("Everything", None, 30, ""),  # labels as fine as its buckets are
    "hour": ("Last hour", 3600.0, 30, "%H:%M"),
    "day": ("Last day", 86400.0, 48, "%H:%M"),
    "week": ("Last week", 7 * 86400.0, 56, "%a %H:%M"),
}
Span = Literal["all", "hour", "day", "week"]


def _drift(report: EvolutionReport) -> dict[str, list[float | None]]:
    """Each drift series as one value per bucket: its latest result in the bucket."""
    starts = [b.start for b in report.buckets]
    out: dict[str, list[float | None]] = {}
    for series in report.drift:
        values: list[float | None] = [None] * len(starts)
        for point in series.points:
            if report.since <= point.at < report.until:
                values[bisect_right(starts, point.at) - 1] = point.value
        out[f"{series.model} {series.monitor}"] = values
    return out


def _series(report: EvolutionReport, label_format: str) -> dict[str, Any]:
    """What evolution.js draws: one value per bucket (null: no data) and the markers, each
    at its position on the buckets' axis (0 = the first bucket's point)."""
    b = report.buckets
    width = report.bucket_seconds
    if not label_format:
        label_format = "%H:%M:%S" if width < 60 else "%m-%d %H:%M" if width < 86_400 else "%Y-%m-%d"
    return {
        "since": report.since,
        "until": report.until,
        "labels": [datetime.fromtimestamp(x.start, tz=UTC).strftime(label_format) for x in b],
        "cases": [x.cases for x in b],
        "automation_rate": [x.automation_rate for x in b],
        "precision": [x.precision for x in b],
        "precision_low": [x.precision_low for x in b],
        "precision_high": [x.precision_high for x in b],
        "precision_n": [x.precision_n for x in b],
        "reviews_per_100": [x.reviews_per_100 for x in b],
        "cost_per_decision": [x.cost_per_decision for x in b],
        "drift": _drift(report),
        "thresholds": {
            f"{s.model} {s.monitor}": s.points[-1].threshold for s in report.drift if s.points
        },
        "markers": [
            {
                "position": (m.at - report.since) / width - 0.5,
                "kind": m.kind,
                "label": _short(m.kind, m.version),
                "detail": m.detail,
            }
            for m in report.markers
        ],
    }


def _short(kind: str, version: int | None) -> str:
    """A marker's label on a chart: "v2 promoted", "v3 rollout rolled back", "v1 champion"."""
    area, _, what = kind.partition(".")
    words = what.replace("_", " ")
    if kind == "model.alias_moved":
        words = "champion"
    elif area == "monitor":
        words = "drift alert"
    elif area in ("rollout", "retraining"):
        words = f"{area} {words}"
    return f"v{version} {words}" if version is not None else words


@router.get("/evolution")
def evolution(
    request: Request,
    access: AccessDep,
    viewer: ViewerDep,
    model: Annotated[str | None, Query(max_length=200)] = None,
    span: Span = "all",
) -> Response:
    me = viewer.principal
    models = [m.name for m in access.models.list(me)]
    chosen = model or None
    title, seconds, buckets, label_format = SPANS[span]
    since = until = None
    if seconds is not None:
        width = seconds / buckets
        # Buckets on round boundaries, so the same minute always falls in the same bucket.
        until = (time.time() // width + 1) * width
        since = until - seconds
    report = access.metrics.evolution(me, chosen, since=since, until=until, buckets=buckets)
    return render(
        request,
        "evolution.html",
        models=models,
        model=chosen,
        span=span,
        spans=[(name, spec[0]) for name, spec in SPANS.items()],
        title=title,
        report=report,
        totals=report.totals,
        series=_series(report, label_format),
    )
