"""``/v1/labels``: late ground truth in, labels and their conflicts out.

``POST /v1/labels`` records a batch of at most 1,000 labels in the token's tenant, all or
nothing: a label for a case the tenant does not have is a 404 ``case_not_found`` naming the
item, a label that cannot be one a 422 (``invalid_label`` naming the field, or
``invalid_request``); either refusal is audited as ``label.rejected``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ...records.label import LabelConflict, LabelRecord
from ..deps import AccessDep, PrincipalDep
from ..schemas import NAME_PATTERN

router = APIRouter(prefix="/v1/labels", tags=["labels"])

LabelValue = StrictStr | StrictInt | StrictFloat | StrictBool
Source = Literal["review", "qa", "ground_truth"]
_CASE = Annotated[str, Field(min_length=1, max_length=230, pattern=NAME_PATTERN)]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: _CASE = Field(description="The case: a model call's call_id, or task:<task_id>.")
    label: LabelValue = Field(description="The right answer: text (1-1,000), number, boolean.")
    source: Source = "ground_truth"
    unbiased: bool = Field(
        default=False, description="Labelled independently of the model's confidence."
    )
    at: float | None = Field(
        default=None, ge=0, lt=1e11, description="When it became known (default: now)."
    )


class LabelBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[LabelIn] = Field(min_length=1, max_length=1000)


class LabelOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: int
    case_id: str
    model: str | None
    model_version: str | None
    label: LabelValue
    source: Source
    unbiased: bool
    run_id: str | None
    task_id: str | None
    feedback_id: int | None
    actor: str
    labelled_at: float

    @classmethod
    def of(cls, record: LabelRecord) -> LabelOut:
        return cls.model_validate(record.to_dict())


class LabelsOut(BaseModel):
    labels: list[LabelOut]


class ConflictOut(BaseModel):
    id: int
    case_id: str
    model: str | None
    label_id: int = Field(description="The label that arrived last.")
    other_id: int = Field(description="The earlier label it contradicts.")
    label: LabelValue
    other: LabelValue
    source: Source
    other_source: Source
    winner_id: int = Field(description="The label the case has since.")
    recorded_at: float

    @classmethod
    def of(cls, conflict: LabelConflict) -> ConflictOut:
        return cls.model_validate(conflict.to_dict())


@router.post("", status_code=201)
def record(access: AccessDep, principal: PrincipalDep, body: LabelBatch) -> LabelsOut:
    """Record labels (late ground truth by default), all or nothing (labels:write)."""
    items = [item.model_dump(exclude_none=True) for item in body.labels]
    return LabelsOut(labels=[LabelOut.of(r) for r in access.labels.record(principal, items)])


@router.get("")
def list_labels(
    access: AccessDep,
    principal: PrincipalDep,
    case_id: Annotated[str | None, Query(max_length=230, pattern=NAME_PATTERN)] = None,
    model: Annotated[str | None, Query(max_length=200, pattern=NAME_PATTERN)] = None,
    source: Source | None = None,
    since: Annotated[float | None, Query(ge=0, lt=1e11)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> LabelsOut:
    """The tenant's labels, oldest first, superseded ones included (labels:read)."""
    found = access.labels.list(
        principal,
        case_id=case_id,
        model=model,
        source=source,
        since=since,
        limit=limit,
        offset=offset,
    )
    return LabelsOut(labels=[LabelOut.of(r) for r in found])


@router.get("/conflicts")
def conflicts(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[str | None, Query(max_length=200, pattern=NAME_PATTERN)] = None,
    case_id: Annotated[str | None, Query(max_length=230, pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[ConflictOut]:
    """Labels that disagreed with the label their case had, and which one holds."""
    found = access.labels.conflicts(
        principal, model=model, case_id=case_id, limit=limit, offset=offset
    )
    return [ConflictOut.of(c) for c in found]
