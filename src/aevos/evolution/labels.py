"""Labels of kept cases (``app.labels``): late ground truth, listing, conflicts.

People's decisions become labels on their own (the inbox records one with each submission,
:mod:`aevos.people.labelling`). This service takes the labels that arrive later from the
world — a claim's final outcome weeks on — by Python, ``POST /v1/labels`` and ``aevos labels
add``. A label for a case id the tenant does not have is refused with
:class:`~aevos.errors.CaseNotFoundError` (``case_not_found``) and the refusal is audited as
``label.rejected``; so is a label that cannot be one (:class:`~aevos.errors.LabelInputError`).

Ranking (:func:`aevos.records.label.effective`): ground truth outranks a review or a QA
answer, whenever either arrives; of labels of one rank the latest holds. A label that
disagrees with the one its case had is recorded as a conflict, never written over.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent
from ..errors import AevosError, CaseNotFoundError, LabelInputError
from ..people.labelling import record_label
from ..records.label import (
    LabelConflict,
    LabelRecord,
    LabelSource,
    check_case_id,
    check_label,
    check_source,
    effective,
)
from ..storage.labels import CaseRef, NewLabel

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage import Store, UnitOfWork

#: Most labels one call (one HTTP request) may record.
MAX_BATCH = 1000
MAX_LIMIT = 10_000


class Labels:
    """Labels of cases: record late ground truth, list, conflicts (``app.labels``).

    Like ``app.tasks`` this is the ungoverned service: it trusts its caller about who is
    acting. Requests with a token go through :class:`~aevos.access.Access`."""

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    # -- recording ------------------------------------------------------------------------

    def record(
        self,
        case_id: str,
        label: Any,
        *,
        tenant: str = "default",
        source: str = "ground_truth",
        actor: str,
        unbiased: bool = False,
        at: float | None = None,
    ) -> LabelRecord:
        """Record that ``case_id``'s right answer is ``label``, by ``actor`` (audited).

        ``source`` is ``ground_truth`` (the default: it outranks every reviewer), or
        ``review``/``qa`` for people's decisions made outside aevos. ``unbiased`` says the
        case was labelled independently of the model's confidence (ground truth that
        arrives for every case, say). ``at`` is when the label became known (default now).
        """
        item = {"case_id": case_id, "label": label, "source": source, "unbiased": unbiased}
        if at is not None:
            item["at"] = at
        return self.record_many([item], tenant=tenant, actor=actor)[0]

    def record_many(
        self, items: Sequence[Mapping[str, Any]], *, tenant: str = "default", actor: str
    ) -> builtins.list[LabelRecord]:
        """Record a batch of labels (each a mapping of ``case_id``, ``label`` and optionally
        ``source``, ``unbiased``, ``at``), all in one transaction: one unknown case or bad
        label refuses the whole batch, names the item, and is audited."""
        try:
            checked = _check_batch(items)
        except LabelInputError as exc:
            self._reject(tenant, actor, exc, case_id=None)
            raise
        now = time.time()
        missing: tuple[int, str] | None = None
        with self.store.transaction() as uow:
            out: builtins.list[LabelRecord] = []
            cases = []
            for index, (case_id, *_rest) in enumerate(checked):
                case = self._case(uow, tenant, case_id)
                if case is None:
                    missing = (index, case_id)
                    break
                cases.append(case)
            else:
                for case, (_id, value, source, unbiased, at) in zip(cases, checked, strict=True):
                    new = NewLabel(
                        tenant=tenant,
                        case=case,
                        label=value,
                        source=source,
                        unbiased=unbiased,
                        actor=actor,
                        labelled_at=now if at is None else at,
                    )
                    out.append(record_label(uow, self.audit, new)[0])
        if missing is not None:
            index, case_id = missing
            error = CaseNotFoundError(f"labels[{index}]: no case {case_id!r} in this tenant")
            self._reject(tenant, actor, error, case_id=case_id)
            raise error
        return out

    @staticmethod
    def _case(uow: UnitOfWork, tenant: str, case_id: str) -> CaseRef | None:
        return uow.labels.case(tenant, case_id)

    def _reject(self, tenant: str, actor: str, exc: AevosError, *, case_id: str | None) -> None:
        """Audit a refused label with its reason (the error's code and message)."""
        self.audit.append(
            AuditEvent(
                action="label.rejected",
                actor=actor,
                tenant=tenant,
                subject=None if case_id is None else f"case:{case_id}",
                data={"reason": exc.code, "detail": exc.message},
            )
        )

    # -- reads ----------------------------------------------------------------------------

    def list(
        self,
        *,
        tenant: str = "default",
        case_id: str | None = None,
        model: str | None = None,
        source: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[LabelRecord]:
        """The tenant's labels, oldest first (every label, superseded ones included)."""
        wanted = None if source is None else check_source(source)
        with self.store.reading() as uow:
            return uow.labels.find(
                tenant,
                case_id=case_id,
                model=model,
                source=wanted,
                since=since,
                limit=min(limit, MAX_LIMIT),
                offset=offset,
            )

    def effective(self, case_id: str, *, tenant: str = "default") -> LabelRecord | None:
        """The label the case has now (None if it has none)."""
        with self.store.reading() as uow:
            return effective(uow.labels.of_case(tenant, case_id))

    def count(
        self, *, tenant: str = "default", model: str | None = None, since: float | None = None
    ) -> int:
        """How many labels were recorded (of ``model``, since ``since``): what a
        retraining trigger "every N new labels" counts."""
        with self.store.reading() as uow:
            return uow.labels.count(tenant, model=model, since=since)

    def conflicts(
        self,
        *,
        tenant: str = "default",
        model: str | None = None,
        case_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[LabelConflict]:
        """Labels that disagreed with the label their case had, oldest first."""
        with self.store.reading() as uow:
            return uow.labels.conflicts(
                tenant, model=model, case_id=case_id, limit=min(limit, MAX_LIMIT), offset=offset
            )


def _check_batch(
    items: Sequence[Mapping[str, Any]],
) -> builtins.list[tuple[str, Any, LabelSource, bool, float | None]]:
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise LabelInputError("labels", "must be a list of labels")
    if not 0 < len(items) <= MAX_BATCH:
        raise LabelInputError("labels", f"must hold 1 to {MAX_BATCH} labels, got {len(items)}")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise LabelInputError(f"labels[{index}]", "must be an object")
        unknown = set(item) - {"case_id", "label", "source", "unbiased", "at"}
        if unknown:
            raise LabelInputError(f"labels[{index}].{sorted(unknown)[0]}", "is not a field")
        try:
            case_id = check_case_id(item.get("case_id"))
            value = check_label(item.get("label"))
            source = check_source(item.get("source", "ground_truth"))
        except LabelInputError as exc:
            raise LabelInputError(f"labels[{index}].{exc.field}", exc.message) from None
        unbiased = item.get("unbiased", False)
        if not isinstance(unbiased, bool):
            raise LabelInputError(f"labels[{index}].unbiased", "must be true or false")
        at = item.get("at")
        if at is not None and (
            isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at < 1e11
        ):
            raise LabelInputError(f"labels[{index}].at", "must be epoch seconds")
        out.append((case_id, value, source, unbiased, None if at is None else float(at)))
    return out
