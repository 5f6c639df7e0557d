"""The aggregate queries behind metrics: counts and sums over runs, tasks, feedback and the
``model.called`` audit records, grouped in the database.

Turning them into Prometheus families, percentiles and drift is :mod:`aevos.metrics`'s
business; every query here is scoped to one tenant and returns plain tuples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..records.status import RunStatus
from .repository import Repository
from .schema import audit, feedback, queues, runs, tasks

#: Runs that ended and ran: SUCCEEDED, FAILED or CANCELLED (REJECTED runs never ran).
FINISHED = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)
#: Equal-width bins of [0, 1] over which confidence distributions are compared.
CONFIDENCE_BINS = 10

# (model, version, route, outcome, calls, cost, latency in ms)
CallTotalsRow = tuple[str | None, str | None, str | None, str | None, int, float, float]


def _bucket_of(column: Any, starts: Sequence[float]) -> Any:
    """SQL: the index of the bucket ``column`` falls in (rows are already in the window)."""
    if len(starts) == 1:
        return sa.literal(0)
    return sa.case(
        *((column < start, i) for i, start in enumerate(starts[1:])), else_=len(starts) - 1
    )


def _bin_of(column: Any) -> Any:
    """SQL: the confidence bin of ``column`` (values outside [0, 1] fall in the edge bins)."""
    whens = [(column < (i + 1) / CONFIDENCE_BINS, i) for i in range(CONFIDENCE_BINS - 1)]
    return sa.case((column.is_(None), sa.null()), *whens, else_=CONFIDENCE_BINS - 1)


class MetricsRepository(Repository):
    """One tenant's aggregates, read in the unit of work it is bound to (one snapshot)."""

    def _model_calls(self, tenant: str, seqs: tuple[int, int] | None = None) -> Any:
        """The tenant's ``model.called`` records (those with ``seqs[0] < seq <= seqs[1]``,
        if given) as rows of (at, model, version, route, outcome, confidence, cost,
        latency_ms): a subquery, so its JSON paths are bound once."""
        dialect = self.uow.store.dialect

        def data(key: str) -> Any:
            return dialect.json_field(audit.c.payload, "data", key)

        return (
            sa.select(
                audit.c.at.label("at"),
                data("model").as_string().label("model"),
                data("version").as_string().label("version"),
                data("route").as_string().label("route"),
                data("outcome").as_string().label("outcome"),
                data("confidence").as_float().label("confidence"),
                data("cost").as_float().label("cost"),
                data("latency_ms").as_float().label("latency_ms"),
            )
            .where(
                audit.c.tenant == tenant,
                audit.c.action == "model.called",
                *([] if seqs is None else [audit.c.seq > seqs[0], audit.c.seq <= seqs[1]]),
            )
            .subquery("calls")
        )

    # -- the Prometheus snapshot ---------------------------------------------------------------

    def run_counts(self, tenant: str) -> list[tuple[str, str, int]]:
        """(workflow, status, runs)."""
        r = runs.c
        rows = self.conn.execute(
            sa.select(r.workflow, r.status, sa.func.count())
            .where(r.tenant == tenant)
            .group_by(r.workflow, r.status)
        )
        return [(str(w), str(s), int(n)) for w, s, n in rows]

    def queue_backlog(self, tenant: str, now: float) -> list[tuple[str, int, float]]:
        """(queue, runs ready for a worker, since when the oldest of them is): ENQUEUED runs
        since they were enqueued, WAITING runs whose timer is due since it fell due."""
        r = runs.c
        ready_since = sa.case((r.status == "ENQUEUED", r.updated_at), else_=r.wake_at)
        rows = self.conn.execute(
            sa.select(r.queue, sa.func.count(), sa.func.min(ready_since))
            .where(
                r.tenant == tenant,
                sa.or_(
                    r.status == "ENQUEUED",
                    sa.and_(r.status == "WAITING", r.wake_at.is_not(None), r.wake_at <= now),
                ),
            )
            .group_by(r.queue)
        )
        return [(str(q), int(n), float(since)) for q, n, since in rows]

    def queue_names(self) -> list[str]:
        """The queues workers have declared (every tenant's runs go through them)."""
        return [str(name) for (name,) in self.conn.execute(sa.select(queues.c.name))]

    def run_durations(
        self, tenant: str, bounds: Sequence[float]
    ) -> list[tuple[str, int, float, tuple[int, ...]]]:
        """Per workflow, of its finished runs: (workflow, count, summed duration, cumulative
        counts of durations up to each of ``bounds``)."""
        r = runs.c
        duration = r.finished_at - r.created_at
        finished = sa.and_(r.tenant == tenant, r.status.in_(FINISHED), r.finished_at.is_not(None))
        histogram = [
            sa.func.coalesce(sa.func.sum(sa.case((duration <= bound, 1), else_=0)), 0)
            for bound in bounds
        ]
        rows = self.conn.execute(
            sa.select(
                r.workflow, sa.func.count(), sa.func.coalesce(sa.func.sum(duration), 0), *histogram
            )
            .where(finished)
            .group_by(r.workflow)
        )
        return [
            (str(row[0]), int(row[1]), float(row[2]), tuple(int(n) for n in row[3:]))
            for row in rows
        ]

    def feedback_counts(self, tenant: str) -> list[tuple[str | None, int, int]]:
        """(model, decisions, overrides) over every feedback record."""
        f = feedback.c
        rows = self.conn.execute(
            sa.select(f.model, sa.func.count(), sa.func.coalesce(sa.func.sum(f.overridden), 0))
            .where(f.tenant == tenant)
            .group_by(f.model)
        )
        return [(model, int(n), int(overridden)) for model, n, overridden in rows]

    def call_totals(self, tenant: str, seqs: tuple[int, int]) -> list[CallTotalsRow]:
        """(model, version, route, outcome, calls, cost, latency ms) of the ``model.called``
        records with ``seqs[0] < seq <= seqs[1]``."""
        calls = self._model_calls(tenant, seqs)
        call_key = (calls.c.model, calls.c.version, calls.c.route, calls.c.outcome)
        # Grouped by plain columns: PostgreSQL cannot match a GROUP BY expression holding
        # bound parameters with the same expression in the SELECT list.
        rows = self.conn.execute(
            sa.select(
                *call_key,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(calls.c.cost), 0.0),
                sa.func.coalesce(sa.func.sum(calls.c.latency_ms), 0.0),
            ).group_by(*call_key)
        )
        return [
            (model, version, route, outcome, int(n), float(cost), float(ms))
            for model, version, route, outcome, n, cost, ms in rows
        ]

    # -- the dashboard -------------------------------------------------------------------------

    def finished_runs(
        self, tenant: str, since: float, until: float
    ) -> list[tuple[float, float, bool]]:
        """(finished_at, duration, asked a person) of runs finished in ``[since, until)``."""
        r = runs.c
        asked = sa.exists().where(tasks.c.run_id == r.run_id)
        rows = self.conn.execute(
            sa.select(r.finished_at, r.finished_at - r.created_at, asked).where(
                r.tenant == tenant,
                r.status.in_(FINISHED),
                r.finished_at >= since,
                r.finished_at < until,
            )
        )
        return [(float(at), float(latency), bool(with_task)) for at, latency, with_task in rows]

    def feedback_by_bucket(
        self, tenant: str, starts: Sequence[float], until: float
    ) -> list[tuple[int, int, int]]:
        """(bucket, decisions, overrides) of feedback decided in ``[starts[0], until)``."""
        f = feedback.c
        decided = (
            sa.select(_bucket_of(f.decided_at, starts).label("b"), f.overridden)
            .where(f.tenant == tenant, f.decided_at >= starts[0], f.decided_at < until)
            .subquery("decided")
        )
        rows = self.conn.execute(
            sa.select(
                decided.c.b,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(decided.c.overridden), 0),
            ).group_by(decided.c.b)
        )
        return [(int(b), int(n), int(overridden)) for b, n, overridden in rows]

    def calls_by_bucket(
        self, tenant: str, starts: Sequence[float], until: float
    ) -> list[tuple[int, str | None, int | None, int, float]]:
        """(bucket, model, confidence bin, calls, cost) of model calls recorded in
        ``[starts[0], until)``; the bin is None for calls without a confidence."""
        calls = self._model_calls(tenant)
        binned = (
            sa.select(
                _bucket_of(calls.c.at, starts).label("b"),
                calls.c.model,
                _bin_of(calls.c.confidence).label("bin"),
                calls.c.cost,
            )
            .where(calls.c.at >= starts[0], calls.c.at < until)
            .subquery("binned")
        )
        rows = self.conn.execute(
            sa.select(
                binned.c.b,
                binned.c.model,
                binned.c.bin,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(binned.c.cost), 0.0),
            ).group_by(binned.c.b, binned.c.model, binned.c.bin)
        )
        return [
            (int(b), model, None if bin_ is None else int(bin_), int(n), float(cost))
            for b, model, bin_, n, cost in rows
        ]

    # -- one model -----------------------------------------------------------------------------

    def model_calls(
        self, tenant: str, model: str, since: float, until: float
    ) -> list[tuple[float, str | None, str | None, float | None, float | None]]:
        """(at, version, outcome, latency ms, confidence) of ``model``'s calls recorded in
        ``[since, until)``."""
        calls = self._model_calls(tenant)
        rows = self.conn.execute(
            sa.select(
                calls.c.at,
                calls.c.version,
                calls.c.outcome,
                calls.c.latency_ms,
                calls.c.confidence,
            ).where(calls.c.model == model, calls.c.at >= since, calls.c.at < until)
        )
        return [
            (float(at), version, outcome, latency, confidence)
            for at, version, outcome, latency, confidence in rows
        ]

    def model_feedback(
        self, tenant: str, model: str, since: float, until: float
    ) -> list[tuple[float, str | None, bool]]:
        """(decided_at, model version, overridden) of decisions on ``model``'s suggestions
        in ``[since, until)``."""
        f = feedback.c
        rows = self.conn.execute(
            sa.select(f.decided_at, f.model_version, f.overridden).where(
                f.tenant == tenant, f.model == model, f.decided_at >= since, f.decided_at < until
            )
        )
        return [(float(at), version, bool(overridden)) for at, version, overridden in rows]
