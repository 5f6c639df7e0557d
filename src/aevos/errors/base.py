"""The root of the error tree, the kernel's and storage's errors (see :mod:`aevos.errors`)."""

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
