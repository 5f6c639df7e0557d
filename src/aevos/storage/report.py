"""The queries behind the evolution report (:mod:`aevos.telemetry.report`): a model's cases
per time bucket with the people they went to, the model's answers on its QA-sampled
automated cases, and the audit records that mark its versions, rollouts, retrainings and
drift alerts.

A *case* is a primary decision of the model: a ``model.called`` record on the ``primary``
or ``canary`` route (never a shadow, which decides nothing, nor a cascade's later stage or a
fallback, which answer a case the first stage already counted), one per ``call_id``. Every
query is scoped to one tenant and a window ``[since, until)`` of the case's time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..records.label import LabelRecord
from .labels import label_of
from .metrics import _bucket_of
from .repository import Repository
from .schema import audit, labels, tasks

#: The routes on which a call is the model's decision of a case.
CASE_ROUTES = ("primary", "canary")
#: Audit actions that are marks on the report's time axis (plus every ``rollout.*`` and
#: ``retraining.*`` but those below).
MARKER_ACTIONS = ("model.promoted", "model.rolled_back", "model.alias_moved", "monitor.alerted")
MARKER_PREFIXES = ("rollout.", "retraining.")
#: A configuration change and a refused request are no retraining.
NOT_MARKERS = ("retraining.configured", "retraining.rejected")
#: How many case ids one ``IN (...)`` carries (SQLite binds at most 32,766 parameters).
_CHUNK = 500

# (bucket, cases, automated, review tasks, QA tasks)
BucketRow = tuple[int, int, int, int, int]
# (at, action, model, data)
MarkerRow = tuple[float, str, str | None, dict[str, Any]]


class ReportRepository(Repository):
    """One tenant's evolution figures, read in the unit of work it is bound to."""

    def _data(self, key: str) -> Any:
        return self.uow.store.dialect.json_field(audit.c.payload, "data", key)

    def _cases(self, tenant: str, model: str | None, since: float, until: float) -> Any:
        """(call_id, at, model) of the cases in ``[since, until)``: a subquery."""
        call_id = self._data("call_id").as_string()
        named = self._data("model").as_string()
        calls = (
            sa.select(call_id.label("call_id"), audit.c.at.label("at"), named.label("model"))
            .where(
                audit.c.tenant == tenant,
                audit.c.action == "model.called",
                audit.c.at >= since,
                audit.c.at < until,
                self._data("route").as_string().in_(CASE_ROUTES),
                *([] if model is None else [named == model]),
            )
            .subquery("calls")
        )
        # A retried attempt records the route again under the same call id: one case.
        return (
            sa.select(
                calls.c.call_id,
                sa.func.min(calls.c.at).label("at"),
                sa.func.min(calls.c.model).label("model"),
            )
            .where(calls.c.call_id.is_not(None))
            .group_by(calls.c.call_id)
            .subquery("cases")
        )

    def _people(self, tenant: str, since: float) -> Any:
        """Per call id, the review and QA tasks opened on it (a subquery). A task is created
        after the call it asks about, so older tasks cannot belong to a case in the window."""
        t = tasks.c
        return (
            sa.select(
                t.call_id.label("call_id"),
                sa.func.sum(sa.case((t.purpose == "review", 1), else_=0)).label("reviews"),
                sa.func.sum(sa.case((t.purpose == "qa", 1), else_=0)).label("qa"),
            )
            .where(t.tenant == tenant, t.call_id.is_not(None), t.created_at >= since)
            .group_by(t.call_id)
            .subquery("people")
        )

    def buckets(
        self, tenant: str, model: str | None, starts: Sequence[float], until: float
    ) -> list[BucketRow]:
        """Per bucket with cases: (bucket, cases, automated, review tasks, QA tasks). A case
        is automated when no review task was opened on its call."""
        cases = self._cases(tenant, model, starts[0], until)
        people = self._people(tenant, starts[0])
        reviews = sa.func.coalesce(people.c.reviews, 0)
        binned = (
            sa.select(
                _bucket_of(cases.c.at, starts).label("b"),
                sa.case((reviews > 0, 0), else_=1).label("automated"),
                reviews.label("reviews"),
                sa.func.coalesce(people.c.qa, 0).label("qa"),
            )
            .select_from(cases.outerjoin(people, people.c.call_id == cases.c.call_id))
            .subquery("binned")
        )
        rows = self.conn.execute(
            sa.select(
                binned.c.b,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(binned.c.automated), 0),
                sa.func.coalesce(sa.func.sum(binned.c.reviews), 0),
                sa.func.coalesce(sa.func.sum(binned.c.qa), 0),
            ).group_by(binned.c.b)
        )
        return [(int(b), int(n), int(auto), int(rv), int(qa)) for b, n, auto, rv, qa in rows]

    def costs(
        self, tenant: str, model: str | None, starts: Sequence[float], until: float
    ) -> list[tuple[int, float]]:
        """Per bucket: the summed cost of every call of the model recorded in it, on any
        route (shadows, cascades and fallbacks cost too)."""
        named = self._data("model").as_string()
        calls = (
            sa.select(
                _bucket_of(audit.c.at, starts).label("b"),
                self._data("cost").as_float().label("cost"),
            )
            .where(
                audit.c.tenant == tenant,
                audit.c.action == "model.called",
                audit.c.at >= starts[0],
                audit.c.at < until,
                *([] if model is None else [named == model]),
            )
            .subquery("costs")
        )
        rows = self.conn.execute(
            sa.select(calls.c.b, sa.func.coalesce(sa.func.sum(calls.c.cost), 0.0)).group_by(
                calls.c.b
            )
        )
        return [(int(b), float(cost)) for b, cost in rows]

    def sampled_answers(
        self, tenant: str, model: str | None, since: float, until: float
    ) -> list[tuple[float, str, Any]]:
        """(at, call_id, the model's label) of the automated cases in ``[since, until)``
        that a QA task sampled: those whose answer realised precision is measured on."""
        cases = self._cases(tenant, model, since, until)
        people = self._people(tenant, since)
        sampled = (
            sa.select(cases.c.call_id, cases.c.at)
            .select_from(cases.join(people, people.c.call_id == cases.c.call_id))
            .where(people.c.qa > 0, people.c.reviews == 0)
        ).subquery("sampled")
        call_id = self._data("call_id").as_string()
        rows = self.conn.execute(
            sa.select(sampled.c.at, sampled.c.call_id, audit.c.payload)
            .select_from(sampled.join(audit, call_id == sampled.c.call_id))
            .where(
                audit.c.tenant == tenant,
                audit.c.action == "model.called",
                audit.c.at >= since,
                self._data("route").as_string().in_(CASE_ROUTES),
                self._data("outcome").as_string() == "ok",
            )
            .order_by(audit.c.seq)
        )
        found: dict[str, tuple[float, str, Any]] = {}
        for at, case_id, payload in rows:
            # The last successful attempt answered the case.
            found[str(case_id)] = (float(at), str(case_id), json.loads(payload)["data"]["label"])
        return list(found.values())

    def labels_of(self, tenant: str, case_ids: Iterable[str]) -> dict[str, list[LabelRecord]]:
        """Every label of each of ``case_ids`` (superseded ones too), by case id."""
        wanted = sorted(set(case_ids))
        found: dict[str, list[LabelRecord]] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            query = sa.select(labels).where(labels.c.tenant == tenant, labels.c.case_id.in_(chunk))
            for row in self.conn.execute(query):
                record = label_of(row)
                found.setdefault(record.case_id, []).append(record)
        return found

    def first_case(
        self, tenant: str, model: str | None, since: float, until: float
    ) -> float | None:
        """When the first case in ``[since, until)`` was decided (None: there was none)."""
        cases = self._cases(tenant, model, since, until)
        at = self.conn.execute(sa.select(sa.func.min(cases.c.at))).scalar()
        return None if at is None else float(at)

    def markers(
        self, tenant: str, model: str | None, since: float, until: float, limit: int
    ) -> list[MarkerRow]:
        """(at, action, model, data) of the audit records in ``[since, until)`` that mark
        the time axis, oldest first, at most ``limit``."""
        named = self._data("model").as_string()
        action = audit.c.action
        query = (
            sa.select(audit.c.at, action, named, audit.c.payload)
            .where(
                audit.c.tenant == tenant,
                audit.c.at >= since,
                audit.c.at < until,
                sa.or_(
                    action.in_(MARKER_ACTIONS),
                    *(action.startswith(prefix) for prefix in MARKER_PREFIXES),
                ),
                action.not_in(NOT_MARKERS),
                *([] if model is None else [named == model]),
            )
            .order_by(audit.c.at, audit.c.seq)
            .limit(limit)
        )
        return [
            (float(at), str(act), name, json.loads(payload).get("data") or {})
            for at, act, name, payload in self.conn.execute(query)
        ]
