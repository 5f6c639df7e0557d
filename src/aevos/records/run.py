"""Read-only views of runs and steps, as returned by status queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .status import RunStatus


@dataclass(frozen=True)
class RunInfo:
    """One workflow run as recorded. ``input``/``output`` are decoded JSON values."""

    run_id: str
    tenant: str
    workflow: str
    status: RunStatus
    queue: str
    priority: int
    idempotency_key: str | None
    input: Any
    output: Any
    error: dict[str, Any] | None
    code_version: str
    parent_run_id: str | None
    owner: str | None
    lease_until: float | None
    wake_at: float | None
    executions: int
    created_at: float
    updated_at: float
    claimed_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class StepInfo:
    """One recorded step result (or error) at position ``seq`` of a run."""

    run_id: str
    seq: int
    name: str
    status: str  # "SUCCEEDED" | "FAILED"
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: float
    finished_at: float
    output_ref: str | None = None


@dataclass(frozen=True)
class NewRun:
    """What a caller asks the store to create (the operation's input, one dataclass)."""

    run_id: str
    workflow: str
    queue: str
    input_json: str | None
    code_version: str
    status: RunStatus = RunStatus.ENQUEUED
    tenant: str = "default"
    priority: int = 0
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    owner: str | None = None
    lease_until: float | None = None
    error: dict[str, Any] | None = None


def error_dict(error: BaseException) -> dict[str, Any]:
    """How an exception is recorded: its qualified type and message, never a pickle."""
    kind = type(error)
    data: dict[str, Any] = {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(error)[:2000],
    }
    code = getattr(error, "code", None)
    if isinstance(code, str):
        data["code"] = code
    return data
