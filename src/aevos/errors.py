"""The aevos error tree.

Every error aevos raises derives from :class:`AevosError` and carries a stable ``code``
(a short snake_case string) that the CLI prints and the HTTP API returns, so callers can
branch on the code instead of parsing messages. Messages name the cause and never include
secrets (database passwords are stripped from URLs before they reach a message).

    AevosError
    ├── DefinitionError            misuse of a decorator or app option, found at decoration time
    │   └── WorkflowArgumentError  arguments that do not fit the workflow, found at start time
    ├── SerializationError         a workflow input or step output is not JSON-serialisable
    ├── UnknownWorkflowError       a run was asked for a workflow name nobody registered
    ├── RunNotFoundError           no run has that id
    ├── IdempotencyConflictError   a key was reused for a different workflow
    ├── InvalidRunStateError       an operation that the run's status does not allow
    ├── RunFailedError             awaited a run that failed (carries the run's error)
    ├── RunCancelledError          awaited, or was inside, a run that was cancelled
    ├── ReplayMismatchError        recorded history does not match the code being replayed
    ├── StepFailedError            a step raised after its retries (same live and on replay)
    │   └── StepTimeoutError       a step attempt ran past its timeout
    ├── RunTimeoutError            waited for a run's result longer than asked
    ├── DataNotFoundError          a shipped public data set is not where it was looked for
    └── StorageError
        ├── StorageUnavailableError  the database cannot be reached
        ├── SchemaError              the schema is missing, corrupt, or newer than this code
        └── CorruptDatabaseError     the file is not a database at all
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class AevosError(Exception):
    """Base of every aevos error; ``code`` is stable across releases."""

    code = "aevos_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class DefinitionError(AevosError, TypeError):
    code = "definition_error"


class WorkflowArgumentError(DefinitionError):
    """A run's arguments do not fit its workflow's signature: an unknown keyword (start
    options such as ``tenant`` are not arguments), a missing one, one given twice, or too
    many positional ones. Raised before the run exists; ``argument`` names the parameter or
    keyword concerned (None when the count of positional arguments is wrong).
    """

    code = "invalid_arguments"

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "argument": self.argument}


class SerializationError(AevosError, TypeError):
    code = "not_serializable"


class UnknownWorkflowError(AevosError, LookupError):
    code = "unknown_workflow"


class RunNotFoundError(AevosError, LookupError):
    code = "run_not_found"


class IdempotencyConflictError(AevosError):
    code = "idempotency_conflict"


class InvalidRunStateError(AevosError):
    code = "invalid_run_state"


class RunFailedError(AevosError):
    """The awaited run ended FAILED; ``error`` is the run's recorded error."""

    code = "run_failed"

    def __init__(self, run_id: str, error: dict[str, Any] | None) -> None:
        err = error or {}
        super().__init__(
            f"run {run_id} failed: {err.get('type', 'Error')}: {err.get('message', '')}"
        )
        self.run_id = run_id
        self.error = err


class RunCancelledError(AevosError):
    code = "run_cancelled"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} was cancelled")
        self.run_id = run_id


class RunTimeoutError(AevosError, TimeoutError):
    code = "run_timeout"


class ReplayMismatchError(AevosError):
    """The code took a different path than the run's recorded history.

    Raised instead of running a step whose position already holds another step's
    result: re-executing would repeat or skip side effects. An operator can fork the run
    from an earlier step (``aevos runs fork``) to continue it on the new code.
    """

    code = "replay_mismatch"

    def __init__(
        self,
        run_id: str,
        seq: int,
        recorded: str,
        attempted: str,
        recorded_version: str,
        current_version: str,
    ) -> None:
        super().__init__(
            f"run {run_id} cannot be replayed on this code: position {seq} holds a result of "
            f"{recorded!r} but the workflow now calls {attempted!r} there (run started on code "
            f"version {recorded_version}, this is {current_version}); fork the run from step "
            f"{seq} or earlier to continue on the new code"
        )
        self.run_id = run_id
        self.seq = seq
        self.recorded = recorded
        self.attempted = attempted


class StepFailedError(AevosError):
    """A step raised after exhausting its retries.

    Workflows see this same type live and on replay (the original exception object cannot be
    restored without pickle), so ``except StepFailedError`` behaves identically both times.
    ``error_type`` is the qualified name of the original exception class.
    """

    code = "step_failed"

    def __init__(self, step: str, seq: int, error_type: str, error_message: str, attempts: int):
        super().__init__(
            f"step {step!r} at position {seq} failed after {attempts} attempt(s): "
            f"{error_type}: {error_message}"
        )
        self.step = step
        self.seq = seq
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts


class StepTimeoutError(StepFailedError):
    code = "step_timeout"


def check_limit(limit: object, most: int, error: Callable[[str], AevosError] | None = None) -> int:
    """``limit`` as a listing's bound, a whole number from 1 to ``most``; otherwise the
    error ``error`` makes of the message (a DefinitionError by default)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= most:
        message = f"limit must be an integer from 1 to {most}"
        raise (DefinitionError(message) if error is None else error(message))
    return limit


def failure_reason(exc: BaseException) -> str:
    """What a service's record says of a failed workflow: the step and its error's message,
    an aevos error's message, or only the type of anything else (whose message may quote
    customers' data)."""
    if isinstance(exc, StepFailedError):
        return f"{exc.step}: {exc.error_message}"
    if isinstance(exc, AevosError):
        return exc.message
    return type(exc).__name__


class DataNotFoundError(AevosError, FileNotFoundError):
    """A public data set (``data/``, or ``$AEVOS_DATA_DIR``) is missing."""

    code = "data_not_found"


class StorageError(AevosError):
    code = "storage_error"


class StorageUnavailableError(StorageError, ConnectionError):
    code = "storage_unavailable"


class SchemaError(StorageError):
    code = "schema_error"


class CorruptDatabaseError(StorageError):
    code = "corrupt_database"


# -- identity and access (HTTP 401 / 403) --------------------------------------------------


class AuthenticationError(AevosError):
    """No valid credentials: missing, malformed, unknown, expired or revoked token (401)."""

    code = "unauthenticated"


class AuthorizationError(AevosError):
    """Valid credentials whose role does not grant the operation (403)."""

    code = "forbidden"


class TokenNotFoundError(AevosError, LookupError):
    code = "token_not_found"


# -- event ingress (webhooks) ---------------------------------------------------------------
#     EventError
#     ├── UnknownSourceError        no webhook source has that name (404)
#     ├── SignatureError            a missing, malformed or wrong signature (401)
#     │   └── StaleSignatureError   a valid signature whose timestamp is outside the tolerance
#     ├── PayloadTooLargeError      the body is larger than the source accepts (413)
#     ├── InvalidEventError         the body is not JSON, or the event id is malformed (422)
#     ├── EventMappingError         the source's mapping raised or returned no dict (422)
#     ├── NoCorrelatedRunError      an event's correlation key names no run of its tenant (422)
#     ├── DeadLetterNotFoundError   no dead letter of the tenant has that id (404)
#     └── ReplayUnavailableError    a dead letter's source or trigger is not declared here (409)
# Every one is recorded as a REJECTED event with its code. Messages name the cause, never
# the body (it may hold personal data) nor a secret.


class EventError(AevosError):
    code = "event_error"


class UnknownSourceError(EventError, LookupError):
    code = "unknown_source"


class SignatureError(EventError):
    code = "invalid_signature"


class StaleSignatureError(SignatureError):
    """The signature is right but old (or from the future): a replay, or a skewed clock."""

    code = "signature_expired"


class PayloadTooLargeError(EventError):
    code = "payload_too_large"


class InvalidEventError(EventError, ValueError):
    code = "invalid_event"


class EventMappingError(EventError):
    code = "event_mapping_failed"


class NoCorrelatedRunError(EventError, LookupError):
    code = "no_correlated_run"


class DeadLetterNotFoundError(EventError, LookupError):
    code = "dead_letter_not_found"


class ReplayUnavailableError(EventError):
    code = "replay_unavailable"


# -- policy as code ------------------------------------------------------------------------
#     PolicyError
#     ├── PolicyLoadError        a policy or policy test file is invalid (every problem, FILE:LINE)
#     ├── PolicyNotFoundError    no loaded policy has that name (or version)
#     ├── PolicyInputError       a decision's input misses a declared field or has the wrong type
#     └── PolicyEvaluationError  a condition cannot be evaluated on this input (e.g. str < int)


class PolicyError(AevosError):
    code = "policy_error"


class PolicyLoadError(PolicyError):
    """A policy or policy test file is invalid; found when loading, never when deciding.

    ``problems`` lists every ``(file, line, message)`` found (``line`` is None when the
    problem has no position); the message reads like a compiler's, one
    ``FILE:LINE: message`` per problem.
    """

    code = "policy_invalid"

    def __init__(self, problems: list[tuple[str, int | None, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            "\n".join(
                f"{file}:{line}: {message}" if line is not None else f"{file}: {message}"
                for file, line, message in self.problems
            )
        )


class PolicyNotFoundError(PolicyError, LookupError):
    code = "policy_not_found"


class PolicyInputError(PolicyError, ValueError):
    """The input does not match the policy's declaration; ``field`` names the field.

    The message names the field and the type received, never the value: inputs carry PII.
    """

    code = "policy_input_invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PolicyEvaluationError(PolicyError):
    code = "policy_evaluation_failed"


# -- PII detection, redaction and the token vault --------------------------------------------
#     PiiError
#     ├── PiiConfigError             a redactor, recogniser, field path or secret is misconfigured
#     ├── PiiBackendUnavailableError an optional detection backend (Presidio) is not installed
#     ├── VaultKeyError              the vault key is missing or malformed (names the variable)
#     ├── PiiAccessDeniedError       detokenisation without an explicit authorisation decision
#     └── PiiTokenNotFoundError      strict detokenisation met tokens this tenant does not own


class PiiError(AevosError):
    code = "pii_error"


class PiiConfigError(PiiError, ValueError):
    code = "pii_config_invalid"


class PiiBackendUnavailableError(PiiError, ImportError):
    code = "pii_backend_unavailable"


class VaultKeyError(PiiError):
    """The vault key is missing or malformed. The message names the variable, never the value."""

    code = "vault_key_invalid"


class PiiAccessDeniedError(PiiError, PermissionError):
    code = "pii_access_denied"


class PiiTokenNotFoundError(PiiError, LookupError):
    """Strict detokenisation met tokens unknown to this tenant (another tenant's, or erased)."""

    code = "pii_token_not_found"

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


# -- kept cases -----------------------------------------------------------------------------
#     CaseError
#     ├── CaseNotFoundError   no kept case has that id in the tenant (or it was forgotten) (404)
#     └── CaseInputError      a bad filter, limit or identifier (422)


class CaseError(AevosError):
    code = "case_error"


class CaseNotFoundError(CaseError, LookupError):
    code = "case_not_found"


class CaseInputError(CaseError, ValueError):
    code = "case_input_invalid"


# -- audit log ------------------------------------------------------------------------------
#     AuditError
#     ├── InvalidAuditEventError  an event that cannot be recorded (bad field, non-JSON data)
#     ├── AuditChainError         a chain that cannot be appended to (its head row is gone)
#     ├── AuditKeyError           the audit key is malformed (names the variable, never the value)
#     ├── AuditSigningKeyError    an anchor signing or public key is malformed
#     │   └── AuditSigningKeyMissingError  ... or not configured where one is needed
#     └── AuditAnchorError        anchors cannot be written or read (no directory, an OS error)
#         └── AuditAnchorRefusedError  a head not signed: its chain no longer extends the
#                                      newest anchor, or does not verify
# A tampered chain is not an error: AuditLog.verify returns a report naming each record (and
# each anchor file that is not a valid anchor).


class AuditError(AevosError):
    code = "audit_error"


class InvalidAuditEventError(AuditError, ValueError):
    code = "invalid_audit_event"


class AuditChainError(AuditError):
    code = "audit_chain_broken"


class AuditKeyError(AuditError):
    code = "audit_key_invalid"


class AuditSigningKeyError(AuditError):
    code = "audit_signing_key_invalid"


class AuditSigningKeyMissingError(AuditSigningKeyError):
    code = "audit_signing_key_missing"


class AuditAnchorError(AuditError):
    code = "audit_anchor_failed"


class AuditAnchorRefusedError(AuditAnchorError):
    code = "audit_anchor_refused"


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


# -- human tasks ----------------------------------------------------------------------------
#     TaskNotFoundError   no task has that id (in the caller's tenant)
#     TaskConflictError   the task's state does not allow it: claimed by someone else, already
#                         submitted, cancelled with its run, or expired
#     TaskInputError      a submitted value does not fit the task's form (names the field)
#     TaskExpiredError    raised in a workflow when nobody decided before ask_human's timeout


class TaskNotFoundError(AevosError, LookupError):
    code = "task_not_found"


class TaskConflictError(AevosError):
    code = "task_conflict"

    def __init__(self, task_id: str, status: str, reason: str) -> None:
        super().__init__(f"task {task_id} is {status}: {reason}")
        self.task_id = task_id
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "task_id": self.task_id, "status": self.status}


class TaskInputError(AevosError, ValueError):
    """A submitted value does not fit the form; ``field`` names it (never the value)."""

    code = "invalid_task_input"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field = field
        self.problem = problem

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class TaskExpiredError(AevosError, TimeoutError):
    code = "task_expired"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"nobody decided task {task_id} before its timeout")
        self.task_id = task_id


# -- approvals --------------------------------------------------------------------------------
#     ApprovalNotFoundError   no approval has that id (in the caller's tenant)
#     ApprovalConflictError   it is no longer pending: decided, expired, superseded by a move of
#                             its alias, or rejected because the policy now denies it


class ApprovalNotFoundError(AevosError, LookupError):
    code = "approval_not_found"


class ApprovalConflictError(AevosError):
    code = "approval_conflict"

    def __init__(self, approval_id: str, status: str, reason: str) -> None:
        super().__init__(f"approval {approval_id} is {status}: {reason}")
        self.approval_id = approval_id
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "approval_id": self.approval_id, "status": self.status}


# -- evolution: training recipes and certification ---------------------------------------------
#     EvolutionError
#     ├── RecipeNotFoundError     no registered recipe has that name
#     ├── RecipeParameterError    a recipe's parameters are unknown, of the wrong type or out of
#     │                           range (``parameter`` names the first one at fault)
#     ├── DatasetError            a dataset a recipe or a certification cannot use: empty, rows of
#     │                           the wrong shape, fewer than two labels, mismatched lengths
#     ├── RetrainingConfigError   a retraining configuration that cannot be (``field`` names it)
#     ├── RetrainingNotConfiguredError  retraining asked of a model with no configuration
#     └── RetrainingFailedError   a retraining ended without a certified candidate (``reason``)
# Registering a recipe under a name already taken is a DefinitionError (a programming mistake,
# found when the module defining it is imported). Messages name fields and counts, never the
# texts of a dataset (they are customers' words).


class EvolutionError(AevosError):
    code = "evolution_error"


class RecipeNotFoundError(EvolutionError, LookupError):
    code = "recipe_not_found"


class RecipeParameterError(EvolutionError, ValueError):
    code = "invalid_recipe_parameters"

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "parameter": self.parameter}


class DatasetError(EvolutionError, ValueError):
    code = "invalid_dataset"


# -- evolution: labels and datasets -------------------------------------------------------------
# (A label naming a case id the tenant has no case for is a CaseNotFoundError, above.)
#     EvolutionError
#     ├── LabelInputError          a label, case id, source or batch that cannot be recorded
#     │                            (``field`` names the one at fault)
#     ├── DatasetNotFoundError     no dataset version of the tenant has that digest
#     └── ExportFormatError        an export format that is unknown, or whose library is not
#                                  installed (Parquet needs the ``parquet`` extra: pyarrow)


class LabelInputError(EvolutionError, ValueError):
    code = "invalid_label"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class DatasetNotFoundError(EvolutionError, LookupError):
    code = "dataset_not_found"


class ExportFormatError(EvolutionError, ValueError):
    code = "export_format_unavailable"


class ReportInputError(EvolutionError, ValueError):
    """Evolution report parameters that cannot be answered (``field`` names the one at fault)."""

    code = "invalid_report"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


# -- evolution: retraining (see the tree of evolution errors above) ---------------------------


class RetrainingConfigError(EvolutionError, ValueError):
    code = "invalid_retraining_config"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class RetrainingNotConfiguredError(EvolutionError, LookupError):
    code = "retraining_not_configured"


class RetrainingFailedError(EvolutionError):
    """A retraining that ended without a certified candidate: ``reason`` says why (the
    same words its retraining record keeps)."""

    code = "retraining_failed"


# -- evolution: replay ------------------------------------------------------------------------
#     EvolutionError
#     ├── ReplayInputError        a replay that cannot be asked for (``field`` names the input)
#     └── ReplayNotFoundError     no replay of the tenant has that id


class ReplayInputError(EvolutionError, ValueError):
    code = "invalid_replay"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class ReplayNotFoundError(EvolutionError, LookupError):
    code = "replay_not_found"


# -- evolution: rollouts ----------------------------------------------------------------------
#
#     RolloutError
#     ├── RolloutNotFoundError     no rollout of the tenant has that id
#     ├── RolloutConflictError     a second active rollout of a model, or an action that lost
#     │                            a race with another one (the rollout moved under it), or
#     │                            one its state does not allow
#     └── RolloutInputError        a rollout's definition that cannot be (``field`` names it)


class RolloutError(EvolutionError):
    code = "rollout_error"


class RolloutNotFoundError(RolloutError, LookupError):
    code = "rollout_not_found"


class RolloutConflictError(RolloutError):
    code = "rollout_conflict"


class RolloutInputError(RolloutError, ValueError):
    code = "invalid_rollout"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


# -- evolution: monitors ----------------------------------------------------------------------


class MonitorError(AevosError):
    code = "monitor_error"


class MonitorConfigError(MonitorError, ValueError):
    """A monitor configuration refused: ``field`` names the setting at fault."""

    code = "invalid_monitor_config"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class MonitorNotConfiguredError(MonitorError, LookupError):
    code = "monitor_not_configured"


class AlertNotFoundError(MonitorError, LookupError):
    code = "alert_not_found"


# -- connectors ---------------------------------------------------------------------------
#
#     AevosError
#     └── ConnectorError                 a connector call to another system failed
#         ├── ConnectorConfigError       a connector is misconfigured (a credential not set)
#         ├── ConnectorUnavailableError  the system cannot be reached, timed out, answered 5xx
#         │                              or its circuit breaker is open: retried
#         ├── ConnectorRejectedError     the system refused the request (4xx, a recipient
#         │                              refused, a constraint): not retried
#         └── ConnectorResponseError     the system answered something unreadable: retried
#
# Messages name the system (its URL without credentials), never a credential.


class ConnectorError(AevosError):
    code = "connector_error"


class ConnectorConfigError(ConnectorError, ValueError):
    code = "connector_config_error"


class ConnectorUnavailableError(ConnectorError, ConnectionError):
    code = "connector_unavailable"


class ConnectorRejectedError(ConnectorError):
    code = "connector_rejected"


class ConnectorResponseError(ConnectorError, ValueError):
    code = "connector_bad_response"
# -- schedules -----------------------------------------------------------------------------


class ScheduleError(AevosError):
    code = "schedule_error"


class ScheduleNotFoundError(ScheduleError, LookupError):
    """No schedule of that name is declared (in code) or stored (in the caller's tenant)."""

    code = "schedule_not_found"
