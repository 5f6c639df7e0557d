"""Model calls under policy: the ``model_call`` policy the gateway applies to every call.

Which policy governs a model: the one named for it (``gateway.set_policy("support-llm",
"llm-access")``), else the app's policy named ``model-access`` when it has one. An app
with no policies configured, or none by that name, calls its models without a decision,
as before (its run inputs are still protected by their data policies).

Each model call (each attempt: primary, canary, cascade stage, fallback, shadow, since
each may reach a different model) is decided on a standard input, so any ``model_call``
policy can declare the fields it reads from it::

    tenant: string               # the caller's tenant
    actor.role: string           # admin | operator | service ... (workflows call as service)
    actor.name: string           # the audit actor: system:workflow/<name>, <role>:<name>#<id>
    model.name: string
    model.version: integer
    model.flavor: string         # sklearn | rules | ocr | embedding | openai ...
    model.provider: string       # local | external (see provider_of)
    model.certified_threshold?: number  # the version's certified threshold; null: none
    data.classification: string  # the workflow's data policy's, or the caller's
    workflow?: string            # absent outside workflows

``allow`` lets the call through with the decision's ``redact`` fields redacted in the input
the model sees; ``deny`` refuses it (:class:`~aevos.errors.ModelAccessDeniedError`).
Either way the decision is a ``policy.decided`` audit record linked to the call by its
``call_id`` (and the ``model.called`` record names the decision).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import DefinitionError, PolicyNotFoundError

if TYPE_CHECKING:
    from ..pii import Redactor
    from .engine import Decision, Policy
    from .policyset import PolicySet

DEFAULT_POLICY = "model-access"
_CACHE_SIZE = 4096
#: Flavors whose models run outside this deployment unless a version says otherwise.
EXTERNAL_FLAVORS = frozenset({"openai"})


def provider_of(flavor: str, config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """``local`` or ``external`` for a model version: its ``provider`` tag, else a
    ``provider`` key of its config, else ``external`` for HTTP flavors (``openai``) and
    ``local`` for the rest. Tag a self-hosted vLLM version ``provider=local``."""
    declared = tags.get("provider") or config.get("provider")
    if isinstance(declared, str) and declared:
        return declared
    return "external" if flavor in EXTERNAL_FLAVORS else "local"


@dataclass(frozen=True)
class ModelCallCheck:
    """One model call as a ``model_call`` policy sees it (the check's input)."""

    tenant: str
    actor: str
    role: str
    model: str
    version: int
    flavor: str
    provider: str
    classification: str = "internal"
    workflow: str | None = None
    certified_threshold: float | None = None

    def policy_input(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tenant": self.tenant,
            "actor": {"role": self.role, "name": self.actor},
            "model": {
                "name": self.model,
                "version": self.version,
                "flavor": self.flavor,
                "provider": self.provider,
                "certified_threshold": self.certified_threshold,
            },
            "data": {"classification": self.classification},
        }
        if self.workflow is not None:
            data["workflow"] = self.workflow
        return data


@dataclass(frozen=True)
class Clearance:
    """A decision on one model call, and the input the model may see (redacted)."""

    decision: Decision
    input: Any


class ModelCallGate:
    """Finds the ``model_call`` policy of a model and decides calls with it.

    ``policies`` returns the app's policies, or None when it has none configured;
    ``redactor`` the redactor that applies a decision's ``redact`` fields.
    """

    def __init__(
        self,
        policies: Callable[[], PolicySet | None],
        redactor: Callable[[], Redactor],
        *,
        default: str | None = DEFAULT_POLICY,
    ) -> None:
        self._policies = policies
        self._redactor = redactor
        self.default = default
        self._named: dict[str, str] = {}
        # Verdicts of declarative policies by (policy, check): a rule policy is a pure
        # function of its input, and a call's input is the check, so the same caller,
        # model and data get the same verdict; each call still gets its own decision id.
        self._verdicts: dict[tuple[str, int, str, ModelCallCheck], Decision] = {}

    def set_policy(self, model: str, policy: str) -> None:
        """Govern calls to ``model`` by ``policy`` instead of the default one."""
        if not isinstance(policy, str) or not policy:
            raise DefinitionError("set_policy needs the name of a model_call policy")
        self._named[model] = policy

    def policy_for(self, model: str) -> Policy | None:
        """The policy that governs calls to ``model``, or None when none does."""
        named = self._named.get(model)
        policies = self._policies()
        if named is None:
            if policies is None or self.default is None or self.default not in policies:
                return None
            named = self.default
        elif policies is None:
            raise PolicyNotFoundError(
                f"calls to model {model!r} are governed by policy {named!r}, but the app has "
                "no policies configured (Aevos(policies=...) or AEVOS_POLICY_DIR)"
            )
        policy = policies.get(named)
        if policy.kind != "model_call":
            raise DefinitionError(
                f"policy {policy.name!r} governs model calls but is a {policy.kind} policy "
                f"({policy.location}); model calls need kind: model_call"
            )
        return policy

    def clear(self, policy: Policy, check: ModelCallCheck, input: Any) -> Clearance:
        """``policy``'s decision on a call and, when it is allowed, the input with the
        decision's fields redacted (``input`` itself is never changed)."""
        decision = self._decide(policy, check)
        if not decision.allowed:
            return Clearance(decision, None)
        return Clearance(decision, redact_for_model(input, decision.redact, self._redactor()))

    def _decide(self, policy: Policy, check: ModelCallCheck) -> Decision:
        from .engine import RulePolicy

        if not isinstance(policy, RulePolicy):
            # A Python policy may read more than its input (the clock): decided every time.
            return policy.evaluate(check.policy_input())
        key = (policy.name, policy.version, policy.digest, check)
        known = self._verdicts.get(key)
        if known is None:
            known = policy.evaluate(check.policy_input())
            if len(self._verdicts) >= _CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[key] = known
        return replace(known, decision_id=uuid.uuid4().hex, evaluated_at=time.time())


def redact_for_model(value: Any, fields: tuple[str, ...], redactor: Redactor) -> Any:
    """``value`` with ``fields`` (dotted paths) redacted. An input that is text, or a list,
    has no fields to name: any ``redact`` list redacts all its text (failing closed, rather
    than letting a model see what a policy meant to hide). Other values (bytes, arrays)
    pass as they are."""
    if not fields:
        return value
    if isinstance(value, Mapping):
        return redactor.redact_value(value, fields=fields)
    if isinstance(value, str | list | tuple):
        return redactor.redact_value(value)
    return value
