"""``/v1/policies``: the application's policies, and what one decides on an input, and why.

Policies are code in the application's repository, loaded by the serving process, and the
same for every tenant; reading them needs ``policies:read``. Evaluating one here enforces
nothing and records nothing: it is ``aevos policy explain`` over HTTP, and its answer holds
the input's values, so it goes back only to the caller.
"""

from __future__ import annotations

import hashlib
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...errors import PolicyInputError
from ...policy import Decision, Explanation, Policy
from ...policy.engine import RulePolicy
from ..deps import AccessDep, PrincipalDep
from ..errors import body as error_body

router = APIRouter(prefix="/v1/policies", tags=["policies"])

NameParam = Annotated[str, Path(min_length=1, max_length=200)]
VersionQuery = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="This version (default: the newest).")
]


class PolicySummary(BaseModel):
    name: str
    version: int
    kind: str = Field(description="model_call, action or promotion")
    description: str
    digest: str = Field(description="sha256 of the file the policy was loaded from")
    rules: int | None = Field(description="How many rules; null for a Python policy.")
    inputs: int = Field(description="How many input fields it declares.")

    @classmethod
    def of(cls, policy: Policy) -> PolicySummary:
        return cls(
            name=policy.name,
            version=policy.version,
            kind=policy.kind,
            description=policy.description,
            digest=policy.digest,
            rules=len(policy.rules) if isinstance(policy, RulePolicy) else None,
            inputs=len(policy.inputs),
        )


class InputField(BaseModel):
    path: str
    type: str
    required: bool


class RuleOut(BaseModel):
    name: str = Field(description="The rule's name, or #<position> when it has none.")
    line: int | None
    when: str
    decision: str
    reason: str


class VerdictOut(BaseModel):
    decision: str
    reason: str


class PolicyOut(BaseModel):
    name: str
    version: int
    kind: str = Field(description="model_call, action or promotion")
    description: str
    digest: str = Field(description="sha256 of the file the policy was loaded from")
    language: str = Field(description="yaml or python")
    defined_at: str = Field(description="FILE:LINE (the file's name, not its server path)")
    inputs: list[InputField]
    rules: list[RuleOut] | None = Field(
        description="The rules in order (the first that matches decides); null for Python."
    )
    default: VerdictOut | None
    redact: list[str]
    source: str | None = Field(
        description="The text of the policy's file, when the file on disk still has the "
        "digest of what was loaded (null otherwise)."
    )

    @classmethod
    def of(cls, policy: Policy) -> PolicyOut:
        where = FilePath(policy.source).name
        rules: list[RuleOut] | None = None
        default: VerdictOut | None = None
        if isinstance(policy, RulePolicy):
            rules = [
                RuleOut(
                    name=rule.id,
                    line=rule.line,
                    when=rule.condition.text,
                    decision=rule.result,
                    reason=rule.reason,
                )
                for rule in policy.rules
            ]
            default = VerdictOut(decision=policy.default.result, reason=policy.default.reason)
        return cls(
            name=policy.name,
            version=policy.version,
            kind=policy.kind,
            description=policy.description,
            digest=policy.digest,
            language="yaml" if isinstance(policy, RulePolicy) else "python",
            defined_at=f"{where}:{policy.line}" if policy.line is not None else where,
            inputs=[
                InputField(path=f.path, type=f.type, required=not f.optional) for f in policy.inputs
            ],
            rules=rules,
            default=default,
            redact=list(policy.redact),
            source=_source(policy),
        )


def _source(policy: Policy) -> str | None:
    try:
        raw = FilePath(policy.source).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(raw).hexdigest() != policy.digest:
        return None  # changed since it was loaded: it is not what decides
    return raw.decode("utf-8", "replace")


class DecisionOut(BaseModel):
    """A policy decision as recorded (digests of the policy and input, never the input)."""

    decision_id: str
    policy: str
    version: int
    policy_digest: str
    kind: str
    input_digest: str
    result: str = Field(description="allow, deny, review or approve (by kind)")
    allowed: bool
    reason: str
    rule: str = Field(description="The deciding rule, or default.")
    redact: list[str]
    evaluated_at: float

    @classmethod
    def of(cls, decision: Decision) -> DecisionOut:
        return cls(**decision.to_record())


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="The input, as the policy declares it.")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class TraceStepOut(BaseModel):
    text: str
    value: Any


class RuleTraceOut(BaseModel):
    rule: str
    line: int | None
    when: str
    decision: str
    matched: bool | None = Field(description="null: it could not be evaluated (see error)")
    steps: list[TraceStepOut]
    error: str | None


class EvaluationOut(BaseModel):
    decision: DecisionOut
    values: dict[str, Any] = Field(description="The declared fields as the policy read them.")
    rules: list[RuleTraceOut] = Field(description="How each rule fared, in order.")
    note: str | None
    explanation: str = Field(description="The same, as the text `aevos policy explain` prints.")

    @classmethod
    def of(cls, explanation: Explanation) -> EvaluationOut:
        return cls(
            decision=DecisionOut.of(explanation.decision),
            values=dict(explanation.values),
            rules=[
                RuleTraceOut(
                    rule=trace.rule,
                    line=trace.line,
                    when=trace.when,
                    decision=trace.result,
                    matched=trace.matched,
                    steps=[TraceStepOut(text=s.text, value=s.value) for s in trace.steps],
                    error=trace.error,
                )
                for trace in explanation.rules
            ],
            note=explanation.note,
            explanation=explanation.render(),
        )


@router.get("")
def list_policies(access: AccessDep, principal: PrincipalDep) -> list[PolicySummary]:
    """Every loaded policy, by name then version."""
    return [PolicySummary.of(policy) for policy in access.policies.list(principal)]


@router.get("/{name}")
def get_policy(
    name: NameParam, access: AccessDep, principal: PrincipalDep, version: VersionQuery = None
) -> PolicyOut:
    """A policy's declaration: inputs, rules in order, default, redactions and source."""
    return PolicyOut.of(access.policies.get(principal, name, version))


@router.post(
    "/{name}/evaluate",
    response_model=EvaluationOut,
    responses={422: {"description": "A malformed body, or an input the policy refuses"}},
)
def evaluate(
    name: NameParam, body: EvaluateRequest, access: AccessDep, principal: PrincipalDep
) -> EvaluationOut | JSONResponse:
    """Decide on ``input`` and explain the decision rule by rule; enforces nothing."""
    try:
        explanation = access.policies.explain(principal, name, body.input, version=body.version)
    except PolicyInputError as exc:
        # Named like any invalid field of the body: input.<the declared path>.
        path = exc.field or "input"
        field = (
            path if path == "input" or path.startswith(("input.", "input[")) else f"input.{path}"
        )
        return JSONResponse(
            error_body(exc.code, exc.message, fields=[{"field": field, "problem": exc.message}]),
            status_code=422,
        )
    return EvaluationOut.of(explanation)
