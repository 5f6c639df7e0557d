"""``/v1/tasks`` and ``/v1/feedback``: the reviewer inbox over HTTP.

List, inspect, claim (one or the next), release, reassign and submit human tasks; read the
feedback records their submissions became. A second submission, or one after the run was
cancelled, is a 409 ``task_conflict`` and changes nothing; a value that does not fit the
form is a 422 ``invalid_task_input`` naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...records.task import Feedback, Task, TaskStatus
from ..deps import AccessDep, ListedDep, PrincipalDep
from ..schemas import truncated_field
from ..summaries import Lister, value_response

router = APIRouter(tags=["tasks"])

_ID = Annotated[str, Field(max_length=220)]


class FormFieldOut(BaseModel):
    name: str
    kind: str
    required: bool
    label: str | None = None
    help: str | None = None
    choices: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None


class TaskOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    task_id: str
    run_id: str
    workflow: str
    title: str
    queue: str
    role: str
    status: TaskStatus
    priority: int
    form: list[FormFieldOut]
    case: Any = Field(
        description="In listings, a case longer than the server's listed_value_bytes as JSON "
        "is a Summary (see `truncated`)."
    )
    suggestion: dict[str, Any] | None
    confidence: float | None
    model_version: str | None
    assignee: str | None
    claimed_at: float | None
    due_at: float | None
    escalated: bool
    escalation_level: int = Field(description="How many times it escalated.")
    escalations: int = Field(description="How many escalations its SLA has (0: no SLA).")
    escalation_chain: list[str] = Field(description="The queues its escalations move it to.")
    result: dict[str, Any] | None
    submitted_by: str | None
    submitted_at: float | None
    created_at: float
    updated_at: float
    purpose: str = Field(default="review", description="review, or qa (nobody waits for it).")
    truncated: list[str] = truncated_field()

    @classmethod
    def listed(cls, task: Task, limit: int) -> TaskOut:
        """The task as a listing shows it: a large case as a summary."""
        lister = Lister(limit)
        out = cls.of(task)
        out.case = lister("case", task.case, f"/v1/tasks/{quote(task.task_id, safe='')}/case")
        out.truncated = lister.truncated
        return out

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            task_id=task.task_id,
            run_id=task.run_id,
            workflow=task.workflow,
            title=task.title,
            queue=task.queue,
            role=task.role,
            status=task.status,
            priority=task.priority,
            form=[FormFieldOut(**field.to_dict()) for field in task.form.fields],
            case=task.case,
            suggestion=task.suggestion,
            confidence=task.confidence,
            model_version=task.model_version,
            assignee=task.assignee,
            claimed_at=task.claimed_at,
            due_at=task.due_at,
            escalated=task.escalated,
            escalation_level=task.escalation_level,
            escalations=task.escalations,
            escalation_chain=list(task.escalation_chain),
            result=task.result,
            submitted_by=task.submitted_by,
            submitted_at=task.submitted_at,
            created_at=task.created_at,
            updated_at=task.updated_at,
            purpose=task.purpose,
        )


class FeedbackOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: int
    task_id: str
    run_id: str
    workflow: str
    seq: int
    model: str | None
    model_version: str | None
    input_digest: str | None
    call_id: str | None
    suggestion: dict[str, Any] | None
    confidence: float | None
    decision: dict[str, Any]
    overridden: bool
    reviewer: str
    asked_at: float
    decided_at: float
    purpose: str = Field(default="review", description="review, or qa (a sampled check).")
    unbiased: bool = Field(
        default=False, description="Asked independently of the model's confidence."
    )

    @classmethod
    def of(cls, record: Feedback) -> FeedbackOut:
        return cls(
            id=record.id,
            task_id=record.task_id,
            run_id=record.run_id,
            workflow=record.workflow,
            seq=record.seq,
            model=record.model,
            model_version=record.model_version,
            input_digest=record.input_digest,
            call_id=record.call_id,
            suggestion=record.suggestion,
            confidence=record.confidence,
            decision=record.decision,
            overridden=record.overridden,
            reviewer=record.reviewer,
            asked_at=record.asked_at,
            decided_at=record.decided_at,
            purpose=record.purpose,
            unbiased=record.unbiased,
        )


class SubmitTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(description="One value per form field (by field name).")


class Submitted(BaseModel):
    task: TaskOut
    feedback: FeedbackOut


class ClaimNext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, max_length=100)


class NextTask(BaseModel):
    task: TaskOut | None = Field(description="The claimed task; null when none is waiting.")


class ReassignTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, min_length=1, max_length=100)
    assignee: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="The actor who gets the task (as audit records name people); "
        "none leaves it open in its queue.",
    )


@router.get("/v1/tasks")
def list_tasks(
    access: AccessDep,
    principal: PrincipalDep,
    listed: ListedDep,
    status: Annotated[list[TaskStatus] | None, Query()] = None,
    queue: Annotated[str | None, Query(max_length=100)] = None,
    mine: bool = False,
    workable: bool = False,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[TaskOut]:
    """Tasks of the token's tenant in inbox order (priority, then age). ``mine``: claimed
    by this token's principal; ``workable``: for a role this token may work. A large case
    is listed as a summary."""
    tasks = access.tasks.list(
        principal,
        status=status,
        queue=queue,
        mine=mine,
        workable=workable,
        run_id=run_id,
        limit=limit,
        offset=offset,
    )
    return [TaskOut.listed(task, listed) for task in tasks]


@router.post("/v1/tasks/next")
def claim_next(body: ClaimNext, access: AccessDep, principal: PrincipalDep) -> NextTask:
    """Claim the next task this token's role may work (the inbox's "next" button)."""
    task = access.tasks.claim_next(principal, queue=body.queue)
    return NextTask(task=None if task is None else TaskOut.of(task))


@router.get("/v1/tasks/{task_id}")
def get_task(task_id: str, access: AccessDep, principal: PrincipalDep) -> TaskOut:
    return TaskOut.of(access.tasks.get(principal, task_id))


@router.get(
    "/v1/tasks/{task_id}/case",
    response_class=JSONResponse,
    responses={
        200: {"description": "The case, as JSON", "content": {"application/json": {"schema": {}}}}
    },
)
def task_case(task_id: str, access: AccessDep, principal: PrincipalDep) -> JSONResponse:
    """The task's case (what the reviewer decides on), whole."""
    return value_response(access.tasks.get(principal, task_id).case)


@router.post("/v1/tasks/{task_id}/claim")
def claim(task_id: str, access: AccessDep, principal: PrincipalDep) -> TaskOut:
    """Claim an open task (claiming one's own claimed task again is a no-op)."""
    return TaskOut.of(access.tasks.claim(principal, task_id))


@router.post("/v1/tasks/{task_id}/release")
def release(task_id: str, access: AccessDep, principal: PrincipalDep) -> TaskOut:
    return TaskOut.of(access.tasks.release(principal, task_id))


@router.post("/v1/tasks/{task_id}/reassign")
def reassign(
    task_id: str, body: ReassignTask, access: AccessDep, principal: PrincipalDep
) -> TaskOut:
    """Move a live task to another queue and/or person (operators and admins)."""
    task = access.tasks.reassign(principal, task_id, queue=body.queue, assignee=body.assignee)
    return TaskOut.of(task)


@router.post("/v1/tasks/{task_id}/submit")
def submit(task_id: str, body: SubmitTask, access: AccessDep, principal: PrincipalDep) -> Submitted:
    """Decide the task; its run resumes with the decision."""
    task, record = access.tasks.submit(principal, task_id, body.values)
    return Submitted(task=TaskOut.of(task), feedback=FeedbackOut.of(record))


@router.get("/v1/feedback")
def list_feedback(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[str | None, Query(max_length=200)] = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[FeedbackOut]:
    """Human decisions on model suggestions, oldest first: labelled data with lineage."""
    records = access.tasks.feedback(
        principal, model=model, workflow=workflow, since=since, limit=limit, offset=offset
    )
    return [FeedbackOut.of(record) for record in records]
