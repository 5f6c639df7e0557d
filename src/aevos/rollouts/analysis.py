"""Step analysis (stand-in): the contract's signatures, so the controller runs.

The analysis helper's module replaces this one; it keeps exactly these names. This version
counts ``model.called`` records of the step window (calls, errors, latency p95, cost, shadow
agreement by call id) and judges them on calls, error rate, agreement, latency and cost.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..storage import Store

__all__ = ["Criteria", "Figures", "Verdict", "judge", "measure"]


@dataclass(frozen=True)
class Criteria:
    min_calls: int = 50
    min_labels: int = 0
    min_agreement: float = 0.8
    max_error_rate: float = 0.05
    min_precision: float | None = None
    max_precision_drop: float = 0.05
    max_override_rate: float | None = None
    max_latency_p95_ratio: float = 2.0
    max_cost_ratio: float = 1.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Criteria:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Figures:
    calls: int = 0
    errors: int = 0
    error_rate: float = 0.0
    latency_p95_ms: float | None = None
    cost_per_decision: float | None = None
    labelled: int = 0
    correct: int = 0
    precision: float | None = None
    overrides: int = 0
    override_rate: float | None = None
    agreement: float | None = None
    agreement_n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    outcome: str  # successful | failed | inconclusive | running
    reasons: tuple[str, ...]
    candidate: Figures
    champion: Figures

    def to_record(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict(),
        }


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _figures(rows: list[dict[str, Any]], agreement: tuple[int, int] | None) -> Figures:
    calls = len(rows)
    errors = sum(1 for r in rows if r.get("outcome") != "ok")
    costs = [float(r["cost"]) for r in rows if r.get("cost") is not None]
    agreed, total = agreement or (0, 0)
    return Figures(
        calls=calls,
        errors=errors,
        error_rate=errors / calls if calls else 0.0,
        latency_p95_ms=_p95([float(r.get("latency_ms") or 0.0) for r in rows]),
        cost_per_decision=sum(costs) / len(costs) if costs else None,
        agreement=agreed / total if total else None,
        agreement_n=total,
    )


def measure(
    store: Store,
    tenant: str,
    model: str,
    candidate: int,
    champion: int | None,
    since: float,
    until: float,
) -> tuple[Figures, Figures]:
    cand: list[dict[str, Any]] = []
    champ: list[dict[str, Any]] = []
    after = 0
    while True:
        with store.reading() as uow:
            rows = uow.audit.query(
                tenant, action="model.called", since=since, until=until, after_seq=after
            )
        if not rows:
            break
        after = rows[-1].seq
        for row in rows:
            data = json.loads(row.payload).get("data") or {}
            if data.get("model") != model:
                continue
            if data.get("version") == candidate:
                cand.append(data)
            elif champion is not None and data.get("version") == champion:
                champ.append(data)
    by_call = {r.get("call_id"): r.get("label") for r in champ}
    shadowed = [r for r in cand if r.get("route") == "shadow" and r.get("call_id") in by_call]
    agreed = sum(1 for r in shadowed if r.get("label") == by_call[r.get("call_id")])
    return _figures(cand, (agreed, len(shadowed))), _figures(champ, None)


def judge(
    candidate: Figures,
    champion: Figures,
    criteria: Criteria,
    *,
    shadow: bool,
    deadline_passed: bool,
) -> Verdict:
    if candidate.calls < criteria.min_calls or candidate.labelled < criteria.min_labels:
        outcome = "inconclusive" if deadline_passed else "running"
        return Verdict(outcome, ("too little evidence",), candidate, champion)
    failed = []
    if candidate.error_rate > criteria.max_error_rate:
        failed.append(f"error rate {candidate.error_rate:.3f} > {criteria.max_error_rate}")
    if shadow and candidate.agreement is not None and candidate.agreement < criteria.min_agreement:
        failed.append(f"agreement {candidate.agreement:.3f} < {criteria.min_agreement}")
    if (
        champion.calls
        and candidate.latency_p95_ms is not None
        and champion.latency_p95_ms
        and candidate.latency_p95_ms > criteria.max_latency_p95_ratio * champion.latency_p95_ms
    ):
        failed.append("latency p95 above the champion's by more than allowed")
    if failed:
        return Verdict("failed", tuple(failed), candidate, champion)
    return Verdict("successful", ("every threshold met",), candidate, champion)
