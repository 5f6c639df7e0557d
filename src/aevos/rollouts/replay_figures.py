"""What a replay measures and how it is judged: the tally of one batch, the figures of a
whole replay, and :class:`ReplayCriteria`.

A batch's tally is counts and sums (and the candidate's latencies), so the figures of a
replay are the same whichever batches a crash made it resume at. The figures:

- ``cases``: kept cases listed in the window (newest first, up to the limit);
  ``expired``: listed but gone or past their retention when their batch read them;
  ``decided``: re-decided by the candidate; ``errors``: the candidate raised on them;
- ``agreement``: of the decided cases with a champion answer (``agreement_n``), the share
  where the candidate answers as the champion did. The champion's answer is the label of
  the case's ``model.called`` record when the champion answered it in production
  (``champion_recorded``); otherwise the champion version decides the case too
  (``champion_decided``) — ``champion_source`` says which ("recorded", "decided",
  "mixed", or None without a champion);
- ``labelled``: decided cases with an effective label (ground truth outranks reviewers);
  ``accuracy`` and ``champion_accuracy`` on them (``champion_labelled``: those the champion
  answered); None without labelled cases;
- ``threshold``: the candidate's certified threshold; ``above_threshold``: the share of
  decided cases whose confidence reaches it (None without a threshold);
- ``latency_p50_ms``/``latency_p95_ms`` of the candidate's calls; ``cost``: their summed
  ``prediction.cost``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ReplayInputError
from ..telemetry.metrics import percentile

_COUNTS = (
    "listed",
    "expired",
    "decided",
    "errors",
    "compared",
    "agreed",
    "champion_recorded",
    "champion_decided",
    "labelled",
    "correct",
    "champion_labelled",
    "champion_correct",
    "above",
)


#: Labelled cases on which a candidate at least as accurate as the champion is excused a low
#: agreement with it (the rollout analysis's rule too).
EXCUSE_LABELS = 30


@dataclass(frozen=True)
class ReplayCriteria:
    """What a replay must show to pass.

    ``min_cases`` decided cases at least (fewer: inconclusive, neither passed nor failed);
    ``min_agreement`` with the champion's answers (excused on at least ``EXCUSE_LABELS``
    labelled cases where the candidate is at least as accurate); on labelled cases an accuracy at most
    ``max_accuracy_drop`` below the champion's; and, with ``require_no_error``, no case on
    which the candidate raised."""

    min_cases: int = 50
    min_agreement: float = 0.8
    max_accuracy_drop: float = 0.02
    require_no_error: bool = True

    def __post_init__(self) -> None:
        if (
            isinstance(self.min_cases, bool)
            or not isinstance(self.min_cases, int)
            or not 1 <= self.min_cases <= 10_000
        ):
            raise ReplayInputError("min_cases must be an integer from 1 to 10000", "min_cases")
        for name in ("min_agreement", "max_accuracy_drop"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise ReplayInputError(f"{name} must be a number from 0 to 1", name)
        if not isinstance(self.require_no_error, bool):
            raise ReplayInputError("require_no_error is true or false", "require_no_error")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplayCriteria:
        if not isinstance(data, Mapping):
            raise ReplayInputError("criteria is an object", "criteria")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ReplayInputError(
                f"unknown criteria {', '.join(map(str, unknown))[:200]}; known: "
                + ", ".join(cls.__dataclass_fields__),
                "criteria",
            )
        return cls(**data)


def empty_tally() -> dict[str, Any]:
    return {**dict.fromkeys(_COUNTS, 0), "latencies": [], "cost": 0.0}


def figures(
    tallies: Sequence[Mapping[str, Any]], *, threshold: float | None, champion: int | None
) -> dict[str, Any]:
    """The figures of a replay from its batches' tallies."""
    total = empty_tally()
    for tally in tallies:
        for name in _COUNTS:
            total[name] += int(tally[name])
        total["latencies"].extend(float(x) for x in tally["latencies"])
        total["cost"] += float(tally["cost"])
    latencies = sorted(total["latencies"])
    decided = total["decided"]

    def share(part: int, whole: int) -> float | None:
        return None if whole == 0 else part / whole

    recorded, redecided = total["champion_recorded"], total["champion_decided"]
    if champion is None or recorded + redecided == 0:
        source = None
    elif redecided == 0:
        source = "recorded"
    else:
        source = "decided" if recorded == 0 else "mixed"
    return {
        "cases": total["listed"],
        "expired": total["expired"],
        "decided": decided,
        "errors": total["errors"],
        "agreement": share(total["agreed"], total["compared"]),
        "agreement_n": total["compared"],
        "champion_source": source,
        "champion_recorded": recorded,
        "champion_decided": redecided,
        "labelled": total["labelled"],
        "accuracy": share(total["correct"], total["labelled"]),
        "champion_labelled": total["champion_labelled"],
        "champion_accuracy": share(total["champion_correct"], total["champion_labelled"]),
        "threshold": threshold,
        "above_threshold": None if threshold is None else share(total["above"], decided),
        "latency_p50_ms": _rounded(percentile(latencies, 0.5)),
        "latency_p95_ms": _rounded(percentile(latencies, 0.95)),
        "cost": round(total["cost"], 9),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def judge(found: Mapping[str, Any], criteria: ReplayCriteria) -> tuple[str, bool | None, str]:
    """``(status, passed, reason)`` of a finished replay's figures: "failed" on the first
    criterion missed, "inconclusive" with too few decided cases, else "passed"."""
    decided, errors = found["decided"], found["errors"]
    if criteria.require_no_error and errors:
        return "failed", False, f"the candidate raised on {errors} of {found['cases']} cases"
    if decided < criteria.min_cases:
        return (
            "inconclusive",
            None,
            f"{decided} cases decided of {found['cases']} listed ({found['expired']} expired, "
            f"{errors} errors); {criteria.min_cases} needed",
        )
    notes = []
    agreement = found["agreement"]
    accuracy, champion = found["accuracy"], found["champion_accuracy"]
    # A candidate that corrects a weak champion disagrees with it: on enough labelled cases,
    # being at least as accurate answers for the disagreement (as in a rollout's analysis).
    corrects = (
        accuracy is not None
        and champion is not None
        and found["labelled"] >= EXCUSE_LABELS
        and accuracy >= champion
    )
    if agreement is None:
        notes.append("no champion to agree with")
    elif agreement < criteria.min_agreement and corrects:
        notes.append(
            f"agreement {agreement:.3f} < {criteria.min_agreement:g} excused: accuracy "
            f"{accuracy:.3f} >= the champion's {champion:.3f} on {found['labelled']} labelled cases"
        )
    elif agreement < criteria.min_agreement:
        return (
            "failed",
            False,
            f"agreement with the champion {agreement:.3f} < {criteria.min_agreement:g} "
            f"on {found['agreement_n']} cases",
        )
    if accuracy is None or champion is None:
        notes.append("no labelled cases to compare accuracy on")
    elif accuracy < champion - criteria.max_accuracy_drop:
        return (
            "failed",
            False,
            f"accuracy {accuracy:.3f} on {found['labelled']} labelled cases is more than "
            f"{criteria.max_accuracy_drop:g} below the champion's {champion:.3f}",
        )
    reason = f"{decided} cases decided, every criterion met"
    return "passed", True, reason + ("; " + "; ".join(notes) if notes else "")
