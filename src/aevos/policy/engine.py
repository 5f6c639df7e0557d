"""Evaluating policies: decisions, rule policies, and explanations of a decision.

A :class:`Policy` takes an input mapping, validates it against the declared fields and
returns a :class:`Decision`: what was decided, by which rule and why, with digests of the
policy and of the input so an audit record proves what was evaluated without holding the
input itself. :meth:`Policy.explain` evaluates the same way and also returns the trace.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DefinitionError, PolicyEvaluationError
from .expression import Condition, TraceStep
from .inputs import InputSpec, input_digest, normalize

#: The enforcement points and the results each allows. ``review`` (an action) and
#: ``approve`` (a promotion) mean that a person must decide.
KINDS: Mapping[str, tuple[str, ...]] = {
    "model_call": ("allow", "deny"),
    "action": ("allow", "review", "deny"),
    "promotion": ("allow", "approve", "deny"),
}


@dataclass(frozen=True)
class Decision:
    """One evaluation of a policy, as recorded: ``to_record()`` is its audit payload."""

    decision_id: str
    policy: str
    version: int
    policy_digest: str  # sha256 of the policy file
    kind: str
    input_digest: str  # sha256 of the input's canonical JSON; the input itself is not kept
    result: str
    allowed: bool  # result == "allow"
    reason: str
    rule: str  # the deciding rule's name, "#<position>" if unnamed, or "default"
    redact: tuple[str, ...]  # model_call: fields to redact before the model sees them
    evaluated_at: float  # seconds since the epoch

    @property
    def needs_human(self) -> bool:
        """The policy asks a person to decide (``review`` or ``approve``)."""
        return self.result in ("review", "approve")

    def to_record(self) -> dict[str, Any]:
        """JSON-able fields for the audit log and for a durable step's output."""
        return {
            "decision_id": self.decision_id,
            "policy": self.policy,
            "version": self.version,
            "policy_digest": self.policy_digest,
            "kind": self.kind,
            "input_digest": self.input_digest,
            "result": self.result,
            "allowed": self.allowed,
            "reason": self.reason,
            "rule": self.rule,
            "redact": list(self.redact),
            "evaluated_at": self.evaluated_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Decision:
        """The decision that :meth:`to_record` produced (e.g. replayed from a step's output)."""
        return cls(
            decision_id=record["decision_id"],
            policy=record["policy"],
            version=int(record["version"]),
            policy_digest=record["policy_digest"],
            kind=record["kind"],
            input_digest=record["input_digest"],
            result=record["result"],
            allowed=bool(record["allowed"]),
            reason=record["reason"],
            rule=record["rule"],
            redact=tuple(record["redact"]),
            evaluated_at=float(record["evaluated_at"]),
        )


@dataclass(frozen=True)
class Verdict:
    """A result with its reason: what a rule, the default or a Python policy decides.

    ``rule`` names the branch that decided (Python policies may set it for tests to check);
    ``redact`` adds fields to redact to those the policy declares.
    """

    result: str
    reason: str
    rule: str | None = None
    redact: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleTrace:
    """How one rule fared: whether it matched, and every sub-expression it evaluated."""

    rule: str
    line: int | None
    when: str
    result: str
    matched: bool | None  # None: it could not be evaluated (see ``error``)
    steps: tuple[TraceStep, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Explanation:
    """Why a decision came out as it did; ``render()`` is a plain-text report.

    Unlike a :class:`Decision` it holds the input's values (they are the explanation): show
    it to whoever asked, never log or audit it.
    """

    decision: Decision
    source: str
    values: Mapping[str, Any]  # the declared fields as the policy read them
    rules: tuple[RuleTrace, ...] = ()
    note: str | None = None  # what cannot be traced (a Python policy's body)

    def render(self) -> str:
        d = self.decision
        lines = [
            f"policy {d.policy} v{d.version} ({d.kind}) from {self.source}",
            f"  policy sha256 {d.policy_digest}",
            f"  input sha256  {d.input_digest}",
            "input:",
            *(f"  {path} = {_show(value)}" for path, value in self.values.items()),
        ]
        if not self.values:
            lines.append("  (no declared fields)")
        if self.rules:
            lines.append("rules (the first that matches decides):")
        decided = False
        for position, trace in enumerate(self.rules, 1):
            deciding = trace.rule == d.rule and not decided
            if trace.error is not None:
                status = f"error: {trace.error}"
            elif deciding:
                status = "MATCHED, decides"
            elif trace.matched:
                status = "would match, but an earlier rule decided"
            else:
                status = "not matched"
            decided = decided or deciding
            name = trace.rule if trace.rule == f"#{position}" else f"#{position} {trace.rule}"
            at = f" (line {trace.line})" if trace.line is not None else ""
            lines.append(f"  {name}{at} -> {trace.result}: {status}")
            lines.append(f"      when {trace.when}")
            for step in trace.steps:
                if step.text == trace.when:
                    continue  # the whole condition: its value is `status` above
                sep = "=" if step.text in self.values else "->"
                lines.append(f"        {step.text} {sep} {_show(step.value)}")
        if self.rules and d.rule == "default":
            lines.append(f"  default -> {d.result}: no rule matched")
        if self.note:
            lines.append(self.note)
        lines.append(f"decision: {d.result} (rule {d.rule}): {d.reason}")
        if d.redact:
            lines.append(f"redact before the model call: {', '.join(d.redact)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def _show(value: Any) -> str:
    return repr(value)


@dataclass(frozen=True)
class CaseRetention:
    """Whether the inputs of the models a ``model_call`` policy governs are kept as cases
    (:mod:`aevos.cases`), and for how many days (``None``: until deleted).

    Declared once per policy (``cases: {keep: true, retention_days: 30}`` in YAML,
    ``python_policy(..., cases=CaseRetention(...))``); a model that no policy governs, or
    whose policy declares nothing, keeps its cases for :attr:`DEFAULT_DAYS` days.
    """

    keep: bool = True
    retention_days: float | None = 90.0

    DEFAULT_DAYS = 90.0

    def __post_init__(self) -> None:
        if not isinstance(self.keep, bool):
            raise DefinitionError("cases.keep must be true or false")
        days = self.retention_days
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 36_500
        ):
            raise DefinitionError(
                "cases.retention_days must be a number of days in (0, 36500], or null to keep "
                "cases until they are deleted"
            )

    @property
    def seconds(self) -> float | None:
        """The retention in seconds (None: no expiry)."""
        return None if self.retention_days is None else float(self.retention_days) * 86_400.0

    def to_record(self) -> dict[str, Any]:
        return {"keep": self.keep, "retention_days": self.retention_days}


class Policy(ABC):
    """A loaded policy of one enforcement point (``kind``); evaluate it on an input."""

    def __init__(
        self,
        *,
        name: str,
        version: int,
        kind: str,
        inputs: InputSpec,
        digest: str,
        source: str,
        line: int | None = None,
        description: str = "",
        redact: tuple[str, ...] = (),
        cases: CaseRetention | None = None,
    ) -> None:
        if cases is not None and kind != "model_call":
            raise DefinitionError(f"policy {name}: only model_call policies keep cases")
        self.name = name
        self.version = version
        self.kind = kind
        self.inputs = inputs
        self.digest = digest
        self.source = source
        self.line = line
        self.description = description
        self.redact = redact
        #: model_call: whether (and how long) the governed models' cases are kept.
        self.cases = cases

    @property
    def location(self) -> str:
        """``file:line`` where the policy is defined."""
        return f"{self.source}:{self.line}" if self.line is not None else self.source

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} v{self.version} ({self.kind}) {self.location}>"

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        """Decide on ``input``; PolicyInputError if it does not match the declaration."""
        data, values = self._prepare(input)
        return self._decision(data, self._decide(values, None))

    def explain(self, input: Mapping[str, Any]) -> Explanation:
        """Decide on ``input`` as :meth:`evaluate` does, and say how."""
        data, values = self._prepare(input)
        traces: list[RuleTrace] = []
        decision = self._decision(data, self._decide(values, traces))
        return Explanation(decision, self.location, values, tuple(traces), self._note(decision))

    @abstractmethod
    def _decide(self, values: dict[str, Any], traces: list[RuleTrace] | None) -> Verdict:
        """The verdict on the declared fields' ``values``; fills ``traces`` when given."""

    def _note(self, decision: Decision) -> str | None:
        return None

    def _prepare(self, input: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        data = normalize(input)
        return data, self.inputs.validate(data, f"{self.name} v{self.version}")

    def _decision(self, data: Any, verdict: Verdict) -> Decision:
        redact = tuple(dict.fromkeys((*self.redact, *verdict.redact)))
        return Decision(
            decision_id=uuid.uuid4().hex,
            policy=self.name,
            version=self.version,
            policy_digest=self.digest,
            kind=self.kind,
            input_digest=input_digest(data),
            result=verdict.result,
            allowed=verdict.result == "allow",
            reason=verdict.reason,
            rule=verdict.rule or "default",
            redact=redact,
            evaluated_at=time.time(),
        )


@dataclass(frozen=True)
class Rule:
    """``when`` the condition holds, decide ``result`` because ``reason``."""

    id: str  # the rule's name, or "#<position>" (from 1) when it has none
    condition: Condition
    result: str
    reason: str
    line: int | None = field(default=None, compare=False)


class RulePolicy(Policy):
    """A declarative policy: rules in order, the first that matches decides, else default."""

    def __init__(self, *, rules: tuple[Rule, ...], default: Verdict, **common: Any) -> None:
        super().__init__(**common)
        self.rules = rules
        self.default = Verdict(default.result, default.reason, "default")

    def _decide(self, values: dict[str, Any], traces: list[RuleTrace] | None) -> Verdict:
        decided: Verdict | None = None
        for rule in self.rules:
            steps: list[TraceStep] | None = [] if traces is not None else None
            matched: bool | None
            message: str | None = None
            try:
                matched = rule.condition.evaluate(values, steps)
            except PolicyEvaluationError as exc:
                error = PolicyEvaluationError(
                    f"policy {self.name} v{self.version}, rule {rule.id} "
                    f"({self.source}:{rule.line}): {exc.message}"
                )
                if decided is None:
                    raise error from None
                # Past the deciding rule, an explanation reports the error instead.
                matched, message = None, error.message
            if traces is not None:
                traces.append(
                    RuleTrace(
                        rule.id,
                        rule.line,
                        rule.condition.text,
                        rule.result,
                        matched,
                        tuple(steps or ()),
                        message,
                    )
                )
            if matched and decided is None:
                decided = Verdict(rule.result, rule.reason, rule.id)
                if traces is None:
                    break
        return decided or self.default
