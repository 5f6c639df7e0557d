"""Labels of cases and their conflicts: the labels repository.

A label is inserted, never updated: when it disagrees with the label its case had, the
disagreement is a row of ``aevos_label_conflicts`` in the same unit of work, naming which of
the two the case has now (:func:`aevos.records.label.effective` decides). The effective
labels of a model's cases are what a dataset version is cut from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.label import (
    DatasetRow,
    LabelConflict,
    LabelRecord,
    LabelSource,
    LabelValue,
    effective,
    same_label,
)
from .repository import Repository
from .schema import cases, label_conflicts, labels, tasks

TASK_CASE_PREFIX = "task:"
_CHUNK = 500


@dataclass(frozen=True)
class CaseRef:
    """What a label needs to know of the case it labels."""

    case_id: str
    model: str | None
    model_version: str | None
    run_id: str | None
    task_id: str | None


@dataclass(frozen=True)
class NewLabel:
    """A label to record (the repository gives it its id)."""

    tenant: str
    case: CaseRef
    label: LabelValue
    source: LabelSource
    unbiased: bool
    actor: str
    labelled_at: float
    feedback_id: int | None = None


def label_of(row: Any) -> LabelRecord:
    return LabelRecord(
        id=int(row.id),
        tenant=row.tenant,
        case_id=row.case_id,
        model=row.model,
        model_version=row.model_version,
        label=codec.decode(row.label),
        source=LabelSource(row.source),
        unbiased=bool(row.unbiased),
        run_id=row.run_id,
        task_id=row.task_id,
        feedback_id=row.feedback_id,
        actor=row.actor,
        labelled_at=float(row.labelled_at),
    )


class LabelRepository(Repository):
    """Labels and label conflicts, in the unit of work it is bound to."""

    def case(self, tenant: str, case_id: str) -> CaseRef | None:
        """The case ``case_id`` of ``tenant``: a kept case, or else as the tasks that asked
        about it know it (a model call some task showed a person, by its ``call_id``, or
        a task itself, ``task:<task_id>``), so a label needs no kept input; None if the
        tenant has no such case."""
        kept = self.conn.execute(
            sa.select(cases.c.model, cases.c.version, cases.c.run_id, cases.c.task_id).where(
                cases.c.tenant == tenant, cases.c.case_id == case_id
            )
        ).first()
        if kept is not None:
            ref = None if kept.model is None or kept.version is None else kept.version
            return CaseRef(
                case_id,
                kept.model,
                None if ref is None else f"{kept.model}@{ref}",
                kept.run_id,
                kept.task_id,
            )
        if case_id.startswith(TASK_CASE_PREFIX):
            task_id = case_id[len(TASK_CASE_PREFIX) :]
            row = self.conn.execute(
                sa.select(tasks.c.model, tasks.c.model_version, tasks.c.run_id).where(
                    tasks.c.task_id == task_id, tasks.c.tenant == tenant
                )
            ).first()
            if row is None:
                return None
            return CaseRef(case_id, row.model, row.model_version, row.run_id, task_id)
        call = self.conn.execute(
            sa.select(tasks.c.model, tasks.c.model_version, tasks.c.run_id, tasks.c.task_id)
            .where(tasks.c.call_id == case_id, tasks.c.tenant == tenant)
            .order_by(tasks.c.created_at)
            .limit(1)
        ).first()
        if call is None:
            return None
        return CaseRef(case_id, call.model, call.model_version, call.run_id, call.task_id)

    def of_case(self, tenant: str, case_id: str) -> list[LabelRecord]:
        """Every label of a case, oldest first."""
        rows = self.conn.execute(
            sa.select(labels)
            .where(labels.c.tenant == tenant, labels.c.case_id == case_id)
            .order_by(labels.c.id)
        )
        return [label_of(row) for row in rows]

    def effective_of(self, tenant: str, case_ids: Sequence[str]) -> dict[str, LabelRecord]:
        """``case_id -> the label it has now`` for the labelled cases among ``case_ids``."""
        by_case: dict[str, list[LabelRecord]] = {}
        wanted = sorted(set(case_ids))
        for i in range(0, len(wanted), _CHUNK):
            rows = self.conn.execute(
                sa.select(labels)
                .where(labels.c.tenant == tenant, labels.c.case_id.in_(wanted[i : i + _CHUNK]))
                .order_by(labels.c.case_id, labels.c.id)
            )
            for row in rows:
                record = label_of(row)
                by_case.setdefault(record.case_id, []).append(record)
        found: dict[str, LabelRecord] = {}
        for case_id, case_labels in by_case.items():
            best = effective(case_labels)
            if best is not None:
                found[case_id] = best
        return found

    def record(self, new: NewLabel) -> tuple[LabelRecord, LabelConflict | None]:
        """Insert ``new``; if it disagrees with the label its case had, record the conflict
        (and which of the two the case has now). Returns the label and the conflict."""
        before = self.of_case(new.tenant, new.case.case_id)
        current = effective(before)
        inserted = self.conn.execute(
            labels.insert().returning(labels.c.id),
            {
                "tenant": new.tenant,
                "case_id": new.case.case_id,
                "model": new.case.model,
                "model_version": new.case.model_version,
                "label": codec.encode(new.label, "label"),
                "source": new.source.value,
                "unbiased": int(new.unbiased),
                "run_id": new.case.run_id,
                "task_id": new.case.task_id,
                "feedback_id": new.feedback_id,
                "actor": new.actor,
                "labelled_at": new.labelled_at,
            },
        )
        record = LabelRecord(
            id=int(inserted.scalar_one()),
            tenant=new.tenant,
            case_id=new.case.case_id,
            model=new.case.model,
            model_version=new.case.model_version,
            label=new.label,
            source=new.source,
            unbiased=new.unbiased,
            run_id=new.case.run_id,
            task_id=new.case.task_id,
            feedback_id=new.feedback_id,
            actor=new.actor,
            labelled_at=new.labelled_at,
        )
        if current is None or same_label(current.label, record.label):
            return record, None
        winner = effective([*before, record])
        assert winner is not None
        values = {
            "tenant": new.tenant,
            "case_id": record.case_id,
            "model": record.model,
            "label_id": record.id,
            "other_id": current.id,
            "winner_id": winner.id,
            "recorded_at": new.labelled_at,
        }
        conflict_id = self.conn.execute(
            label_conflicts.insert().returning(label_conflicts.c.id), values
        ).scalar_one()
        conflict = LabelConflict(
            id=int(conflict_id),
            tenant=new.tenant,
            case_id=record.case_id,
            model=record.model,
            label_id=record.id,
            other_id=current.id,
            label=record.label,
            other=current.label,
            source=record.source,
            other_source=current.source,
            winner_id=winner.id,
            recorded_at=new.labelled_at,
        )
        return record, conflict

    def find(
        self,
        tenant: str,
        *,
        case_id: str | None = None,
        model: str | None = None,
        source: LabelSource | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[LabelRecord]:
        """The tenant's labels, oldest first."""
        query = sa.select(labels).where(labels.c.tenant == tenant)
        if case_id is not None:
            query = query.where(labels.c.case_id == case_id)
        if model is not None:
            query = query.where(labels.c.model == model)
        if source is not None:
            query = query.where(labels.c.source == source.value)
        if since is not None:
            query = query.where(labels.c.labelled_at >= since)
        query = query.order_by(labels.c.id).limit(limit).offset(offset)
        return [label_of(row) for row in self.conn.execute(query)]

    def count(self, tenant: str, *, model: str | None = None, since: float | None = None) -> int:
        """How many labels the tenant has (of ``model``, labelled since ``since``)."""
        query = sa.select(sa.func.count()).select_from(labels).where(labels.c.tenant == tenant)
        if model is not None:
            query = query.where(labels.c.model == model)
        if since is not None:
            query = query.where(labels.c.labelled_at >= since)
        return int(self.conn.execute(query).scalar_one())

    def conflicts(
        self,
        tenant: str,
        *,
        model: str | None = None,
        case_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[LabelConflict]:
        """The tenant's label conflicts, oldest first, with both labels."""
        new, old = labels.alias("new"), labels.alias("old")
        c = label_conflicts.c
        query = (
            sa.select(
                label_conflicts,
                new.c.label.label("new_label"),
                new.c.source.label("new_source"),
                old.c.label.label("old_label"),
                old.c.source.label("old_source"),
            )
            .join(new, new.c.id == c.label_id)
            .join(old, old.c.id == c.other_id)
            .where(c.tenant == tenant)
        )
        if model is not None:
            query = query.where(c.model == model)
        if case_id is not None:
            query = query.where(c.case_id == case_id)
        query = query.order_by(c.id).limit(limit).offset(offset)
        return [
            LabelConflict(
                id=int(row.id),
                tenant=row.tenant,
                case_id=row.case_id,
                model=row.model,
                label_id=int(row.label_id),
                other_id=int(row.other_id),
                label=codec.decode(row.new_label),
                other=codec.decode(row.old_label),
                source=LabelSource(row.new_source),
                other_source=LabelSource(row.old_source),
                winner_id=int(row.winner_id),
                recorded_at=float(row.recorded_at),
            )
            for row in self.conn.execute(query)
        ]

    def effective_rows(self, tenant: str, model: str, until: float | None) -> list[DatasetRow]:
        """Each labelled case of ``model`` with the label it had at ``until`` (now if None),
        in canonical order: by labelling time, then case id.

        A row is unbiased when any label of its case was: the case was put to a person
        independently of the model's confidence, whoever labelled it last."""
        query = sa.select(labels).where(labels.c.tenant == tenant, labels.c.model == model)
        if until is not None:
            query = query.where(labels.c.labelled_at <= until)
        by_case: dict[str, list[LabelRecord]] = {}
        for row in self.conn.execute(query.order_by(labels.c.case_id, labels.c.id)):
            record = label_of(row)
            by_case.setdefault(record.case_id, []).append(record)
        rows: list[DatasetRow] = []
        for case_id, case_labels in by_case.items():
            best = effective(case_labels)
            assert best is not None
            rows.append(
                DatasetRow(
                    case_id=case_id,
                    label=best.label,
                    source=best.source,
                    unbiased=any(label.unbiased for label in case_labels),
                    run_id=best.run_id,
                    actor=best.actor,
                    labelled_at=best.labelled_at,
                )
            )
        rows.sort(key=lambda r: (r.labelled_at, r.case_id))
        return rows
