"""Human tasks: what a workflow asks a person, the form they fill, and what they decided.

A workflow calls ``ctx.ask_human(...)`` with a :class:`Form` (the fields to fill, pre-filled
with the model's suggestion); the task waits in an inbox queue for a person of the right
role, the run waits durably (for days if need be), and the submission resumes it as a
:class:`HumanDecision`. Each submission is also a :class:`Feedback` record: what the model
said, what the person decided, who and when, with lineage to the run and the model version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from ..errors import DefinitionError, TaskInputError

FieldKind = Literal["choice", "text", "number", "boolean"]
_KINDS = ("choice", "text", "number", "boolean")
_MAX_TEXT = 10_000
# A task's priority is within +-MAX_PRIORITY; each escalation adds ESCALATION_BOOST, which puts
# an escalated task ahead of every task escalated fewer times, and keeps MAX_ESCALATIONS of
# them in a 32-bit column.
MAX_PRIORITY = 1_000_000
ESCALATION_BOOST = 2 * MAX_PRIORITY
MAX_ESCALATIONS = 10


class TaskStatus(StrEnum):
    OPEN = "OPEN"  # waiting in its queue for someone to claim it
    CLAIMED = "CLAIMED"  # a person is working it
    SUBMITTED = "SUBMITTED"  # decided; the run has (or will have) resumed
    CANCELLED = "CANCELLED"  # its run was cancelled
    EXPIRED = "EXPIRED"  # nobody decided before the workflow's timeout

    @property
    def closed(self) -> bool:
        return self in (TaskStatus.SUBMITTED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)


@dataclass(frozen=True)
class Field:
    """One field of a task's form.

    ``choice`` fields take one of ``choices``; ``number`` fields a finite number within
    ``minimum``/``maximum``; ``text`` at most ``max_length`` characters; ``boolean`` true or
    false. An optional field may be left out (or null).
    """

    name: str
    kind: FieldKind = "text"
    choices: tuple[str, ...] = ()
    required: bool = True
    label: str | None = None
    help: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = _MAX_TEXT

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise DefinitionError(
                f"form field name {self.name!r} must be letters, digits, '_' or '-'"
            )
        if self.kind not in _KINDS:
            raise DefinitionError(f"form field {self.name!r}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise DefinitionError(f"form field {self.name!r}: a choice needs choices")
        if self.kind != "choice" and self.choices:
            raise DefinitionError(f"form field {self.name!r}: only a choice has choices")
        object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))

    @classmethod
    def choice(cls, name: str, choices: Sequence[str], **options: Any) -> Field:
        return cls(name, "choice", tuple(choices), **options)

    @classmethod
    def text(cls, name: str, **options: Any) -> Field:
        return cls(name, "text", **options)

    @classmethod
    def number(cls, name: str, **options: Any) -> Field:
        return cls(name, "number", **options)

    @classmethod
    def boolean(cls, name: str, **options: Any) -> Field:
        return cls(name, "boolean", **options)

    def check(self, value: Any) -> Any:
        """``value`` as stored, or TaskInputError naming this field."""
        if value is None:
            if self.required:
                raise TaskInputError(self.name, "is required")
            return None
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise TaskInputError(self.name, "must be one of the form's choices")
            return value
        if self.kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off"):
                return value.lower() in ("true", "on")
            raise TaskInputError(self.name, "must be true or false")
        if self.kind == "number":
            number = _number(value)
            if number is None:
                raise TaskInputError(self.name, "must be a finite number")
            if self.minimum is not None and number < self.minimum:
                raise TaskInputError(self.name, f"must be at least {self.minimum}")
            if self.maximum is not None and number > self.maximum:
                raise TaskInputError(self.name, f"must be at most {self.maximum}")
            return number
        if not isinstance(value, str):
            raise TaskInputError(self.name, "must be text")
        if len(value) > self.max_length:
            raise TaskInputError(self.name, f"must be at most {self.max_length} characters")
        if self.required and not value.strip():
            raise TaskInputError(self.name, "is required")
        return value

    def normalise(self, value: Any) -> Any:
        """A suggested value in the form a submission of it takes (a model's label 1 for a
        choice of "0"/"1" is "1"), so accepting a suggestion never reads as overriding it.
        Values the field would refuse are kept as they are: they are shown, not enforced."""
        if value is None:
            return None
        if self.kind == "choice" and not isinstance(value, bool | dict | list):
            return str(value)
        if self.kind == "number":
            number = _number(value)
            return value if number is None else number
        if self.kind == "boolean" and isinstance(value, str):
            lowered = value.lower()
            return lowered in ("true", "on") if lowered in ("true", "false", "on", "off") else value
        return value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "required": self.required}
        for key in ("label", "help", "minimum", "maximum"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices:
            out["choices"] = list(self.choices)
        if self.kind == "text" and self.max_length != _MAX_TEXT:
            out["max_length"] = self.max_length
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        return cls(
            name=str(data["name"]),
            kind=data.get("kind", "text"),
            choices=tuple(data.get("choices", ())),
            required=bool(data.get("required", True)),
            label=data.get("label"),
            help=data.get("help"),
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
            max_length=int(data.get("max_length", _MAX_TEXT)),
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int past any float: not a finite number
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Form:
    """The fields a person fills to decide a task."""

    fields: tuple[Field, ...]

    def __init__(self, fields: Sequence[Field]) -> None:
        if not fields:
            raise DefinitionError("a form needs at least one field")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise DefinitionError(f"form field names repeat: {names}")
        object.__setattr__(self, "fields", tuple(fields))

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The submitted ``values`` checked and normalised; TaskInputError names the first
        field at fault (an unknown field, a missing one, a wrong value)."""
        if not isinstance(values, Mapping):
            raise TaskInputError("values", "must be an object of field values")
        known = {f.name for f in self.fields}
        for name in values:
            if name not in known:
                raise TaskInputError(str(name), "is not a field of this form")
        return {f.name: f.check(values.get(f.name)) for f in self.fields}

    def check_suggestion(self, suggestion: Mapping[str, Any]) -> dict[str, Any]:
        """A suggestion names fields of the form; its values are shown, not enforced
        (a model may suggest a label the form no longer offers)."""
        by_name = {f.name: f for f in self.fields}
        unknown = [name for name in suggestion if name not in by_name]
        if unknown:
            raise DefinitionError(f"suggestion names fields not in the form: {unknown}")
        return {name: by_name[name].normalise(value) for name, value in suggestion.items()}

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.fields]

    @classmethod
    def from_list(cls, data: Sequence[Mapping[str, Any]]) -> Form:
        return cls([Field.from_dict(item) for item in data])


@dataclass(frozen=True)
class Task:
    """A human task as stored: its form, the case, the suggestion and where it stands."""

    task_id: str
    tenant: str
    run_id: str
    workflow: str
    seq: int
    title: str
    queue: str
    role: str
    status: TaskStatus
    priority: int
    form: Form
    case: Any
    suggestion: dict[str, Any] | None
    confidence: float | None
    model: str | None
    model_version: str | None
    input_digest: str | None
    call_id: str | None
    assignee: str | None
    claimed_at: float | None
    sla_seconds: float | None
    due_at: float | None
    escalate_to: str | None  # the first queue it escalates to (None: its own)
    escalated_at: float | None  # when it last escalated
    result: dict[str, Any] | None
    submitted_by: str | None
    submitted_at: float | None
    created_at: float
    updated_at: float
    # The queues its escalations move it to, in order; how many it has and has had.
    escalation_chain: tuple[str, ...] = ()
    escalations: int = 0
    escalation_level: int = 0
    # "review": a run waits for the answer; "qa": a sample of automated decisions, asked
    # without holding the run. ``unbiased``: asked independently of the model's confidence.
    # ``label_field``: the field the prediction's suggestion filled; its value is the label.
    purpose: str = "review"
    unbiased: bool = False
    label_field: str | None = None

    @property
    def escalated(self) -> bool:
        return self.escalation_level > 0 or self.escalated_at is not None

    def overdue(self, now: float) -> bool:
        return not self.status.closed and self.due_at is not None and now >= self.due_at


@dataclass(frozen=True)
class HumanDecision:
    """What ``ctx.ask_human`` returns: the submitted values, who decided and when.

    ``decision["field"]`` reads a value. ``overridden`` is True when any suggested value was
    changed.
    """

    task_id: str
    values: dict[str, Any]
    reviewer: str
    decided_at: float
    overridden: bool

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "values": self.values,
            "reviewer": self.reviewer,
            "decided_at": self.decided_at,
            "overridden": self.overridden,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HumanDecision:
        return cls(
            task_id=str(data["task_id"]),
            values=dict(data["values"]),
            reviewer=str(data["reviewer"]),
            decided_at=float(data["decided_at"]),
            overridden=bool(data["overridden"]),
        )


@dataclass(frozen=True)
class Feedback:
    """A human decision on a suggestion: labelled data with lineage."""

    id: int
    tenant: str
    task_id: str
    run_id: str
    workflow: str
    seq: int
    model: str | None
    model_version: str | None
    input_digest: str | None
    call_id: str | None
    suggestion: dict[str, Any] | None
    confidence: float | None
    decision: dict[str, Any]
    overridden: bool
    reviewer: str
    asked_at: float
    decided_at: float
    purpose: str = "review"  # "review" or "qa"
    unbiased: bool = False  # asked independently of the model's confidence


def overridden(suggestion: Mapping[str, Any] | None, decision: Mapping[str, Any]) -> bool:
    """True when the person changed any value the suggestion proposed."""
    if not suggestion:
        return False
    return any(decision.get(name) != value for name, value in suggestion.items())


@dataclass(frozen=True)
class TaskRequest:
    """What a workflow asks for; built and checked before anything is recorded."""

    title: str
    form: Form
    case: Any = None
    suggestion: dict[str, Any] | None = None
    confidence: float | None = None
    model: str | None = None
    model_version: str | None = None
    input_digest: str | None = None
    call_id: str | None = None
    queue: str = "review"
    role: str = "reviewer"
    priority: int = 0
    sla_seconds: float | None = None
    escalate_to: tuple[str, ...] = ()  # one queue per escalation level
    purpose: str = "review"  # or "qa": a sample of automated decisions, nobody waits
    unbiased: bool = False
    label_field: str | None = None  # the field whose submitted value is the case's label
