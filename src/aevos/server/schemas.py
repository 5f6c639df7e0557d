"""Request and response bodies of the HTTP API (Pydantic models, served in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from ..audit.lineage import Lineage
from ..records.run import RunInfo, StepInfo
from ..storage import VersionRuns
from .summaries import Lister

# Names and keys: no control characters (PostgreSQL cannot even store U+0000 in text).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NAME_PATTERN
    )
    queue: str | None = Field(default=None, min_length=1, max_length=100, pattern=NAME_PATTERN)
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)


class ForkRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: int = Field(ge=0, le=2**31 - 1)  # a step seq is a 32-bit integer


_LISTED = (
    "In listings, a value longer than the server's listed_value_bytes as JSON is a Summary "
    "(see `truncated`)."
)


def truncated_field() -> Any:
    """The ``truncated`` field of a listed item."""
    return Field(
        default_factory=list,
        description="The fields shown as a Summary {truncated, bytes, sha256, href} instead "
        "of their value (listings only); GET the summary's href for the value.",
    )


class Run(BaseModel):
    run_id: str
    tenant: str
    workflow: str
    status: str
    queue: str
    priority: int
    idempotency_key: str | None
    input: Any = Field(description=_LISTED)
    output: Any = Field(description=_LISTED)
    error: dict[str, Any] | None
    code_version: str
    parent_run_id: str | None
    executions: int
    created_at: float
    updated_at: float
    finished_at: float | None
    truncated: list[str] = truncated_field()

    @classmethod
    def listed(cls, info: RunInfo, limit: int) -> Run:
        """The run as a listing shows it: a large input or output as a summary."""
        lister = Lister(limit)
        href = f"/v1/runs/{quote(info.run_id, safe='')}"
        run = cls.of(info)
        run.input = lister("input", info.input, f"{href}/input")
        run.output = lister("output", info.output, f"{href}/output")
        run.truncated = lister.truncated
        return run

    @classmethod
    def of(cls, info: RunInfo) -> Run:
        return cls(
            run_id=info.run_id,
            tenant=info.tenant,
            workflow=info.workflow,
            status=info.status.value,
            queue=info.queue,
            priority=info.priority,
            idempotency_key=info.idempotency_key,
            input=info.input,
            output=info.output,
            error=info.error,
            code_version=info.code_version,
            parent_run_id=info.parent_run_id,
            executions=info.executions,
            created_at=info.created_at,
            updated_at=info.updated_at,
            finished_at=info.finished_at,
        )


class CodeVersionRuns(BaseModel):
    """The runs in flight (enqueued, running, waiting) that started on one code version."""

    code_version: str
    runs: int
    statuses: dict[str, int]
    workflows: dict[str, int]
    oldest: float = Field(description="When the oldest of them was created (epoch seconds).")

    @classmethod
    def of(cls, entry: VersionRuns) -> CodeVersionRuns:
        return cls(
            code_version=entry.code_version,
            runs=entry.runs,
            statuses=entry.statuses,
            workflows=entry.workflows,
            oldest=entry.oldest,
        )


class Step(BaseModel):
    seq: int
    name: str
    status: str
    output: Any = Field(description=_LISTED)
    error: dict[str, Any] | None
    attempts: int
    started_at: float
    finished_at: float
    truncated: list[str] = truncated_field()

    @classmethod
    def listed(cls, run_id: str, step: StepInfo, limit: int) -> Step:
        """The step as a listing shows it: a large output as a summary."""
        lister = Lister(limit)
        href = f"/v1/runs/{quote(run_id, safe='')}/steps/{step.seq}/output"
        listed = cls.of(step)
        listed.output = lister("output", step.output, href)
        listed.truncated = lister.truncated
        return listed

    @classmethod
    def of(cls, step: StepInfo) -> Step:
        return cls(
            seq=step.seq,
            name=step.name,
            status=step.status,
            output=step.output,
            error=step.error,
            attempts=step.attempts,
            started_at=step.started_at,
            finished_at=step.finished_at,
        )


class LineageOut(BaseModel):
    lineage: dict[str, Any]

    @classmethod
    def of(cls, lineage: Lineage) -> LineageOut:
        return cls(lineage=lineage.to_dict())


class AuditRecordOut(BaseModel):
    tenant: str
    seq: int
    at: float
    actor: str
    action: str
    subject: str | None
    run_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    problems: list[dict[str, Any]]


class Status(BaseModel):
    status: str
