"""Errors of the model registry, model calls and the gateway."""

from __future__ import annotations

from typing import Any

from .base import AevosError

# -- model registry -------------------------------------------------------------------------
#     ModelNotFoundError      no such model, version or alias (the message lists what exists)
#     NoPreviousVersionError  a rollback of an alias that has nowhere to go back to
#     ArtifactIntegrityError  an artifact's bytes no longer hash to its version's digest
#     UnsafeArtifactError     an artifact that would run code when loaded (a pickle, untrusted types)
#     InvalidArtifactError    bytes that are not in the format their flavor reads
#     └── InvalidCompositeError  a composite manifest that cannot serve (malformed, parts that
#         │                      disagree on their classes, a chain that does not fit)
#         └── UnknownPartError   a manifest naming a part neither given nor in the blob store


class ModelNotFoundError(AevosError, LookupError):
    code = "model_not_found"


class NoPreviousVersionError(AevosError):
    code = "no_previous_version"


class ArtifactIntegrityError(AevosError):
    code = "artifact_integrity"


class UnsafeArtifactError(AevosError):
    code = "unsafe_artifact"


class InvalidArtifactError(AevosError, ValueError):
    code = "invalid_artifact"


class InvalidCompositeError(InvalidArtifactError):
    code = "invalid_composite"


class UnknownPartError(InvalidCompositeError, LookupError):
    code = "unknown_model_part"


# -- model calls ----------------------------------------------------------------------------
#     ModelInputError        an input that does not match the model's signature (names the field)
#     ModelCallError         the model raised, answered badly, or its server refused (HTTP 429/5xx)
#     └── ModelTimeoutError  the model did not answer within its timeout
# Messages name fields, types and HTTP statuses, never input values, model output or keys.


class ModelInputError(AevosError, ValueError):
    """The input does not match the model's signature; ``field`` names the offending field
    (a dotted path, ``None`` for the input as a whole)."""

    code = "model_input_invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class ModelCallError(AevosError):
    """A model call failed. ``status`` is the HTTP status when a server answered;
    ``retryable`` says whether the same call may succeed later (429, 5xx, timeouts, network)."""

    code = "model_call_failed"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "status": self.status, "retryable": self.retryable}


class ModelTimeoutError(ModelCallError, TimeoutError):
    code = "model_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


# -- model gateway ---------------------------------------------------------------------------
#     GatewayError
#     ├── LimitExceededError       a budget or rate-limit scope has nothing left in its window
#     │   ├── BudgetExceededError  calls, cost or tokens of a budget
#     │   └── RateLimitedError     calls of a rate limit
#     ├── UndeclaredCostError      a cost (or token) budget cannot reserve a call whose cost is
#     │                            neither declared (max_cost) nor estimated (cost_estimate)
#     ├── CircuitOpenError         the version's circuit breaker is open and no fallback answered
#     └── ModelAccessDeniedError   the model_call policy that governs the model denied the call
# A model that raises or times out surfaces as ModelCallError / ModelTimeoutError (above).
# Gateway errors take the message first so that a recorded one is rebuilt as the same class
# when a workflow replays the call; the extra fields are for live callers and default empty.


class GatewayError(AevosError):
    code = "gateway_error"


class LimitExceededError(GatewayError):
    """``scope`` (``tenant:acme``, ``workflow:acme/triage``, ``rate:model:acme/intent`` ...) has
    no ``limit`` (``calls``, ``cost`` or ``tokens``) left in its current window."""

    code = "limit_exceeded"

    def __init__(self, message: str, *, scope: str = "", limit: str = "") -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "scope": self.scope, "limit": self.limit}


class BudgetExceededError(LimitExceededError):
    code = "budget_exceeded"


class RateLimitedError(LimitExceededError):
    code = "rate_limited"


class UndeclaredCostError(GatewayError):
    """A budget of ``scope`` limits ``limit`` (``cost`` or ``tokens``), and a call of ``model``
    declares no upper bound of it (the route's ``max_cost`` / ``max_tokens``) and none of the
    route or the budget configures an estimate (``cost_estimate`` / ``tokens_estimate``).
    The budget could not reserve the call before it runs, so the call was refused: letting it
    through at no cost would let concurrent calls overshoot the budget."""

    code = "cost_undeclared"

    def __init__(self, message: str, *, scope: str = "", limit: str = "", model: str = "") -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit
        self.model = model

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "scope": self.scope, "limit": self.limit, "model": self.model}


class CircuitOpenError(GatewayError):
    """The breaker of ``version_ref`` is open (cooling down after failures)."""

    code = "circuit_open"

    def __init__(self, message: str, *, version_ref: str = "") -> None:
        super().__init__(message)
        self.version_ref = version_ref

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "version_ref": self.version_ref}


class ModelAccessDeniedError(GatewayError, PermissionError):
    """A ``model_call`` policy denied the call; ``policy`` (``name@version``) and
    ``decision_id`` name the audited decision, whose reason is the message."""

    code = "model_access_denied"

    def __init__(self, message: str, *, policy: str = "", decision_id: str = "") -> None:
        super().__init__(message)
        self.policy = policy
        self.decision_id = decision_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "policy": self.policy, "decision_id": self.decision_id}
