"""What a rollout step's analysis reads: one model's calls in a window, the labels of their
cases and the reviewers' decisions on their suggestions.

The figures themselves (percentiles, rates, agreement) are :mod:`aevos.rollouts.analysis`'s
business. Every query here is scoped to one tenant, one model and the versions asked for,
and reads the ``model.called`` audit records of the window ``[since, until)``; labels and
decisions count only when they were known before ``until``, so the same window gives the
same figures however late it is measured.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..records.label import LabelRecord
from .labels import label_of
from .repository import Repository
from .schema import audit, feedback, labels


@dataclass(frozen=True)
class CallRow:
    """One ``model.called`` record of the window, as the analysis needs it."""

    call_id: str
    version: int
    route: str
    outcome: str
    latency_ms: float | None
    cost: float | None
    # The predicted label as recorded: a JSON scalar, or {"sha256": ...} for long text.
    label: Any


@dataclass(frozen=True)
class DecisionRow:
    """A reviewer's decision on a suggestion made by one of the window's calls."""

    call_id: str
    model_version: str | None
    overridden: bool


class AnalysisRepository(Repository):
    """A model's calls, labels and reviews over a window, in the unit of work it is bound to."""

    def _calls(
        self, tenant: str, model: str, versions: Sequence[int], since: float, until: float
    ) -> Any:
        """The window's ``model.called`` records of ``model``'s ``versions``, as a subquery
        of (call_id, payload)."""
        dialect = self.uow.store.dialect

        def data(key: str) -> Any:
            return dialect.json_field(audit.c.payload, "data", key)

        return (
            sa.select(data("call_id").as_string().label("call_id"), audit.c.payload)
            .where(
                audit.c.tenant == tenant,
                audit.c.action == "model.called",
                audit.c.at >= since,
                audit.c.at < until,
                data("model").as_string() == model,
                data("version").as_integer().in_(list(versions)),
            )
            .subquery("calls")
        )

    def calls(
        self, tenant: str, model: str, versions: Sequence[int], since: float, until: float
    ) -> list[CallRow]:
        """Every call of ``model``'s ``versions`` recorded in ``[since, until)``, in the order
        recorded."""
        if not versions:
            return []
        calls = self._calls(tenant, model, versions, since, until)
        out: list[CallRow] = []
        # The payload is decoded here rather than field by field in SQL: SQLite's
        # json_extract turns a boolean label into 1, and a label's type is part of it.
        for (payload,) in self.conn.execute(sa.select(calls.c.payload)):
            data = json.loads(payload)["data"]
            out.append(
                CallRow(
                    call_id=str(data.get("call_id")),
                    version=int(data["version"]),
                    route=str(data.get("route")),
                    outcome=str(data.get("outcome")),
                    latency_ms=_number(data.get("latency_ms")),
                    cost=_number(data.get("cost")),
                    label=data.get("label"),
                )
            )
        return out

    def labels(
        self, tenant: str, model: str, versions: Sequence[int], since: float, until: float
    ) -> list[LabelRecord]:
        """The labels recorded before ``until`` of the cases of those calls (a model call's
        case id is its call id), oldest first."""
        if not versions:
            return []
        calls = self._calls(tenant, model, versions, since, until)
        rows = self.conn.execute(
            sa.select(labels)
            .where(
                labels.c.tenant == tenant,
                labels.c.labelled_at < until,
                labels.c.case_id.in_(sa.select(calls.c.call_id)),
            )
            .order_by(labels.c.id)
        )
        return [label_of(row) for row in rows]

    def decisions(
        self, tenant: str, model: str, versions: Sequence[int], since: float, until: float
    ) -> list[DecisionRow]:
        """Reviewers' decisions made before ``until`` on suggestions of those calls."""
        if not versions:
            return []
        calls = self._calls(tenant, model, versions, since, until)
        f = feedback.c
        rows = self.conn.execute(
            sa.select(f.call_id, f.model_version, f.overridden)
            .where(
                f.tenant == tenant,
                f.decided_at < until,
                f.call_id.in_(sa.select(calls.c.call_id)),
            )
            .order_by(f.id)
        )
        return [
            DecisionRow(str(call_id), version, bool(overridden))
            for call_id, version, overridden in rows
        ]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
