"""aevos: an AI evolutionary operating system for business process automation.

The public API is what ``__all__`` lists; ``tests/test_public_api.py`` pins it. The kernel
is imported eagerly; governance (audit, identity, policy, PII) is imported on first use of
one of its names, so ``import aevos`` stays light and never imports a server, a CLI
framework or a model library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .app import Aevos
from .errors import (
    AevosError,
    ApprovalConflictError,
    ApprovalNotFoundError,
    AuditChainError,
    AuditError,
    AuditKeyError,
    AuthenticationError,
    AuthorizationError,
    BudgetExceededError,
    CaseError,
    CaseInputError,
    CaseNotFoundError,
    CircuitOpenError,
    CorruptDatabaseError,
    DefinitionError,
    IdempotencyConflictError,
    InvalidAuditEventError,
    InvalidRunStateError,
    ModelCallError,
    ModelInputError,
    ModelNotFoundError,
    ModelTimeoutError,
    PiiAccessDeniedError,
    PiiError,
    PolicyError,
    PolicyInputError,
    PolicyLoadError,
    PolicyNotFoundError,
    RateLimitedError,
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
    TaskConflictError,
    TaskExpiredError,
    TaskInputError,
    TaskNotFoundError,
    UnknownWorkflowError,
    WorkflowArgumentError,
)
from .kernel.context import WorkflowContext
from .kernel.handle import RunHandle
from .kernel.retry import RetryPolicy
from .kernel.step import Step, StepContext
from .kernel.worker import Worker
from .kernel.workflow import Workflow
from .records.queue import Queue
from .records.run import RunInfo, StepInfo
from .records.status import RunStatus
from .records.task import Feedback, Field, Form, HumanDecision, Task, TaskStatus

if TYPE_CHECKING:
    from .access import Access
    from .audit import AuditEvent, AuditHead, AuditLog, AuditProblem, AuditRecord, VerifyReport
    from .audit.lineage import Lineage
    from .cases import KeptCase, KeptCases
    from .identity import Permission, Principal, Role
    from .models import ModelCard, ModelVersion, Prediction
    from .models.gateway import CallResult, Gateway
    from .models.registry import ModelRegistry
    from .models.routing import Canary, Cascade, Route
    from .people.approvals import Approvals
    from .people.inbox import Inbox
    from .pii import Redaction, Redactor, Vault
    from .policy import CaseRetention, Decision, PolicySet, Verdict, python_policy
    from .records.approval import Approval, ApprovalStatus

__version__ = "0.1.0"

# name -> module, imported on first access (PEP 562).
_LAZY = {
    "Access": "access",
    "Approval": "records.approval",
    "ApprovalStatus": "records.approval",
    "Approvals": "people.approvals",
    "AuditEvent": "audit",
    "AuditLog": "audit",
    "AuditRecord": "audit",
    "AuditHead": "audit",
    "AuditProblem": "audit",
    "VerifyReport": "audit",
    "Inbox": "people.inbox",
    "Permission": "identity",
    "Principal": "identity",
    "Role": "identity",
    "CallResult": "models.gateway",
    "Canary": "models.routing",
    "Cascade": "models.routing",
    "Gateway": "models.gateway",
    "Route": "models.routing",
    "Lineage": "audit.lineage",
    "KeptCase": "cases",
    "KeptCases": "cases",
    "CaseRetention": "policy",
    "ModelCard": "models",
    "ModelRegistry": "models.registry",
    "ModelVersion": "models",
    "Prediction": "models",
    "Redaction": "pii",
    "Redactor": "pii",
    "Vault": "pii",
    "Decision": "policy",
    "PolicySet": "policy",
    "Verdict": "policy",
    "python_policy": "policy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aevos' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Access",
    "Aevos",
    "AevosError",
    "Approval",
    "ApprovalConflictError",
    "ApprovalNotFoundError",
    "ApprovalStatus",
    "Approvals",
    "AuditChainError",
    "AuditError",
    "AuditEvent",
    "AuditHead",
    "AuditKeyError",
    "AuditLog",
    "AuditProblem",
    "AuditRecord",
    "AuthenticationError",
    "AuthorizationError",
    "BudgetExceededError",
    "CallResult",
    "Canary",
    "Cascade",
    "CaseError",
    "CaseInputError",
    "CaseNotFoundError",
    "CaseRetention",
    "CircuitOpenError",
    "CorruptDatabaseError",
    "Decision",
    "DefinitionError",
    "Feedback",
    "Field",
    "Form",
    "Gateway",
    "HumanDecision",
    "IdempotencyConflictError",
    "Inbox",
    "InvalidAuditEventError",
    "InvalidRunStateError",
    "KeptCase",
    "KeptCases",
    "Lineage",
    "ModelCallError",
    "ModelCard",
    "ModelInputError",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelTimeoutError",
    "ModelVersion",
    "Permission",
    "PiiAccessDeniedError",
    "PiiError",
    "PolicyError",
    "PolicyInputError",
    "PolicyLoadError",
    "PolicyNotFoundError",
    "PolicySet",
    "Prediction",
    "Principal",
    "Queue",
    "RateLimitedError",
    "Redaction",
    "Redactor",
    "ReplayMismatchError",
    "RetryPolicy",
    "Role",
    "Route",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunInfo",
    "RunNotFoundError",
    "RunStatus",
    "RunTimeoutError",
    "SchemaError",
    "SerializationError",
    "Step",
    "StepContext",
    "StepFailedError",
    "StepInfo",
    "StepTimeoutError",
    "StorageError",
    "StorageUnavailableError",
    "Task",
    "TaskConflictError",
    "TaskExpiredError",
    "TaskInputError",
    "TaskNotFoundError",
    "TaskStatus",
    "UnknownWorkflowError",
    "Vault",
    "Verdict",
    "VerifyReport",
    "Worker",
    "Workflow",
    "WorkflowArgumentError",
    "WorkflowContext",
    "__version__",
    "python_policy",
]
