"""Contract tests of the labels and datasets repositories, on both backends.

Exercised through ``store.transaction()`` / ``store.reading()`` alone, as the services use
them: labels are only ever added, a disagreement is a conflict row naming the winner, and a
dataset version is stored once under its digest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aevos.records.label import DatasetInfo, DatasetRow, LabelSource
from aevos.records.task import Field, Form, TaskRequest
from aevos.storage import Store, open_store
from aevos.storage.labels import CaseRef, NewLabel


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


CASE = CaseRef("call-1", "intent", "intent@1", "run-1", None)


def _label(value: str, source: LabelSource, at: float, case: CaseRef = CASE) -> NewLabel:
    return NewLabel("acme", case, value, source, source is LabelSource.QA, f"by-{at}", at)


def test_labels_are_added_and_a_disagreement_is_a_conflict_naming_the_winner(
    store: Store,
) -> None:
    with store.transaction() as uow:
        review, none = uow.labels.record(_label("a", LabelSource.QA, 1.0))
        same, none2 = uow.labels.record(_label("a", LabelSource.REVIEW, 2.0))
        truth, conflict = uow.labels.record(_label("b", LabelSource.GROUND_TRUTH, 3.0))
        late, conflict2 = uow.labels.record(_label("a", LabelSource.REVIEW, 4.0))
    assert none is None and none2 is None
    assert conflict is not None and conflict.other_id == same.id
    assert conflict.winner_id == truth.id
    assert conflict2 is not None and conflict2.label_id == late.id
    assert conflict2.other_id == truth.id and conflict2.winner_id == truth.id
    with store.reading() as uow:
        assert [r.id for r in uow.labels.of_case("acme", "call-1")] == [
            review.id,
            same.id,
            truth.id,
            late.id,
        ]
        assert uow.labels.conflicts("acme") == [conflict, conflict2]
        assert uow.labels.conflicts("other") == []
        assert uow.labels.count("acme", model="intent") == 4
        assert uow.labels.find("acme", source=LabelSource.GROUND_TRUTH) == [truth]
        (row,) = uow.labels.effective_rows("acme", "intent", None)
        assert (row.label, row.source, row.unbiased, row.actor) == (
            "b",
            LabelSource.GROUND_TRUTH,
            True,  # a QA answer sampled the case at random
            "by-3.0",
        )
        (then,) = uow.labels.effective_rows("acme", "intent", 2.5)
        assert (then.label, then.source) == ("a", LabelSource.REVIEW)


def test_a_label_written_in_a_unit_of_work_that_raised_is_not_there(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as uow:
        uow.labels.record(_label("a", LabelSource.REVIEW, 1.0))
        raise RuntimeError("the rest of the submission failed")
    with store.reading() as uow:
        assert uow.labels.find("acme") == []


def test_a_case_is_found_by_its_task_call_id_or_task_id(store: Store) -> None:
    request = TaskRequest(
        title="t",
        form=Form([Field.choice("x", ["a"])]),
        model="intent",
        model_version="intent@2",
        call_id="call-9",
        purpose="qa",
        unbiased=True,
        label_field="x",
    )
    with store.transaction() as uow:
        uow.tasks.create(
            request, task_id="r.1", tenant="acme", run_id="r", workflow="w", seq=1, created_at=1
        )
    with store.reading() as uow:
        assert uow.labels.case("acme", "call-9") == CaseRef(
            "call-9", "intent", "intent@2", "r", "r.1"
        )
        assert uow.labels.case("acme", "task:r.1") == CaseRef(
            "task:r.1", "intent", "intent@2", "r", "r.1"
        )
        assert uow.labels.case("other", "call-9") is None
        assert uow.labels.case("acme", "call-0") is None
        task = uow.tasks.get("r.1")
    assert (task.purpose, task.unbiased, task.label_field) == ("qa", True, "x")


def _info(digest: str, rows: int, created_at: float) -> DatasetInfo:
    return DatasetInfo(
        digest, "acme", "intent", rows, 1, 1, 0, {"review": rows}, None, created_at, "x"
    )


def test_a_dataset_version_is_stored_once_and_read_in_pages(store: Store) -> None:
    rows = [
        DatasetRow(f"c{i:04d}", "a", LabelSource.REVIEW, False, "r", "x", float(i))
        for i in range(2500)
    ]
    first = _info("a" * 64, len(rows), 1.0)
    with store.transaction() as uow:
        stored, created = uow.datasets.insert(first, rows)
    assert created and stored == first
    with store.transaction() as uow:
        again, created_again = uow.datasets.insert(_info("a" * 64, len(rows), 9.0), rows[:1])
    assert not created_again and again == first  # the stored version, unchanged
    with store.reading() as uow:
        assert uow.datasets.rows("acme", "a" * 64) == rows
        pages = list(uow.datasets.iter_rows("acme", "a" * 64))
        assert [len(p) for p in pages] == [1000, 1000, 500]
        assert uow.datasets.get("other", "a" * 64) is None
        uow_rows = uow.datasets.rows("acme", "a" * 64, start=2499)
        assert uow_rows == rows[2499:]
    with store.transaction() as uow:
        uow.datasets.insert(_info("b" * 64, 1, 2.0), rows[:1])
    with store.reading() as uow:
        assert [d.digest for d in uow.datasets.find("acme")] == ["b" * 64, "a" * 64]
        assert uow.datasets.find("acme", model="other") == []
