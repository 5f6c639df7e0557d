"""Metrics of one tenant, read from the database: a Prometheus exposition and the console's
time series.

Everything is computed from the tables every process writes (runs, human tasks, feedback,
and the ``model.called`` audit records), never from counters kept in memory alone, so
whichever process answers, the numbers agree and survive restarts. Each request costs a
handful of aggregate queries over the tenant's rows, except the model-call counters, the
largest: a process adds up each tenant's ``model.called`` records once and then, on every
scrape, only the records appended since (a range of the audit log's ``(tenant, seq)`` key),
so a scrape stays cheap however long the log grows.

- :func:`exposition`: Prometheus text (``GET /metrics``). Counters and the run-duration
  histogram cover everything the database holds, so they only grow and ``rate()`` works.
  Queue depth and the age of the oldest queued run, schedule ticks and lateness (and, once
  their stores are merged, dead letters and the outbox's lag) are computed at scrape time.

Why from the database and not ``prometheus_client``'s multiprocess mode: aevos runs many
worker processes on many hosts, and multiprocess mode only adds up the processes of one
host that share a directory (and drops a dead process's gauges, or keeps them stale). A
queue's depth is a fact of the shared database, so any process's ``/metrics`` reads the
true totals of every worker on every host, and scraping one of them is enough.
- :func:`dashboard`: per time bucket, throughput, run latency percentiles, automation rate,
  human override rate, cost per decision, and the drift of each model's confidence (its
  population stability index against a reference bucket).

A *finished* run is one that ended SUCCEEDED, FAILED or CANCELLED; REJECTED runs never ran
and are not counted as finished. Child runs count like any other run.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DefinitionError
from ..storage.metrics import CONFIDENCE_BINS

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..storage import Store, UnitOfWork

__all__ = [
    "CONFIDENCE_BINS",
    "LATENCY_BUCKETS",
    "MAX_BUCKETS",
    "Dashboard",
    "DashboardBucket",
    "Snapshot",
    "dashboard",
    "exposition",
    "percentile",
    "psi",
    "render",
    "snapshot",
]

#: Upper bounds (seconds) of the run-duration histogram: processes with people in the loop
#: take hours or days, fully automated ones under a second.
LATENCY_BUCKETS = (
    *(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0),
    *(300.0, 900.0, 3600.0, 14400.0, 86400.0, 604800.0),
)
#: The most buckets one dashboard request may ask for.
MAX_BUCKETS = 500
# A bin empty on one side would make the PSI infinite; proportions are floored at this.
_PSI_FLOOR = 1e-4


# -- reading the database --------------------------------------------------------------------


CallKey = tuple[str, str, str, str]  # model, version, route, outcome


class CallTotalsCache:
    """Each tenant's model-call totals up to an audit ``seq``, extended on each read by the
    records after it. Audit records of a tenant commit in ``seq`` order (appends hold the
    tenant's head row), so nothing below the mark can appear later; a log that shrank (a
    reset) is added up again from the start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[str, tuple[int, dict[CallKey, CallTotals]]] = {}

    def totals(self, uow: UnitOfWork, tenant: str) -> dict[CallKey, CallTotals]:
        with self._lock:  # one reader per process adds up a range; the others wait for it
            mark, totals = self._tenants.get(tenant, (0, {}))
            head = uow.audit.last_seq(tenant)
            if head < mark:
                mark, totals = 0, {}
            if head > mark:
                totals = dict(totals)
                for key, more in _call_rows(uow, tenant, (mark, head)).items():
                    before = totals.get(key, CallTotals(0, 0.0, 0.0))
                    totals[key] = CallTotals(
                        before.calls + more.calls,
                        before.cost + more.cost,
                        before.seconds + more.seconds,
                    )
                self._tenants[tenant] = (head, totals)
            return totals


def _call_rows(uow: UnitOfWork, tenant: str, seqs: tuple[int, int]) -> dict[CallKey, CallTotals]:
    found: dict[CallKey, CallTotals] = {}
    for model, version, route, outcome, n, cost, ms in uow.metrics.call_totals(tenant, seqs):
        labels = (model or "", version or "", route or "", outcome or "")
        before = found.get(labels, CallTotals(0, 0.0, 0.0))
        found[labels] = CallTotals(before.calls + n, before.cost + cost, before.seconds + ms / 1000)
    return found


# -- Prometheus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDurations:
    """The duration histogram of one workflow's finished runs."""

    count: int
    sum: float
    buckets: tuple[int, ...]  # cumulative counts, one per LATENCY_BUCKETS bound


@dataclass(frozen=True)
class CallTotals:
    calls: int
    cost: float
    seconds: float


@dataclass(frozen=True)
class Snapshot:
    """What :func:`exposition` exposes, as read from the database."""

    runs: Mapping[tuple[str, str], int]  # (workflow, status) -> runs
    durations: Mapping[str, RunDurations]  # workflow -> finished runs' durations
    open_tasks: Mapping[tuple[str, str], int]  # (queue, status) -> tasks
    feedback: Mapping[str, tuple[int, int]]  # model ("" if none) -> (decisions, overrides)
    model_calls: Mapping[tuple[str, str, str, str], CallTotals]  # model, version, route, outcome
    queues: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # depth, oldest age
    schedule_ticks: Mapping[tuple[str, str], int] = field(default_factory=dict)
    schedule_lateness: Mapping[str, float] = field(default_factory=dict)  # of the newest tick
    # The tenant's dead letters not replayed, and seconds since its oldest message not yet
    # published was written (0 when none); None leaves their family out (a snapshot built
    # by hand).
    dead_letters: int | None = None
    outbox_lag: float | None = None


def snapshot(
    store: Store, call_totals: CallTotalsCache, tenant: str, *, now: float | None = None
) -> Snapshot:
    """The tenant's counts, in one read transaction (ages measured at ``now``, by default
    the clock)."""
    moment = time.time() if now is None else now
    with store.reading() as uow:
        run_counts = uow.metrics.run_counts(tenant)
        durations = uow.metrics.run_durations(tenant, LATENCY_BUCKETS)
        open_tasks = uow.tasks.count_live(tenant)
        feedback_rows = uow.metrics.feedback_counts(tenant)
        totals = call_totals.totals(uow, tenant)
        queues: dict[str, tuple[int, float]] = dict.fromkeys(uow.metrics.queue_names(), (0, 0.0))
        for queue, depth, since in uow.metrics.queue_backlog(tenant, moment):
            queues[queue] = (depth, max(0.0, moment - since))
        ticks = {(s, status): n for s, status, n in uow.schedules.tick_counts(tenant)}
        lateness = dict(uow.schedules.last_lateness(tenant))
        oldest_unsent = uow.outbox.oldest_pending(tenant)
        dead_letters = uow.dead_letters.count(tenant)
    feedback_counts: dict[str, tuple[int, int]] = {}
    for model, n, overridden in feedback_rows:
        before = feedback_counts.get(model or "", (0, 0))
        feedback_counts[model or ""] = (before[0] + n, before[1] + overridden)
    return Snapshot(
        runs={(w, s): n for w, s, n in run_counts},
        durations={w: RunDurations(n, total, buckets) for w, n, total, buckets in durations},
        open_tasks=open_tasks,
        feedback=feedback_counts,
        model_calls=totals,
        queues=queues,
        dead_letters=dead_letters,
        outbox_lag=0.0 if oldest_unsent is None else max(0.0, moment - oldest_unsent),
        schedule_ticks=ticks,
        schedule_lateness=lateness,
    )


class _Collector:
    """Prometheus families from one :class:`Snapshot` (a custom collector, one per request)."""

    def __init__(self, data: Snapshot) -> None:
        self.data = data

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            SummaryMetricFamily,
        )

        data = self.data
        run_counts = GaugeMetricFamily(
            "aevos_runs", "Runs by workflow and current status.", labels=["workflow", "status"]
        )
        for (workflow, status), n in sorted(data.runs.items()):
            run_counts.add_metric([workflow, status], n)
        yield run_counts

        durations = HistogramMetricFamily(
            "aevos_run_duration_seconds",
            "Time from a run's creation to its finish, of finished runs "
            "(succeeded, failed or cancelled).",
            labels=["workflow"],
        )
        for workflow, d in sorted(data.durations.items()):
            buckets = [(str(b), n) for b, n in zip(LATENCY_BUCKETS, d.buckets, strict=True)]
            buckets.append(("+Inf", d.count))
            durations.add_metric([workflow], buckets, d.sum)
        yield durations

        open_tasks = GaugeMetricFamily(
            "aevos_human_tasks_open",
            "Human tasks waiting for a person, by queue and status (OPEN or CLAIMED).",
            labels=["queue", "status"],
        )
        for (queue, status), n in sorted(data.open_tasks.items()):
            open_tasks.add_metric([queue, status], n)
        yield open_tasks

        decisions = CounterMetricFamily(
            "aevos_feedback_decisions",
            "Human decisions on model suggestions, by model.",
            labels=["model"],
        )
        overrides = CounterMetricFamily(
            "aevos_feedback_overrides",
            "Human decisions that changed a model's suggestion, by model.",
            labels=["model"],
        )
        for model, (n, overridden) in sorted(data.feedback.items()):
            decisions.add_metric([model], n)
            overrides.add_metric([model], overridden)
        yield decisions
        yield overrides

        labels = ["model", "version", "route", "outcome"]
        calls = CounterMetricFamily(
            "aevos_model_calls", "Model calls, as recorded in the audit log.", labels=labels
        )
        cost = CounterMetricFamily(
            "aevos_model_call_cost", "Cost of model calls, as adapters report it.", labels=labels
        )
        seconds = SummaryMetricFamily(
            "aevos_model_call_duration_seconds", "Latency of model calls.", labels=labels
        )
        for key, totals in sorted(data.model_calls.items()):
            calls.add_metric(list(key), totals.calls)
            cost.add_metric(list(key), totals.cost)
            seconds.add_metric(list(key), totals.calls, totals.seconds)
        yield calls
        yield cost
        yield seconds
        yield from self._integrations()

    def _integrations(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        data = self.data
        depth = GaugeMetricFamily(
            "aevos_queue_depth",
            "Runs ready for a worker, by queue: enqueued, or waiting with their timer due.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "aevos_queue_oldest_age_seconds",
            "How long the oldest run ready for a worker has waited, by queue (0 when none).",
            labels=["queue"],
        )
        for queue, (n, oldest) in sorted(data.queues.items()):
            depth.add_metric([queue], n)
            age.add_metric([queue], oldest)
        yield depth
        yield age

        ticks = CounterMetricFamily(
            "aevos_schedule_ticks",
            "Schedule ticks by outcome: started, skipped (past the catch-up limit), "
            "triggered (by hand).",
            labels=["schedule", "status"],
        )
        for (schedule, status), n in sorted(data.schedule_ticks.items()):
            ticks.add_metric([schedule, status], n)
        yield ticks
        lateness = GaugeMetricFamily(
            "aevos_schedule_lateness_seconds",
            "Seconds from a schedule's newest started tick to the start of its run.",
            labels=["schedule"],
        )
        for schedule, seconds in sorted(data.schedule_lateness.items()):
            lateness.add_metric([schedule], seconds)
        yield lateness

        if data.dead_letters is not None:
            yield GaugeMetricFamily(
                "aevos_dead_letters",
                "Events in the dead-letter store, not replayed.",
                value=data.dead_letters,
            )
        if data.outbox_lag is not None:
            yield GaugeMetricFamily(
                "aevos_outbox_lag_seconds",
                "Seconds since the oldest outbox message not yet published was written "
                "(0 when none).",
                value=data.outbox_lag,
            )


def exposition(
    store: Store, call_totals: CallTotalsCache, tenant: str, *, now: float | None = None
) -> bytes:
    """The tenant's metrics in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
    return render(snapshot(store, call_totals, tenant, now=now))


def render(data: Snapshot) -> bytes:
    """``data`` in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    # A registry per request: nothing is shared between requests or tenants.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(data))
    return generate_latest(registry)


# -- the console's dashboard -----------------------------------------------------------------


@dataclass(frozen=True)
class DashboardBucket:
    """One time bucket, ``[start, end)``. Rates are None when their denominator is zero."""

    start: float
    end: float
    throughput: int  # runs finished in the bucket
    latency_p50: float | None  # seconds from creation to finish, of those runs
    latency_p95: float | None
    latency_p99: float | None
    automated: int  # finished runs that asked no person (no human task)
    automation_rate: float | None  # automated / throughput
    feedback: int  # human decisions on model suggestions made in the bucket
    overrides: int  # of which changed the suggestion
    override_rate: float | None  # overrides / feedback
    model_calls: int
    cost: float  # summed cost of the bucket's model calls
    cost_per_decision: float | None  # cost / throughput
    drift: Mapping[str, float | None] = field(default_factory=dict)  # model -> PSI


@dataclass(frozen=True)
class Dashboard:
    """Time series of one tenant between ``since`` and ``until`` in equal buckets.

    ``drift_reference`` gives, per model, the bucket its confidence distribution is compared
    with: the first bucket in which the model has calls with a confidence (the window's
    first bucket whenever the model was called then). A bucket without such calls has no
    drift value for the model.
    """

    tenant: str
    since: float
    until: float
    bucket_seconds: float
    buckets: tuple[DashboardBucket, ...]
    drift_reference: Mapping[str, int]


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of sorted values, interpolating linearly between ranks."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def psi(reference: Sequence[int], current: Sequence[int]) -> float:
    """Population stability index of ``current`` against ``reference`` (counts per bin).

    ``sum((c - r) * ln(c / r))`` over the bins' proportions, each floored at 1e-4 so that
    an empty bin counts as very rare instead of infinitely surprising. Under 0.1 is usually
    read as stable, over 0.25 as a shift worth acting on.
    """
    if len(reference) != len(current):
        raise DefinitionError("psi compares two histograms of the same bins")
    r_total, c_total = sum(reference), sum(current)
    if r_total <= 0 or c_total <= 0:
        raise DefinitionError("psi needs observations on both sides")
    value = 0.0
    for r, c in zip(reference, current, strict=True):
        p_r = max(r / r_total, _PSI_FLOOR)
        p_c = max(c / c_total, _PSI_FLOOR)
        value += (p_c - p_r) * math.log(p_c / p_r)
    return value


def _bucket_starts(since: float, until: float, buckets: int) -> list[float]:
    """The starts of ``buckets`` equal buckets over ``[since, until)``, checked."""
    if not (math.isfinite(since) and math.isfinite(until)) or until <= since:
        raise DefinitionError("until must be a time after since (epoch seconds)")
    if isinstance(buckets, bool) or not 1 <= buckets <= MAX_BUCKETS:
        raise DefinitionError(f"buckets must be between 1 and {MAX_BUCKETS}")
    width = (until - since) / buckets
    return [since + i * width for i in range(buckets)]


def dashboard(
    store: Store, tenant: str, *, since: float, until: float, buckets: int = 24
) -> Dashboard:
    """The tenant's time series over ``[since, until)`` (epoch seconds) in ``buckets``
    equal buckets. A run belongs to the bucket it finished in, a feedback row to the one it
    was decided in, a model call to the one it was recorded in."""
    starts = _bucket_starts(since, until, buckets)
    ends = [*starts[1:], until]
    with store.reading() as uow:
        run_rows = uow.metrics.finished_runs(tenant, since, until)
        feedback_rows = uow.metrics.feedback_by_bucket(tenant, starts, until)
        call_rows = uow.metrics.calls_by_bucket(tenant, starts, until)

    latencies: list[list[float]] = [[] for _ in starts]
    automated = [0] * buckets
    for finished_at, latency, with_task in run_rows:
        index = bisect_right(starts, finished_at) - 1
        latencies[index].append(latency)
        automated[index] += 0 if with_task else 1
    decisions, overrides = [0] * buckets, [0] * buckets
    for index, n, overridden in feedback_rows:
        decisions[index], overrides[index] = n, overridden
    call_counts, costs = [0] * buckets, [0.0] * buckets
    histograms: dict[str, list[list[int]]] = {}
    for i, model, bin_, n, cost in call_rows:
        call_counts[i] += n
        costs[i] += cost
        if bin_ is not None and model is not None:
            bins = histograms.setdefault(model, [[0] * CONFIDENCE_BINS for _ in starts])
            bins[i][bin_] += n

    references: dict[str, int] = {}
    drift: list[dict[str, float | None]] = [{} for _ in starts]
    for model in sorted(histograms):
        series = histograms[model]
        reference = next(i for i, counts in enumerate(series) if sum(counts))
        references[model] = reference
        for i, counts in enumerate(series):
            drift[i][model] = psi(series[reference], counts) if sum(counts) else None

    out = []
    for i in range(buckets):
        ordered = sorted(latencies[i])
        finished = len(ordered)
        out.append(
            DashboardBucket(
                start=starts[i],
                end=ends[i],
                throughput=finished,
                latency_p50=percentile(ordered, 0.50),
                latency_p95=percentile(ordered, 0.95),
                latency_p99=percentile(ordered, 0.99),
                automated=automated[i],
                automation_rate=automated[i] / finished if finished else None,
                feedback=decisions[i],
                overrides=overrides[i],
                override_rate=overrides[i] / decisions[i] if decisions[i] else None,
                model_calls=call_counts[i],
                cost=costs[i],
                cost_per_decision=costs[i] / finished if finished else None,
                drift=drift[i],
            )
        )
    return Dashboard(
        tenant=tenant,
        since=since,
        until=until,
        bucket_seconds=(until - since) / buckets,
        buckets=tuple(out),
        drift_reference=references,
    )


# -- one model's live metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class VersionBucket:
    """One version of a model in one time bucket. Rates are None without a denominator."""

    calls: int
    errors: int  # calls whose outcome was not "ok"
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    mean_confidence: float | None
    decisions: int  # human decisions on this version's suggestions
    overrides: int
    override_rate: float | None


@dataclass(frozen=True)
class ModelMetrics:
    """Per version of one model, per time bucket: traffic, errors, latency, confidence and
    how often people overrode it — what a canary is judged on."""

    model: str
    since: float
    until: float
    bucket_seconds: float
    starts: tuple[float, ...]
    versions: Mapping[str, tuple[VersionBucket, ...]]  # "name@N" -> one per bucket


def model_metrics(
    store: Store, tenant: str, model: str, *, since: float, until: float, buckets: int = 24
) -> ModelMetrics:
    """``model``'s calls (``model.called`` records) and the feedback on its suggestions over
    ``[since, until)`` in ``buckets`` equal buckets, per version."""
    starts = _bucket_starts(since, until, buckets)
    with store.reading() as uow:
        call_rows = uow.metrics.model_calls(tenant, model, since, until)
        feedback_rows = uow.metrics.model_feedback(tenant, model, since, until)

    def empty() -> list[dict[str, Any]]:
        return [
            {"latency": [], "confidence": [], "errors": 0, "decisions": 0, "overrides": 0}
            for _ in starts
        ]

    acc: dict[str, list[dict[str, Any]]] = {}
    for at, version, outcome, latency_ms, confidence in call_rows:
        ref = f"{model}@{version if version is not None else '?'}"
        cell = acc.setdefault(ref, empty())[bisect_right(starts, at) - 1]
        cell["latency"].append(float(latency_ms or 0.0))
        if confidence is not None:
            cell["confidence"].append(float(confidence))
        cell["errors"] += 0 if outcome == "ok" else 1
    for decided_at, version_ref, overridden in feedback_rows:
        ref = version_ref or f"{model}@?"
        cell = acc.setdefault(ref, empty())[bisect_right(starts, decided_at) - 1]
        cell["decisions"] += 1
        cell["overrides"] += int(overridden)

    def bucket(cell: dict[str, Any]) -> VersionBucket:
        latency = sorted(cell["latency"])
        n, decisions = len(latency), cell["decisions"]
        confidence = cell["confidence"]
        return VersionBucket(
            calls=n,
            errors=cell["errors"],
            error_rate=cell["errors"] / n if n else None,
            latency_p50_ms=percentile(latency, 0.50),
            latency_p95_ms=percentile(latency, 0.95),
            mean_confidence=sum(confidence) / len(confidence) if confidence else None,
            decisions=decisions,
            overrides=cell["overrides"],
            override_rate=cell["overrides"] / decisions if decisions else None,
        )

    return ModelMetrics(
        model=model,
        since=since,
        until=until,
        bucket_seconds=(until - since) / buckets,
        starts=tuple(starts),
        versions={ref: tuple(bucket(c) for c in cells) for ref, cells in sorted(acc.items())},
    )
