"""aevos: an AI evolutionary operating system for business process automation.

The public API is what ``__all__`` lists; ``tests/test_public_api.py`` pins it. Importing
aevos imports neither a server nor any model library.
"""

from __future__ import annotations

from .app import Aevos
from .context import WorkflowContext
from .errors import (
    AevosError,
    CorruptDatabaseError,
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
)
from .handle import RunHandle
from .queue import Queue
from .retry import RetryPolicy
from .run import RunInfo, StepInfo
from .status import RunStatus
from .step import Step, StepContext
from .worker import Worker
from .workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "Aevos",
    "AevosError",
    "CorruptDatabaseError",
    "DefinitionError",
    "IdempotencyConflictError",
    "InvalidRunStateError",
    "Queue",
    "ReplayMismatchError",
    "RetryPolicy",
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
    "UnknownWorkflowError",
    "Worker",
    "Workflow",
    "WorkflowContext",
    "__version__",
]
