"""``GET /v1/evolution/report``: the evolution report of the caller's tenant (see
:mod:`aevos.telemetry.report`). Needs ``models:read`` and
``tasks:read`` (it counts people's tasks); bounded: 1 to 200 buckets, a window
of at most 366 days, ``since`` before ``until``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from fastapi.routing import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ...telemetry.report import DEFAULT_BUCKETS, MAX_BUCKETS, EvolutionReport
from ..deps import AccessDep, PrincipalDep

router = APIRouter(tags=["evolution"])


class ReportBucketOut(BaseModel):
    """One bucket ``[start, end)``; rates are null when nothing was there to divide by."""

    start: float
    end: float
    cases: int = Field(description="Primary decisions of the model (primary or canary route).")
    automated: int = Field(description="Cases on whose call no review task was opened.")
    automation_rate: float | None = Field(description="automated / cases")
    reviews: int = Field(description="Review tasks opened on the bucket's cases.")
    qa: int = Field(description="QA tasks opened on them (random samples of automation).")
    reviews_per_100: float | None = Field(description="(reviews + qa) per 100 cases")
    precision: float | None = Field(
        description="Of the QA-sampled automated cases with a label, the share whose label "
        "equals the model's answer."
    )
    precision_low: float | None = Field(description="95% Wilson interval, lower bound.")
    precision_high: float | None
    precision_n: int = Field(description="QA-sampled automated cases with a label.")
    correct: int
    cost: float = Field(description="Summed cost of the model's calls, on every route.")
    cost_per_decision: float | None = Field(description="cost / cases")


class DriftPointOut(BaseModel):
    at: float
    value: float
    threshold: float
    alert: bool


class DriftSeriesOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    monitor: str
    points: list[DriftPointOut]


class MarkerOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    at: float
    kind: str = Field(description="The audit action: model.promoted, rollout.rolled_back ...")
    model: str | None
    version: int | None
    detail: str


class ReportTotalsOut(BaseModel):
    cases: int
    automated: int
    automation_rate: float | None
    reviews: int
    qa: int
    reviews_per_100: float | None
    precision: float | None
    precision_low: float | None
    precision_high: float | None
    precision_n: int
    correct: int
    cost: float
    cost_per_decision: float | None
    markers: int
    markers_truncated: bool = Field(description="More markers than a report carries (1,000).")


class EvolutionReportOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    tenant: str
    model: str | None = Field(description="The model reported on; null: every model.")
    since: float
    until: float
    bucket_seconds: float
    buckets: list[ReportBucketOut]
    drift: list[DriftSeriesOut]
    markers: list[MarkerOut]
    totals: ReportTotalsOut

    @classmethod
    def of(cls, report: EvolutionReport) -> EvolutionReportOut:
        return cls.model_validate(report.to_dict())


@router.get("/v1/evolution/report")
def evolution_report(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="A model name (default: every model)."),
    ] = None,
    since: Annotated[
        float | None,
        Query(ge=0, le=1e11, description="Epoch seconds (default: the first case or marker)."),
    ] = None,
    until: Annotated[
        float | None, Query(ge=0, le=1e11, description="Epoch seconds (default: now).")
    ] = None,
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = DEFAULT_BUCKETS,
) -> EvolutionReportOut:
    """Per time bucket: automation rate, realised precision of automated decisions (QA
    samples, Wilson interval), reviews per 100 cases and cost per decision; drift series;
    and the model's version changes, rollout transitions, retrainings and drift alerts."""
    report = access.metrics.evolution(principal, model, since=since, until=until, buckets=buckets)
    return EvolutionReportOut.of(report)
