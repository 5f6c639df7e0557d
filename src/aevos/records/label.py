"""Labels, their conflicts, and the rows of a dataset version: plain values.

A label says what the right answer for a kept case was (CONTRACTS: a model call's case id is
its ``call_id``; a human task's is ``"task:" + task_id``). It comes from a reviewer deciding a
task (``review``), a person checking a sample of automated decisions (``qa``), or the world,
later (``ground_truth``: a claim's final outcome weeks on). Labels are never overwritten:
every one is a row, and where two disagree a :class:`LabelConflict` records it. Which label a
case has is decided by :func:`effective`: the highest-ranked source, then the latest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import LabelInputError

# A label is a JSON scalar: what a choice, text, number or boolean field holds.
LabelValue = str | int | float | bool
MAX_LABEL_CHARS = 1_000
MAX_CASE_ID = 230  # "task:" + a 220-character task id, or a 64-character call id


class LabelSource(StrEnum):
    REVIEW = "review"  # a reviewer decided a task that asked about the case
    QA = "qa"  # a person checked an automated decision, sampled at random
    GROUND_TRUTH = "ground_truth"  # the real outcome, reported later by API or CLI

    @property
    def rank(self) -> int:
        """Ground truth outranks people; a review and a QA answer rank the same."""
        return 2 if self is LabelSource.GROUND_TRUTH else 1


def check_label(value: Any) -> LabelValue:
    """``value`` if it can be a label (a JSON scalar, finite, text of bounded length)."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LabelInputError("label", "must be a finite number")
        return value
    if isinstance(value, str):
        if not value or len(value) > MAX_LABEL_CHARS:
            raise LabelInputError("label", f"must be 1 to {MAX_LABEL_CHARS} characters")
        return value
    raise LabelInputError("label", "must be a string, a number or a boolean")


def check_case_id(case_id: Any) -> str:
    if not isinstance(case_id, str) or not (0 < len(case_id) <= MAX_CASE_ID):
        raise LabelInputError("case_id", f"must be 1 to {MAX_CASE_ID} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in case_id):
        raise LabelInputError("case_id", "must not hold control characters")
    return case_id


def check_source(source: Any) -> LabelSource:
    try:
        return LabelSource(source)
    except ValueError:
        known = ", ".join(s.value for s in LabelSource)
        raise LabelInputError("source", f"must be one of {known}") from None


def same_label(a: LabelValue, b: LabelValue) -> bool:
    """Labels agree when they are equal as JSON (``1`` and ``True`` do not)."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class LabelRecord:
    """One label of a case, as recorded (never changed afterwards)."""

    id: int
    tenant: str
    case_id: str
    model: str | None  # the model whose call the case is (None: a task with no prediction)
    model_version: str | None  # "name@N" of the call, when known
    label: LabelValue
    source: LabelSource
    unbiased: bool  # the case was put to a person independently of the model's confidence
    run_id: str | None
    task_id: str | None
    feedback_id: int | None
    actor: str  # who gave it: the reviewer, or the principal that reported the ground truth
    labelled_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "case_id": self.case_id,
            "model": self.model,
            "model_version": self.model_version,
            "label": self.label,
            "source": self.source.value,
            "unbiased": self.unbiased,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "feedback_id": self.feedback_id,
            "actor": self.actor,
            "labelled_at": self.labelled_at,
        }


@dataclass(frozen=True)
class LabelConflict:
    """Two labels of one case that disagree. ``winner_id`` is the label the case has after
    the later one arrived (see :func:`effective`); neither label is changed."""

    id: int
    tenant: str
    case_id: str
    model: str | None
    label_id: int  # the label that arrived last
    other_id: int  # the earlier label it contradicts
    label: LabelValue
    other: LabelValue
    source: LabelSource
    other_source: LabelSource
    winner_id: int
    recorded_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "case_id": self.case_id,
            "model": self.model,
            "label_id": self.label_id,
            "other_id": self.other_id,
            "label": self.label,
            "other": self.other,
            "source": self.source.value,
            "other_source": self.other_source.value,
            "winner_id": self.winner_id,
            "recorded_at": self.recorded_at,
        }


def effective(labels: Iterable[LabelRecord]) -> LabelRecord | None:
    """The label a case has: of its highest-ranked source, the latest (by time, then id).

    So ground truth beats any reviewer's answer whenever it arrives, and of two ground
    truths the later one holds (an appeal's outcome replaces the first ruling); the
    disagreement stays on record as a :class:`LabelConflict` either way."""
    best: LabelRecord | None = None
    for label in labels:
        if best is None or (label.source.rank, label.labelled_at, label.id) > (
            best.source.rank,
            best.labelled_at,
            best.id,
        ):
            best = label
    return best


@dataclass(frozen=True)
class DatasetRow:
    """One case of a dataset version and the label it had when the version was taken."""

    case_id: str
    label: LabelValue
    source: LabelSource
    unbiased: bool
    run_id: str | None
    actor: str
    labelled_at: float

    def canonical(self) -> list[Any]:
        """The row as the digest sees it: a fixed order of JSON values."""
        return [
            self.case_id,
            self.label,
            self.source.value,
            self.unbiased,
            self.run_id,
            self.actor,
            self.labelled_at,
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "label": self.label,
            "source": self.source.value,
            "unbiased": self.unbiased,
            "run_id": self.run_id,
            "actor": self.actor,
            "labelled_at": self.labelled_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetRow:
        return cls(
            case_id=str(data["case_id"]),
            label=data["label"],
            source=LabelSource(data["source"]),
            unbiased=bool(data["unbiased"]),
            run_id=data.get("run_id"),
            actor=str(data["actor"]),
            labelled_at=float(data["labelled_at"]),
        )


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset version without its rows: what it is and where it came from.

    ``digest`` is the SHA-256 of its canonical rows and model, so the same rows are one
    version. ``runs`` and ``people`` count the distinct runs and actors its labels came from
    (the rows name each); ``until`` is the labelling time it was cut at (None: everything
    labelled when it was taken)."""

    digest: str
    tenant: str
    model: str
    rows: int
    runs: int
    people: int
    unbiased: int  # rows whose case was put to a person independently of confidence
    sources: dict[str, int]  # rows per label source
    until: float | None
    created_at: float
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "model": self.model,
            "rows": self.rows,
            "runs": self.runs,
            "people": self.people,
            "unbiased": self.unbiased,
            "sources": dict(self.sources),
            "until": self.until,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }
