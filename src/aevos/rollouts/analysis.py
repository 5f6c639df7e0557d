"""The analysis of a rollout step: what the candidate did in the step's window, against
thresholds and against the champion, and the verdict the controller acts on.

:func:`measure` reads the evidence of a window ``[since, until)`` from storage — the
``model.called`` records of the candidate and the champion, the labels of their cases and
reviewers' decisions on their suggestions — as one :class:`Figures` per version.
:func:`judge` turns two :class:`Figures` and the rollout's :class:`Criteria` into a
:class:`Verdict`, as Argo Rollouts' analysis does:

* ``failed`` on a breach of any threshold once ``min_calls`` are in, or at once on a *clear*
  breach: one that holds even if every call (label) still missing from the required evidence
  turned out favourable (3 errors in the first 10 calls, with at least 50 calls required and
  at most 5% errors allowed, is already more than 5% of 50);
* ``successful`` only with the evidence required (``min_calls`` calls, ``min_labels``
  labelled decisions and, in shadow, calls the champion answered too) and every threshold met;
* ``running`` while evidence is missing and the step's deadline has not passed;
* ``inconclusive`` when the deadline passed with too little evidence: the controller pauses
  the rollout for an operator instead of deciding on nothing.

Every reason names the figure, its value and the threshold (``"error rate 0.12 > 0.05"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import DefinitionError
from ..records.label import LabelRecord, LabelSource, effective, same_label

if TYPE_CHECKING:
    from ..storage import Store
    from ..storage.analysis import CallRow, DecisionRow

__all__ = ["Criteria", "Figures", "Outcome", "Verdict", "judge", "measure"]

Outcome = Literal["successful", "failed", "inconclusive", "running"]
OUTCOMES: tuple[Outcome, ...] = ("successful", "failed", "inconclusive", "running")

#: Outcomes of a call that refused it before the model was asked: the caller's budget or
#: access, not the version's doing. They are neither calls nor errors of the version.
REFUSED = frozenset(
    {"model_access_denied", "budget_exceeded", "rate_limited", "limit_exceeded", "cost_undeclared"}
)
#: Labelled shadowed cases needed before a candidate at least as precise as the champion is
#: excused a low agreement (its disagreements are then corrections, not mistakes).
EXCUSE_LABELS = 30
# Comparisons tolerate float rounding: 0.85 - 0.80 is a drop of 0.05, not 0.0500000001.
_EPS = 1e-9
_MAX_COUNT = 10_000_000


@dataclass(frozen=True)
class Criteria:
    """What a step must show before the rollout moves on. JSON round trip:
    :meth:`to_dict` / :meth:`from_dict`. A ratio set to None is not judged."""

    min_calls: int = 50  # candidate calls needed in the step window
    min_labels: int = 0  # labelled candidate decisions needed (reviews, QA, ground truth)
    min_agreement: float = 0.8  # shadow: share of shadowed calls answered as the champion did
    max_error_rate: float = 0.05
    min_precision: float | None = None  # realised precision of the labelled decisions
    max_precision_drop: float = 0.05  # against the champion in the same window
    max_override_rate: float | None = None
    max_latency_p95_ratio: float | None = 2.0  # against the champion's p95
    max_cost_ratio: float | None = 1.5  # cost per decision against the champion's
    # Latencies below this count as equal: two sub-millisecond models are not "3x slower"
    # than each other because a shadow thread waited for the GIL.
    latency_floor_ms: float = 10.0
    # ... and a p95 above the ratio fails only when the candidate is slower beyond chance:
    # a one-sided Mann-Whitney U test of its latencies against the champion's in the same
    # window, as Kayenta judges canary metrics (a p95 of 50 calls is noisy on a busy host).
    latency_p_value: float = 0.01
    # A precision drop above max_precision_drop fails only when the candidate is less
    # precise beyond chance (one-sided Fisher exact test of the two versions' right and
    # wrong labelled decisions): 8 of 10 against 5 of 5 is a drop of 0.2 and p 0.43.
    precision_p_value: float = 0.05

    def __post_init__(self) -> None:
        _count(self.min_calls, "min_calls", 1)
        _count(self.min_labels, "min_labels", 0)
        for name in (
            "min_agreement",
            "max_error_rate",
            "max_precision_drop",
            "latency_p_value",
            "precision_p_value",
        ):
            _share(getattr(self, name), name)
        for name in ("min_precision", "max_override_rate"):
            if getattr(self, name) is not None:
                _share(getattr(self, name), name)
        for name in ("max_latency_p95_ratio", "max_cost_ratio"):
            value = getattr(self, name)
            if value is not None and not (_real(value) and 0 < value <= 1e6):
                raise DefinitionError(f"criteria {name} must be a number above 0, or null")
        floor = self.latency_floor_ms
        if not (_real(floor) and 0 <= floor <= 3_600_000):
            raise DefinitionError("criteria latency_floor_ms must be a number of 0 or more")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Criteria:
        """Criteria from JSON; fields not given keep their defaults, unknown ones are refused."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise DefinitionError("criteria must be an object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise DefinitionError(f"criteria has no field {unknown[0]!r}")
        return cls(**dict(data))


@dataclass(frozen=True)
class Figures:
    """What one version did in a window (all zero / None without calls)."""

    calls: int = 0  # answered or failed; refused calls (budget, access) are not counted
    errors: int = 0
    error_rate: float = 0.0
    latency_p95_ms: float | None = None  # of the answered calls
    cost_per_decision: float | None = None  # all calls' cost over the answered ones
    labelled: int = 0  # answered calls with an unbiased label (QA, sampled, ground truth)
    correct: int = 0  # ... whose label is what the version predicted
    precision: float | None = None
    reviewed: int = 0  # reviewers' decisions on this version's suggestions
    overrides: int = 0  # ... that changed a suggested value
    override_rate: float | None = None
    agreement: float | None = None  # shadow: share of shadowed calls answered as the champion
    agreement_n: int = 0  # shadowed calls the champion answered too
    # The p-value of "this version answers slower than the other" (one-sided Mann-Whitney U
    # over the answered calls' latencies); set on the candidate's figures only.
    latency_slower_p: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Figures:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Verdict:
    """The outcome of a step's analysis, why, and the figures it was judged on."""

    outcome: Outcome
    reasons: tuple[str, ...]
    candidate: Figures
    champion: Figures

    def to_record(self) -> dict[str, Any]:
        """As audit data and the rollout's ``last_verdict``."""
        return {
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Verdict:
        outcome = record.get("outcome")
        if outcome not in OUTCOMES:
            raise DefinitionError(f"a verdict's outcome is one of {OUTCOMES}, not {outcome!r}")
        return cls(
            outcome=outcome,
            reasons=tuple(str(r) for r in record.get("reasons", ())),
            candidate=Figures.from_dict(record.get("candidate") or {}),
            champion=Figures.from_dict(record.get("champion") or {}),
        )


# -- measuring -------------------------------------------------------------------------------


def measure(
    store: Store,
    tenant: str,
    model: str,
    candidate: int,
    champion: int | None,
    since: float,
    until: float,
) -> tuple[Figures, Figures]:
    """The candidate's and the champion's figures over ``[since, until)`` (the champion's
    are empty when there is none). The champion's shadow calls are left out of its figures:
    they are not what it answered in production."""
    if not since < until:
        raise DefinitionError(f"an analysis window needs since < until, not {since}..{until}")
    versions = [candidate] if champion is None else [candidate, champion]
    with store.reading() as uow:
        calls = uow.analysis.calls(tenant, model, versions, since, until)
        labels = uow.analysis.labels(tenant, model, versions, since, until)
        decisions = uow.analysis.decisions(tenant, model, versions, since, until)
    by_case: dict[str, list[LabelRecord]] = {}
    for label in labels:
        by_case.setdefault(label.case_id, []).append(label)
    # Precision counts only cases put to a person independently of the version's confidence
    # (QA samples, audit draws, sampled reviews) or whose real outcome came in: a review a
    # low confidence asked for is the version's hardest case, and counting those would
    # judge a version that automates more on harder cases than one that automates less.
    truth = {
        case: effective(found)
        for case, found in by_case.items()
        if any(label.unbiased or label.source is not LabelSource.REVIEW for label in found)
    }
    mine = [c for c in calls if c.version == candidate]
    theirs = [c for c in calls if c.version == champion and c.route != "shadow"]
    candidate_figures = _figures(f"{model}@{candidate}", mine, truth, decisions)
    if champion is None:
        return candidate_figures, Figures()
    agreement, pairs = _agreement(mine, theirs)
    slower = _slower(mine, theirs)
    return (
        replace(candidate_figures, agreement=agreement, agreement_n=pairs, latency_slower_p=slower),
        _figures(f"{model}@{champion}", theirs, truth, decisions),
    )


def _latencies(calls: Sequence[CallRow]) -> list[float]:
    return [c.latency_ms for c in calls if c.outcome == "ok" and c.latency_ms is not None]


def _slower(mine: Sequence[CallRow], theirs: Sequence[CallRow]) -> float | None:
    """The p-value of "the candidate's latencies are stochastically greater than the
    champion's" (``scipy.stats.mannwhitneyu``, one-sided); None without latencies of both."""
    from scipy.stats import mannwhitneyu

    a, b = _latencies(mine), _latencies(theirs)
    if not a or not b:
        return None
    return float(mannwhitneyu(a, b, alternative="greater").pvalue)


def _figures(
    ref: str,
    calls: Sequence[CallRow],
    truth: Mapping[str, LabelRecord | None],
    decisions: Sequence[DecisionRow],
) -> Figures:
    counted = [c for c in calls if c.outcome not in REFUSED]
    answered = [c for c in counted if c.outcome == "ok"]
    errors = len(counted) - len(answered)
    latencies = _latencies(answered)
    cost = sum(c.cost or 0.0 for c in counted)
    # One decision per call: a call id names a call (its shadow shares it, but not the version).
    predicted = {c.call_id: c.label for c in answered}
    labelled = correct = 0
    for call_id, label in predicted.items():
        known = truth.get(call_id)
        if known is None or isinstance(label, dict):  # a long text answer, kept by digest only
            continue
        labelled += 1
        correct += same_label(known.label, label)
    reviewed = [d for d in decisions if d.model_version == ref and d.call_id in predicted]
    overrides = sum(d.overridden for d in reviewed)
    return Figures(
        calls=len(counted),
        errors=errors,
        error_rate=errors / len(counted) if counted else 0.0,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else None,
        cost_per_decision=cost / len(answered) if answered else None,
        labelled=labelled,
        correct=correct,
        precision=correct / labelled if labelled else None,
        reviewed=len(reviewed),
        overrides=overrides,
        override_rate=overrides / len(reviewed) if reviewed else None,
    )


def _agreement(mine: Sequence[CallRow], theirs: Sequence[CallRow]) -> tuple[float | None, int]:
    """Of the candidate's answered shadow calls whose call the champion answered as primary,
    the share answered alike, and how many there were."""
    primary = {c.call_id: c.label for c in theirs if c.route == "primary" and c.outcome == "ok"}
    shadowed = {c.call_id: c.label for c in mine if c.route == "shadow" and c.outcome == "ok"}
    pairs = [(label, primary[call_id]) for call_id, label in shadowed.items() if call_id in primary]
    if not pairs:
        return None, 0
    alike = sum(1 for a, b in pairs if type(a) is type(b) and a == b)
    return alike / len(pairs), len(pairs)


# -- judging ---------------------------------------------------------------------------------


def judge(
    candidate: Figures,
    champion: Figures,
    criteria: Criteria,
    *,
    shadow: bool,
    deadline_passed: bool,
) -> Verdict:
    """The verdict on a step from its figures (see the module's docstring)."""
    judging = _Judging(candidate, champion, criteria, shadow)
    judging.run()
    if judging.failures:
        return Verdict("failed", tuple(judging.failures), candidate, champion)
    if judging.missing:
        if deadline_passed:
            reasons = tuple(f"{m} by the deadline" for m in judging.missing)
            return Verdict("inconclusive", reasons, candidate, champion)
        return Verdict("running", tuple(judging.missing), candidate, champion)
    return Verdict("successful", tuple(judging.passes), candidate, champion)


class _Judging:
    """One judgement: every check adds a failure, a pass, or the evidence it still misses."""

    def __init__(self, candidate: Figures, champion: Figures, criteria: Criteria, shadow: bool):
        self.c, self.champ, self.k, self.shadow = candidate, champion, criteria, shadow
        self.failures: list[str] = []
        self.passes: list[str] = []
        self.missing: list[str] = []
        self.calls_in = candidate.calls >= criteria.min_calls
        self.labels_in = candidate.labelled >= criteria.min_labels

    def run(self) -> None:
        c, k = self.c, self.k
        if not self.calls_in:
            self.missing.append(f"too few calls: {c.calls} < {k.min_calls}")
        if not self.labels_in:
            self.missing.append(f"too few labelled decisions: {c.labelled} < {k.min_labels}")
        self._errors()
        if self.shadow:
            self._agreement()
        self._precision()
        self._precision_drop()
        self._overrides()
        self._latency()
        self._cost()

    def _bound(
        self, name: str, bad: int, n: int, required: int, limit: float, evidence: bool
    ) -> None:
        """A rate of ``bad`` in ``n`` that must not exceed ``limit``: judged as it is once
        the evidence is in; before, only a breach that the missing ``required - n``
        observations could not undo (all of them good) fails."""
        if evidence:
            rate = bad / n if n else 0.0
            if rate > limit + _EPS:
                self.failures.append(f"{name} {_f(rate)} > {_f(limit)}")
            else:
                self.passes.append(f"{name} {_f(rate)} <= {_f(limit)}")
        elif required > 0 and bad / max(n, required) > limit + _EPS:
            self.failures.append(
                f"{name} {bad}/{n} > {_f(limit)} however the remaining "
                f"{required - n} of {required} turn out"
            )

    def _errors(self) -> None:
        c, k = self.c, self.k
        self._bound("error rate", c.errors, c.calls, k.min_calls, k.max_error_rate, self.calls_in)

    def _agreement(self) -> None:
        c, k = self.c, self.k
        if self.champ.calls == 0:
            self.passes.append("agreement not judged: the champion answered no calls")
            return
        if c.agreement is None or c.agreement_n == 0:
            if self.calls_in:
                self.missing.append("no shadowed call was answered by the champion too")
            return
        n, limit = c.agreement_n, k.min_agreement
        if self.calls_in:
            breach = c.agreement < limit - _EPS
            failure = f"agreement {_f(c.agreement)} < {_f(limit)}"
        else:
            # The best case: every shadowed call still missing agrees.
            required = k.min_calls
            alike = round(c.agreement * n)
            breach = (alike + max(required - n, 0)) / max(required, n) < limit - _EPS
            failure = (
                f"agreement {alike}/{n} < {_f(limit)} however the remaining "
                f"{required - n} of {required} shadowed calls turn out"
            )
        if not breach:
            if self.calls_in:
                self.passes.append(f"agreement {_f(c.agreement)} >= {_f(limit)}")
            return
        excuse = self._more_precise()
        if excuse is not None:
            self.passes.append(f"agreement {_f(c.agreement)} < {_f(limit)}, {excuse}")
        else:
            self.failures.append(failure)

    def _more_precise(self) -> str | None:
        """Why a low agreement is no failure: on enough labelled cases the candidate is at
        least as precise as the champion, so where they disagree the candidate is right."""
        c, champ = self.c, self.champ
        needed = max(EXCUSE_LABELS, self.k.min_labels)
        if c.precision is None or champ.precision is None or c.labelled < needed:
            return None
        if c.precision + _EPS < champ.precision:
            return None
        return (
            f"but precision {_f(c.precision)} >= the champion's {_f(champ.precision)} "
            f"on {c.labelled} labelled cases"
        )

    def _precision(self) -> None:
        c, k = self.c, self.k
        if k.min_precision is None:
            return
        if not self.labels_in:
            # The best case: every label still missing says the candidate was right.
            required = k.min_labels
            if (c.correct + required - c.labelled) / required < k.min_precision - _EPS:
                self.failures.append(
                    f"precision {c.correct}/{c.labelled} < {_f(k.min_precision)} however the "
                    f"remaining {required - c.labelled} of {required} labels turn out"
                )
            return
        if not self.calls_in:
            return
        if c.precision is None:
            self.passes.append("precision not judged: no labelled decisions")
        elif c.precision < k.min_precision - _EPS:
            self.failures.append(f"precision {_f(c.precision)} < {_f(k.min_precision)}")
        else:
            self.passes.append(f"precision {_f(c.precision)} >= {_f(k.min_precision)}")

    def _precision_drop(self) -> None:
        c, champ, k = self.c, self.champ, self.k
        if not (self.calls_in and self.labels_in) or c.precision is None:
            return
        if champ.precision is None:
            self.passes.append("precision not compared: the champion has no labelled decisions")
            return
        drop = champ.precision - c.precision
        detail = f"({_f(c.precision)} against the champion's {_f(champ.precision)})"
        if drop > k.max_precision_drop + _EPS:
            less = _less_precise(c, champ)
            if less < k.precision_p_value:
                self.failures.append(
                    f"precision drop {_f(drop)} > {_f(k.max_precision_drop)} {detail}"
                )
            else:
                self.passes.append(
                    f"precision drop {_f(drop)} > {_f(k.max_precision_drop)} {detail}, but not "
                    f"less precise beyond chance (Fisher p {_f(less)} >= "
                    f"{_f(k.precision_p_value)})"
                )
        else:
            self.passes.append(f"precision drop {_f(drop)} <= {_f(k.max_precision_drop)}")

    def _overrides(self) -> None:
        c, k = self.c, self.k
        if k.max_override_rate is None:
            return
        settled = self.calls_in and self.labels_in
        if c.reviewed == 0:
            if settled:
                self.passes.append("override rate not judged: no reviewed suggestions")
            return
        before = len(self.failures)
        evidence = self.calls_in and c.reviewed >= k.min_labels
        self._bound(
            "override rate", c.overrides, c.reviewed, k.min_labels, k.max_override_rate, evidence
        )
        if settled and not evidence and len(self.failures) == before:
            self.passes.append(
                f"override rate not judged: {c.reviewed} reviewed suggestions < {k.min_labels}"
            )

    def _latency(self) -> None:
        c, champ, k = self.c, self.champ, self.k
        if k.max_latency_p95_ratio is None or not self.calls_in:
            return
        if self.shadow:
            # Shadow calls run on a background pool, contending with the requests they copy:
            # their latency is not what the candidate would answer in at the front.
            self.passes.append("latency not compared in shadow: shadow calls run in the background")
            return
        if champ.latency_p95_ms is None or c.latency_p95_ms is None:
            self.passes.append("latency not compared: the champion answered no calls")
            return
        floor = k.latency_floor_ms
        ratio = max(c.latency_p95_ms, floor) / max(champ.latency_p95_ms, floor, 1e-9)
        detail = f"({_f(c.latency_p95_ms)} ms against the champion's {_f(champ.latency_p95_ms)} ms)"
        slower = c.latency_slower_p
        if (
            ratio > k.max_latency_p95_ratio + _EPS
            and slower is not None
            and slower >= k.latency_p_value
        ):
            self.passes.append(
                f"latency p95 ratio {_f(ratio)} > {_f(k.max_latency_p95_ratio)} {detail}, but "
                f"not slower beyond chance (Mann-Whitney p {_f(slower)} >= {_f(k.latency_p_value)})"
            )
        elif ratio > k.max_latency_p95_ratio + _EPS:
            self.failures.append(
                f"latency p95 ratio {_f(ratio)} > {_f(k.max_latency_p95_ratio)} {detail}"
            )
        else:
            self.passes.append(
                f"latency p95 ratio {_f(ratio)} <= {_f(k.max_latency_p95_ratio)} {detail}"
            )

    def _cost(self) -> None:
        c, champ, k = self.c, self.champ, self.k
        if k.max_cost_ratio is None or not self.calls_in:
            return
        if champ.cost_per_decision is None or c.cost_per_decision is None:
            self.passes.append("cost not compared: the champion answered no calls")
            return
        mine, theirs = c.cost_per_decision, champ.cost_per_decision
        # A free champion: any cost at all is an infinite ratio, none at all the same cost.
        ratio = mine / theirs if theirs > 0 else (math.inf if mine > 0 else 1.0)
        detail = f"({_f(mine)} per decision against the champion's {_f(theirs)})"
        if ratio > k.max_cost_ratio + _EPS:
            self.failures.append(f"cost ratio {_f(ratio)} > {_f(k.max_cost_ratio)} {detail}")
        else:
            self.passes.append(f"cost ratio {_f(ratio)} <= {_f(k.max_cost_ratio)} {detail}")


# -- helpers ---------------------------------------------------------------------------------


def _less_precise(candidate: Figures, champion: Figures) -> float:
    """The p-value of "the candidate is less precise than the champion": the one-sided
    Fisher exact test of their right and wrong labelled decisions."""
    from scipy.stats import fisher_exact

    table = [
        [candidate.correct, candidate.labelled - candidate.correct],
        [champion.correct, champion.labelled - champion.correct],
    ]
    return float(fisher_exact(table, alternative="less").pvalue)


def _f(value: float) -> str:
    """A figure as reasons show it: three significant digits."""
    if math.isinf(value):
        return "inf"
    return f"{value:.3g}"


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, name: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= _MAX_COUNT:
        raise DefinitionError(
            f"criteria {name} must be a whole number from {least} to {_MAX_COUNT}"
        )


def _share(value: Any, name: str) -> None:
    if not (_real(value) and 0.0 <= value <= 1.0):
        raise DefinitionError(f"criteria {name} must be a number from 0 to 1")
