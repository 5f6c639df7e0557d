"""Recording a label with its audit records, in the caller's unit of work.

Both ways a label arrives go through :func:`record_label`: a person deciding a task (the
inbox, in the transaction of the submission and its feedback record) and late ground truth
(:class:`aevos.evolution.Labels`). The label is audited as ``label.recorded``; a label that
disagrees with the one its case had is also ``label.conflict``, naming both labels and which
one the case has now. Audit records carry a digest of the label, never the label: a text
field's value may hold personal data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import codec
from ..audit import AuditEvent
from ..records.label import LabelConflict, LabelRecord, LabelSource, check_label
from ..records.task import Task
from ..storage.labels import TASK_CASE_PREFIX, CaseRef, NewLabel

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..records.task import Feedback
    from ..storage import UnitOfWork


def record_label(
    uow: UnitOfWork, audit: AuditLog, new: NewLabel
) -> tuple[LabelRecord, LabelConflict | None]:
    """Insert ``new`` and audit it (and its conflict, if any) in ``uow``."""
    record, conflict = uow.labels.record(new)
    audit.append(
        AuditEvent(
            action="label.recorded",
            actor=new.actor,
            tenant=new.tenant,
            subject=f"case:{record.case_id}",
            run_id=record.run_id,
            data={
                "label_id": record.id,
                "source": record.source.value,
                "model": record.model,
                "unbiased": record.unbiased,
                "feedback_id": record.feedback_id,
                "label_digest": codec.digest(record.label),
            },
        ),
        uow=uow,
    )
    if conflict is not None:
        audit.append(
            AuditEvent(
                action="label.conflict",
                actor=new.actor,
                tenant=new.tenant,
                subject=f"case:{record.case_id}",
                run_id=record.run_id,
                data={
                    "conflict_id": conflict.id,
                    "label_id": conflict.label_id,
                    "other_id": conflict.other_id,
                    "source": conflict.source.value,
                    "other_source": conflict.other_source.value,
                    "winner_id": conflict.winner_id,
                },
            ),
            uow=uow,
        )
    return record, conflict


def case_id_of(task: Task) -> str:
    """The case a task's decision labels: the model call it suggested from (its call id),
    or, without one, the task itself (CONTRACTS item 1)."""
    return task.call_id if task.call_id else TASK_CASE_PREFIX + task.task_id


def label_from_decision(task: Task, record: Feedback) -> NewLabel | None:
    """The label a decision gives its case: the submitted value of the field the
    prediction's suggestion filled (``task.label_field``). None when the task names no such
    field, or the person left it empty, or its value cannot be a label (a list, say)."""
    if task.label_field is None:
        return None
    value = record.decision.get(task.label_field)
    if value is None:
        return None
    try:
        label = check_label(value)
    except ValueError:
        return None
    return NewLabel(
        tenant=task.tenant,
        case=CaseRef(
            case_id=case_id_of(task),
            model=task.model,
            model_version=task.model_version,
            run_id=task.run_id,
            task_id=task.task_id,
        ),
        label=label,
        source=LabelSource.QA if task.purpose == "qa" else LabelSource.REVIEW,
        unbiased=task.unbiased,
        actor=record.reviewer,
        labelled_at=record.decided_at,
        feedback_id=record.id,
    )
