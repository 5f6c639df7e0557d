"""Metrics of the caller's tenant: ``GET /metrics`` for Prometheus, and
``GET /v1/metrics/dashboard`` for the console's time series (see :mod:`aevos.telemetry.metrics`).

Both are computed from the database per request, so every serving process answers the
same; both need ``runs:read`` (a ``service`` token suits a Prometheus scraper).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from ...telemetry.metrics import MAX_BUCKETS, Dashboard, ModelMetrics
from ..deps import AccessDep, PrincipalDep

router = APIRouter(tags=["metrics"])

_DAY = 86_400.0
_EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"  # prometheus_client's latest


class DashboardBucketOut(BaseModel):
    """One bucket ``[start, end)``; rates are null when nothing was there to divide by."""

    start: float
    end: float
    throughput: int = Field(description="Runs finished (succeeded, failed or cancelled).")
    latency_p50: float | None = Field(description="Seconds from creation to finish.")
    latency_p95: float | None
    latency_p99: float | None
    automated: int = Field(description="Finished runs that asked no person.")
    automation_rate: float | None = Field(description="automated / throughput")
    feedback: int = Field(description="Human decisions on model suggestions.")
    overrides: int = Field(description="Of which changed the suggestion.")
    override_rate: float | None = Field(description="overrides / feedback")
    model_calls: int
    cost: float = Field(description="Summed cost of the model calls.")
    cost_per_decision: float | None = Field(description="cost / throughput")
    drift: dict[str, float | None] = Field(
        description="Per model: population stability index of its confidence against its "
        "reference bucket (null without calls here)."
    )


class DashboardOut(BaseModel):
    tenant: str
    since: float
    until: float
    bucket_seconds: float
    buckets: list[DashboardBucketOut]
    drift_reference: dict[str, int] = Field(
        description="Per model, the bucket its drift is measured against: the first with "
        "calls of it."
    )

    @classmethod
    def of(cls, board: Dashboard) -> DashboardOut:
        return cls(
            tenant=board.tenant,
            since=board.since,
            until=board.until,
            bucket_seconds=board.bucket_seconds,
            buckets=[
                DashboardBucketOut(
                    start=b.start,
                    end=b.end,
                    throughput=b.throughput,
                    latency_p50=b.latency_p50,
                    latency_p95=b.latency_p95,
                    latency_p99=b.latency_p99,
                    automated=b.automated,
                    automation_rate=b.automation_rate,
                    feedback=b.feedback,
                    overrides=b.overrides,
                    override_rate=b.override_rate,
                    model_calls=b.model_calls,
                    cost=b.cost,
                    cost_per_decision=b.cost_per_decision,
                    drift=dict(b.drift),
                )
                for b in board.buckets
            ],
            drift_reference=dict(board.drift_reference),
        )


class VersionBucketOut(BaseModel):
    calls: int
    errors: int = Field(description="Calls whose outcome was not ok.")
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    mean_confidence: float | None
    decisions: int = Field(description="Human decisions on this version's suggestions.")
    overrides: int
    override_rate: float | None


class ModelMetricsOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    since: float
    until: float
    bucket_seconds: float
    starts: list[float]
    versions: dict[str, list[VersionBucketOut]] = Field(
        description='Per version ("name@N"), one entry per bucket.'
    )

    @classmethod
    def of(cls, metrics: ModelMetrics) -> ModelMetricsOut:
        return cls(
            model=metrics.model,
            since=metrics.since,
            until=metrics.until,
            bucket_seconds=metrics.bucket_seconds,
            starts=list(metrics.starts),
            versions={
                ref: [VersionBucketOut(**vars(b)) for b in series]
                for ref, series in metrics.versions.items()
            },
        )


def _window(since: float | None, until: float | None) -> tuple[float, float]:
    end = time.time() if until is None else until
    start = end - _DAY if since is None else since
    if start >= end:
        raise RequestValidationError(
            [{"loc": ("query", "since"), "msg": "must be before until", "type": "value_error"}]
        )
    return start, end


_Since = Annotated[
    float | None, Query(ge=0, le=1e11, description="Epoch seconds (default: a day before until).")
]
_Until = Annotated[float | None, Query(ge=0, le=1e11, description="Epoch seconds (default: now).")]


@router.get("/v1/models/{name}/metrics", tags=["models"])
def model_metrics(
    name: Annotated[str, Path(max_length=200)],
    access: AccessDep,
    principal: PrincipalDep,
    since: _Since = None,
    until: _Until = None,
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 24,
) -> ModelMetricsOut:
    """Per version and time bucket: calls, errors, latency, mean confidence and the human
    override rate of its suggestions (how a canary compares with its champion)."""
    start, end = _window(since, until)
    metrics = access.metrics.model(principal, name, since=start, until=end, buckets=buckets)
    return ModelMetricsOut.of(metrics)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {_EXPOSITION: {}}, "description": "Prometheus text format"}},
)
def prometheus(access: AccessDep, principal: PrincipalDep) -> Response:
    """The tenant's metrics in the Prometheus text format: runs by workflow and status, run
    durations, open human tasks by queue, feedback decisions and overrides, model calls;
    for administrators also the database's health (``aevos_storage_*``, as ``aevos doctor``)."""
    return Response(access.metrics.exposition(principal), media_type=_EXPOSITION)


@router.get("/v1/metrics/dashboard")
def dashboard(
    access: AccessDep,
    principal: PrincipalDep,
    since: _Since = None,
    until: _Until = None,
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 24,
) -> DashboardOut:
    """Per time bucket: throughput, latency percentiles, automation and override rates,
    cost per decision, and each model's confidence drift."""
    start, end = _window(since, until)
    return DashboardOut.of(
        access.metrics.dashboard(principal, since=start, until=end, buckets=buckets)
    )
