"""The evolution report: how a model's automation changed over time, and why.

Per equal time bucket of ``[since, until)``, of one model (or of every model of the tenant
when none is named):

- **cases**: the model's primary decisions, ``model.called`` records on the ``primary`` or
  ``canary`` route, one per ``call_id`` (a shadow decides nothing; a cascade's later stage
  or a fallback answers a case its first stage already counted). A case belongs to the
  bucket its call was recorded in.
- **automated** / **automation_rate**: the cases on whose call no review task
  (``tasks.purpose = "review"``, linked by ``call_id``) was opened, and their share of the
  cases. A QA sample is not a review: the run did not wait for it.
- **reviews** (review tasks), **qa** (QA tasks) and **reviews_per_100**: review and QA
  tasks opened on the bucket's cases, per 100 cases: the people's work automation leaves.
- **precision**: the realised precision of automation, measured where it is unbiased: of
  the automated cases a QA task sampled at random and that have a label now (the case's
  effective label, :func:`aevos.records.label.effective`: ground truth outranks the QA
  answer), the share whose label equals the model's answer; with ``precision_n`` and a
  95% Wilson interval (``precision_low``, ``precision_high``).
- **cost_per_decision**: the summed cost of every call of the model recorded in the
  bucket, on any route (shadows and cascades cost too), divided by the cases.

Rates are None where their denominator is zero. Beside the buckets:

- **drift**: series of monitor results per model (:class:`DriftSeries`), read by
  :func:`drift_series` — the one place the monitors' results are plugged in;
- **markers**, oldest first: every move of the ``champion`` alias (``model.promoted``,
  ``model.rolled_back``, ``model.alias_moved``), every ``rollout.*`` transition, every
  retraining's outcome (``retraining.succeeded`` / ``retraining.failed``; not
  ``retraining.configured`` nor a refused request, ``retraining.rejected``) and every drift
  alert (``monitor.alerted``), each with the version it concerns.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ModelNotFoundError, ReportInputError
from ..records.label import effective, same_label

if TYPE_CHECKING:
    from ..storage import Store, UnitOfWork

__all__ = [
    "DEFAULT_BUCKETS",
    "MAX_BUCKETS",
    "MAX_MARKERS",
    "MAX_RANGE_SECONDS",
    "DriftPoint",
    "DriftSeries",
    "EvolutionReport",
    "Marker",
    "ReportBucket",
    "Reports",
    "check_window",
    "drift_series",
    "evolution_report",
    "series_of",
    "wilson",
]

DEFAULT_BUCKETS = 20
MAX_BUCKETS = 200
#: The longest window one report covers: a year, and a leap day.
MAX_RANGE_SECONDS = 366 * 86_400.0
#: The most markers one report carries (the oldest first); ``totals.markers_truncated`` says so.
MAX_MARKERS = 1000
#: The default window, when the model has had no case in the last MAX_RANGE_SECONDS.
_DEFAULT_SPAN = 86_400.0
_MAX_DETAIL = 200
_MAX_MODEL = 200
_EPOCH_MAX = 1e11


@dataclass(frozen=True)
class ReportBucket:
    """One time bucket ``[start, end)`` of the report (see the module for the figures)."""

    start: float
    end: float
    cases: int
    automated: int
    automation_rate: float | None
    reviews: int  # review tasks opened on the bucket's cases
    qa: int  # QA tasks opened on them
    reviews_per_100: float | None  # (reviews + qa) per 100 cases
    precision_n: int  # QA-sampled automated cases with a label
    correct: int  # of which the label equals the model's answer
    precision: float | None
    precision_low: float | None
    precision_high: float | None
    cost: float
    cost_per_decision: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "cases": self.cases,
            "automated": self.automated,
            "automation_rate": self.automation_rate,
            "reviews": self.reviews,
            "reviews_per_100": self.reviews_per_100,
            "qa": self.qa,
            "precision": self.precision,
            "precision_low": self.precision_low,
            "precision_high": self.precision_high,
            "precision_n": self.precision_n,
            "correct": self.correct,
            "cost": self.cost,
            "cost_per_decision": self.cost_per_decision,
        }


@dataclass(frozen=True)
class DriftPoint:
    at: float
    value: float
    threshold: float
    alert: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "value": self.value,
            "threshold": self.threshold,
            "alert": self.alert,
        }


@dataclass(frozen=True)
class DriftSeries:
    """One monitor's results over the window, for one model."""

    model: str
    monitor: str
    points: tuple[DriftPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "monitor": self.monitor,
            "points": [p.to_dict() for p in self.points],
        }


@dataclass(frozen=True)
class Marker:
    """An event on the report's time axis. ``kind`` is the audit action that records it
    (``model.promoted``, ``rollout.rolled_back``, ``retraining.succeeded``,
    ``monitor.alerted`` ...); ``version`` the model version it concerns (for a retraining,
    its candidate), None when it has none."""

    at: float
    kind: str
    model: str | None
    version: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class EvolutionReport:
    """The evolution of ``model`` (None: every model of the tenant) over ``[since, until)``."""

    tenant: str
    model: str | None
    since: float
    until: float
    bucket_seconds: float
    buckets: tuple[ReportBucket, ...]
    drift: tuple[DriftSeries, ...]
    markers: tuple[Marker, ...]
    markers_truncated: bool

    @property
    def totals(self) -> dict[str, Any]:
        """The whole window's figures, computed like a bucket's."""
        b = self.buckets
        cases = sum(x.cases for x in b)
        automated = sum(x.automated for x in b)
        reviews, qa = sum(x.reviews for x in b), sum(x.qa for x in b)
        n, correct = sum(x.precision_n for x in b), sum(x.correct for x in b)
        cost = sum(x.cost for x in b)
        low, high = wilson(correct, n)
        return {
            "cases": cases,
            "automated": automated,
            "automation_rate": _ratio(automated, cases),
            "reviews": reviews,
            "qa": qa,
            "reviews_per_100": None if not cases else 100.0 * (reviews + qa) / cases,
            "precision": _ratio(correct, n),
            "precision_low": low,
            "precision_high": high,
            "precision_n": n,
            "correct": correct,
            "cost": cost,
            "cost_per_decision": _ratio(cost, cases),
            "markers": len(self.markers),
            "markers_truncated": self.markers_truncated,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "since": self.since,
            "until": self.until,
            "bucket_seconds": self.bucket_seconds,
            "buckets": [x.to_dict() for x in self.buckets],
            "drift": [s.to_dict() for s in self.drift],
            "markers": [m.to_dict() for m in self.markers],
            "totals": self.totals,
        }


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def wilson(successes: int, n: int) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of ``successes`` in ``n`` (None, None when n is 0)."""
    if n <= 0:
        return None, None
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


# -- drift -------------------------------------------------------------------------------------


def series_of(
    model: str, rows: Iterable[tuple[float, str, float, float, bool]]
) -> list[DriftSeries]:
    """Monitor results ``(at, monitor, value, threshold, alert)`` as one series per monitor."""
    points: dict[str, list[DriftPoint]] = {}
    for at, monitor, value, threshold, alert in rows:
        points.setdefault(monitor, []).append(
            DriftPoint(float(at), float(value), float(threshold), bool(alert))
        )
    return [
        DriftSeries(model, monitor, tuple(sorted(found, key=lambda p: p.at)))
        for monitor, found in sorted(points.items())
    ]


def drift_series(
    uow: UnitOfWork, tenant: str, models: Sequence[str], since: float, until: float
) -> list[DriftSeries]:
    """The drift series of ``models`` over ``[since, until)``: one per monitor, from the
    results the workers' checks recorded (``uow.monitors.series``); a monitor's alerts are
    markers as well (``monitor.alerted``)."""
    return [
        found
        for model in models
        for found in series_of(model, uow.monitors.series(tenant, model, since, until))
    ]


# -- the report --------------------------------------------------------------------------------


def check_window(since: float | None, until: float | None, buckets: int, model: str | None) -> None:
    """Refuse parameters no report answers, naming the one at fault."""
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        raise ReportInputError("buckets", f"must be a whole number from 1 to {MAX_BUCKETS}")
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReportInputError(name, "must be epoch seconds")
        if not (math.isfinite(value) and 0 <= value <= _EPOCH_MAX):
            raise ReportInputError(name, "must be epoch seconds")
    if since is not None and until is not None:
        if since >= until:
            raise ReportInputError("since", "must be before until")
        if until - since > MAX_RANGE_SECONDS:
            raise ReportInputError("since", "the window may span at most 366 days")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= _MAX_MODEL):
        raise ReportInputError("model", f"must be a model name of 1 to {_MAX_MODEL} characters")


def evolution_report(
    store: Store,
    tenant: str,
    model: str | None = None,
    *,
    since: float | None = None,
    until: float | None = None,
    buckets: int = DEFAULT_BUCKETS,
) -> EvolutionReport:
    """The evolution of ``model`` (every model of the tenant if None) over ``[since, until)``
    in ``buckets`` equal buckets (1 to 200). ``until`` defaults to now; ``since`` to the
    first case or marker of the 366 days before ``until`` (a day before it if there is
    none), so the report spans what happened. A model the tenant does not have is a
    :class:`~aevos.errors.ModelNotFoundError`; bad parameters a
    :class:`~aevos.errors.ReportInputError`."""
    check_window(since, until, buckets, model)
    end = time.time() if until is None else float(until)
    with store.reading() as uow:
        names = uow.models.names(tenant)
        if model is not None and model not in names:
            known = ", ".join(sorted(names)[:20]) or "none"
            raise ModelNotFoundError(
                f"no model {model!r} in tenant {tenant!r} (its models: {known})"
            )
        start = float(since) if since is not None else _first(uow, tenant, model, end)
        if start >= end:
            raise ReportInputError("since", "must be before until")
        if end - start > MAX_RANGE_SECONDS:  # a since far before the default until (now)
            raise ReportInputError("since", "the window may span at most 366 days")
        width = (end - start) / buckets
        starts = [start + i * width for i in range(buckets)]
        counts = uow.report.buckets(tenant, model, starts, end)
        costs = uow.report.costs(tenant, model, starts, end)
        answers = uow.report.sampled_answers(tenant, model, start, end)
        labels = uow.report.labels_of(tenant, [case_id for _, case_id, _ in answers])
        rows = uow.report.markers(tenant, model, start, end, MAX_MARKERS + 1)
        drift = drift_series(uow, tenant, [model] if model else sorted(names), start, end)

    per: list[dict[str, Any]] = [
        {"cases": 0, "automated": 0, "reviews": 0, "qa": 0, "n": 0, "correct": 0, "cost": 0.0}
        for _ in starts
    ]
    for b, n, automated, reviews, qa in counts:
        per[b].update(cases=n, automated=automated, reviews=reviews, qa=qa)
    for b, cost in costs:
        per[b]["cost"] = cost
    for at, case_id, answer in answers:
        label = effective(labels.get(case_id, ()))
        if label is None or isinstance(answer, Mapping) or answer is None:
            continue  # not labelled yet, or an answer no label can equal (long text)
        cell = per[bisect_right(starts, at) - 1]
        cell["n"] += 1
        cell["correct"] += 1 if same_label(label.label, answer) else 0

    out = []
    for i, cell in enumerate(per):
        cases, n = cell["cases"], cell["n"]
        low, high = wilson(cell["correct"], n)
        out.append(
            ReportBucket(
                start=starts[i],
                end=starts[i + 1] if i + 1 < buckets else end,
                cases=cases,
                automated=cell["automated"],
                automation_rate=_ratio(cell["automated"], cases),
                reviews=cell["reviews"],
                qa=cell["qa"],
                reviews_per_100=None
                if not cases
                else 100.0 * (cell["reviews"] + cell["qa"]) / cases,
                precision_n=n,
                correct=cell["correct"],
                precision=_ratio(cell["correct"], n),
                precision_low=low,
                precision_high=high,
                cost=cell["cost"],
                cost_per_decision=_ratio(cell["cost"], cases),
            )
        )
    markers = [m for m in (_marker(*row) for row in rows[:MAX_MARKERS]) if m is not None]
    return EvolutionReport(
        tenant=tenant,
        model=model,
        since=start,
        until=end,
        bucket_seconds=width,
        buckets=tuple(out),
        drift=tuple(drift),
        markers=tuple(markers),
        markers_truncated=len(rows) > MAX_MARKERS,
    )


def _first(uow: UnitOfWork, tenant: str, model: str | None, until: float) -> float:
    """The default start: the first case or marker within the range before ``until``."""
    earliest = until - MAX_RANGE_SECONDS
    found = [uow.report.first_case(tenant, model, earliest, until)]
    found += [row[0] for row in uow.report.markers(tenant, model, earliest, until, 1)]
    times = [t for t in found if t is not None]
    return min(times) if times else until - _DEFAULT_SPAN


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _marker(at: float, action: str, model: str | None, data: Mapping[str, Any]) -> Marker | None:
    """The marker of an audit record, or None for one that moves an alias other than the
    champion (a challenger's, say: no version change of what decides)."""
    if action.startswith("model."):
        if data.get("alias") != "champion":
            return None
        version = _int(data.get("version"))
        if action == "model.rolled_back":
            detail = f"champion back to v{version} from v{data.get('from_version')}"
        else:
            previous = _int(data.get("previous_version"))
            detail = f"champion v{previous} → v{version}" if previous else f"champion → v{version}"
    elif action.startswith("retraining."):
        version = _int(data.get("candidate"))
        parts = [f"trigger {data.get('trigger')}"]
        if version is not None:
            parts.append(f"candidate v{version}")
        promotion = data.get("promotion")
        if isinstance(promotion, str):
            parts.append(f"promotion {promotion}")
        if data.get("reason"):
            parts.append(str(data["reason"]))
        detail = "; ".join(parts)
    elif action == "monitor.alerted":
        version = _int(data.get("version"))
        figures = data.get("figures")
        shown = ""
        if isinstance(figures, Mapping):
            shown = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in list(figures.items())[:4]
            )
        detail = f"{data.get('monitor')}" + (f": {shown}" if shown else "")
    else:  # rollout.*
        version = _int(data.get("version"))
        step = data.get("step_name") or data.get("to_step")
        detail = f"step {step}" if step is not None else ""
        if data.get("reason"):
            detail = f"{detail}: {data['reason']}" if detail else str(data["reason"])
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 1] + "…"
    return Marker(at=at, kind=action, model=model, version=version, detail=detail)


class Reports:
    """Reports over the tenant's history (``app.reports``). Read only; like ``app.labels``
    this is the ungoverned service: requests with a token go through
    :class:`~aevos.access.Access` (``access.metrics.evolution``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def evolution(
        self,
        model: str | None = None,
        *,
        tenant: str = "default",
        since: float | None = None,
        until: float | None = None,
        buckets: int = DEFAULT_BUCKETS,
    ) -> EvolutionReport:
        """The evolution report of ``model`` (every model if None): see :func:`evolution_report`."""
        return evolution_report(
            self.store, tenant, model, since=since, until=until, buckets=buckets
        )
