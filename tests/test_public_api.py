"""Pins the public API: a change here is a change users see."""

from __future__ import annotations

import subprocess
import sys

import aevos

EXPECTED = [
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
    "CaseError",
    "CaseInputError",
    "CaseNotFoundError",
    "CaseRetention",
    "CallResult",
    "Canary",
    "Cascade",
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


def test_exported_members() -> None:
    assert sorted(aevos.__all__) == sorted(EXPECTED)
    for name in aevos.__all__:
        assert getattr(aevos, name) is not None


def test_the_telemetry_package_exports_the_evolution_report() -> None:
    import aevos.telemetry

    assert sorted(aevos.telemetry.__all__) == ["EvolutionReport", "Reports"]


def test_errors_carry_distinct_stable_codes() -> None:
    errors = [getattr(aevos, n) for n in aevos.__all__ if n.endswith("Error")]
    assert len(errors) >= 20
    codes = [e.code for e in errors]
    assert len(codes) == len(set(codes))
    assert all(issubclass(e, aevos.AevosError) for e in errors)


def test_importing_aevos_stays_light() -> None:
    code = (
        "import sys, aevos; heavy = [m for m in ('fastapi', 'sklearn', 'torch', 'typer', "
        "'rich', 'alembic', 'yaml', 'cryptography', 'spacy') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
