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

from .base import (
    AevosError,
    CorruptDatabaseError,
    DataNotFoundError,
    DefinitionError,
    IdempotencyConflictError,
    InvalidRunStateError,
    ReplayMismatchError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunTimeoutError,
    SchemaError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    StorageError,
    StorageUnavailableError,
    UnknownWorkflowError,
    WorkflowArgumentError,
    check_limit,
    failure_reason,
)
from .evolution import (
    AlertNotFoundError,
    DatasetError,
    DatasetNotFoundError,
    EvolutionError,
    ExportFormatError,
    LabelInputError,
    MonitorConfigError,
    MonitorError,
    MonitorNotConfiguredError,
    RecipeNotFoundError,
    RecipeParameterError,
    ReplayInputError,
    ReplayNotFoundError,
    ReportInputError,
    RetrainingConfigError,
    RetrainingFailedError,
    RetrainingNotConfiguredError,
    RolloutConflictError,
    RolloutError,
    RolloutInputError,
    RolloutNotFoundError,
)
from .governance import (
    AuditAnchorError,
    AuditAnchorRefusedError,
    AuditChainError,
    AuditError,
    AuditKeyError,
    AuditSigningKeyError,
    AuditSigningKeyMissingError,
    AuthenticationError,
    AuthorizationError,
    CaseError,
    CaseInputError,
    CaseNotFoundError,
    InvalidAuditEventError,
    PiiAccessDeniedError,
    PiiBackendUnavailableError,
    PiiConfigError,
    PiiError,
    PiiTokenNotFoundError,
    PolicyError,
    PolicyEvaluationError,
    PolicyInputError,
    PolicyLoadError,
    PolicyNotFoundError,
    TokenNotFoundError,
    VaultKeyError,
)
from .integrations import (
    ConnectorConfigError,
    ConnectorError,
    ConnectorRejectedError,
    ConnectorResponseError,
    ConnectorUnavailableError,
    DeadLetterNotFoundError,
    EventError,
    EventMappingError,
    InvalidEventError,
    NoCorrelatedRunError,
    PayloadTooLargeError,
    ReplayUnavailableError,
    ScheduleError,
    ScheduleNotFoundError,
    SignatureError,
    StaleSignatureError,
    UnknownSourceError,
)
from .models import (
    ArtifactIntegrityError,
    BudgetExceededError,
    CircuitOpenError,
    GatewayError,
    InvalidArtifactError,
    InvalidCompositeError,
    LimitExceededError,
    ModelAccessDeniedError,
    ModelCallError,
    ModelInputError,
    ModelNotFoundError,
    ModelTimeoutError,
    NoPreviousVersionError,
    RateLimitedError,
    UndeclaredCostError,
    UnknownPartError,
    UnsafeArtifactError,
)
from .people import (
    ApprovalConflictError,
    ApprovalNotFoundError,
    TaskConflictError,
    TaskExpiredError,
    TaskInputError,
    TaskNotFoundError,
)

__all__ = [
    "AevosError",
    "AlertNotFoundError",
    "ApprovalConflictError",
    "ApprovalNotFoundError",
    "ArtifactIntegrityError",
    "AuditAnchorError",
    "AuditAnchorRefusedError",
    "AuditChainError",
    "AuditError",
    "AuditKeyError",
    "AuditSigningKeyError",
    "AuditSigningKeyMissingError",
    "AuthenticationError",
    "AuthorizationError",
    "BudgetExceededError",
    "CaseError",
    "CaseInputError",
    "CaseNotFoundError",
    "CircuitOpenError",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorRejectedError",
    "ConnectorResponseError",
    "ConnectorUnavailableError",
    "CorruptDatabaseError",
    "DataNotFoundError",
    "DatasetError",
    "DatasetNotFoundError",
    "DeadLetterNotFoundError",
    "DefinitionError",
    "EventError",
    "EventMappingError",
    "EvolutionError",
    "ExportFormatError",
    "GatewayError",
    "IdempotencyConflictError",
    "InvalidArtifactError",
    "InvalidAuditEventError",
    "InvalidCompositeError",
    "InvalidEventError",
    "InvalidRunStateError",
    "LabelInputError",
    "LimitExceededError",
    "ModelAccessDeniedError",
    "ModelCallError",
    "ModelInputError",
    "ModelNotFoundError",
    "ModelTimeoutError",
    "MonitorConfigError",
    "MonitorError",
    "MonitorNotConfiguredError",
    "NoCorrelatedRunError",
    "NoPreviousVersionError",
    "PayloadTooLargeError",
    "PiiAccessDeniedError",
    "PiiBackendUnavailableError",
    "PiiConfigError",
    "PiiError",
    "PiiTokenNotFoundError",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyInputError",
    "PolicyLoadError",
    "PolicyNotFoundError",
    "RateLimitedError",
    "RecipeNotFoundError",
    "RecipeParameterError",
    "ReplayInputError",
    "ReplayMismatchError",
    "ReplayNotFoundError",
    "ReplayUnavailableError",
    "ReportInputError",
    "RetrainingConfigError",
    "RetrainingFailedError",
    "RetrainingNotConfiguredError",
    "RolloutConflictError",
    "RolloutError",
    "RolloutInputError",
    "RolloutNotFoundError",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "RunTimeoutError",
    "ScheduleError",
    "ScheduleNotFoundError",
    "SchemaError",
    "SerializationError",
    "SignatureError",
    "StaleSignatureError",
    "StepFailedError",
    "StepTimeoutError",
    "StorageError",
    "StorageUnavailableError",
    "TaskConflictError",
    "TaskExpiredError",
    "TaskInputError",
    "TaskNotFoundError",
    "TokenNotFoundError",
    "UndeclaredCostError",
    "UnknownPartError",
    "UnknownSourceError",
    "UnknownWorkflowError",
    "UnsafeArtifactError",
    "VaultKeyError",
    "WorkflowArgumentError",
    "check_limit",
    "failure_reason",
]

# One module per concept, one name: recorded errors (a run's ``error.type``, a trace's
# ``exception.type``) and messages keep saying ``aevos.errors.X`` wherever X is defined.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _value.__module__ = __name__
del _name, _value
