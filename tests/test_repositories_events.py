"""The dead-letter and event repositories on SQLite and PostgreSQL: one dead letter per
event however often it is redelivered, tenant-scoped reads, a replay marked once; runs
started in a batch, idempotent by key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aevos.errors import IdempotencyConflictError
from aevos.records.run import NewRun
from aevos.storage import Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def _add(store: Store, event_id: str, *, tenant: str = "acme", reason: str = "r1") -> int:
    with store.transaction() as uow:
        row = uow.dead_letters.add(
            tenant=tenant,
            channel="nats",
            source="orders",
            event_id=event_id,
            code="invalid_event",
            reason=reason,
            payload=b"\x00{not json",
            payload_digest="d" * 64,
            meta='{"stream": "ORDERS"}',
            now=10.0,
        )
    return row.id


def test_a_redelivered_event_is_one_dead_letter_with_its_latest_reason(store: Store) -> None:
    first = _add(store, "ORDERS:1")
    again = _add(store, "ORDERS:1", reason="r2")
    other = _add(store, "ORDERS:1", tenant="globex")
    assert first == again and other != first
    with store.reading() as uow:
        (letter,) = uow.dead_letters.find("acme")
        assert letter.reason == "r2" and letter.payload == b"\x00{not json"
        assert letter.status == "DEAD" and letter.attempts == 0
        assert uow.dead_letters.get("globex", first) is None  # another tenant's id
        assert uow.dead_letters.count("acme") == 1


def test_a_replay_is_marked_once_and_a_failed_one_keeps_the_letter_dead(store: Store) -> None:
    letter_id = _add(store, "ORDERS:2")
    with store.transaction() as uow:
        uow.dead_letters.failed_again(letter_id, "event_mapping_failed", "r3", 11.0)
    with store.transaction() as uow:
        assert uow.dead_letters.replayed(letter_id, "run-1", 12.0)
        assert not uow.dead_letters.replayed(letter_id, "run-2", 13.0)
    with store.reading() as uow:
        letter = uow.dead_letters.get("acme", letter_id)
    assert letter is not None
    assert (letter.status, letter.run_id, letter.attempts, letter.code) == (
        "REPLAYED",
        "run-1",
        2,
        "event_mapping_failed",
    )
    # A redelivery of a replayed event does not bring it back.
    _add(store, "ORDERS:2", reason="again")
    with store.reading() as uow:
        assert uow.dead_letters.count("acme") == 0


def _new(run_id: str, key: str, workflow: str = "wf") -> NewRun:
    return NewRun(
        run_id=run_id,
        workflow=workflow,
        queue="default",
        input_json='{"args": [], "kwargs": {}}',
        code_version="v",
        tenant="acme",
        idempotency_key=key,
    )


def test_runs_started_in_a_batch_are_idempotent_by_key(store: Store) -> None:
    seen: list[list[bool]] = []
    first = store.insert_runs(
        [_new("r1", "k1"), _new("r2", "k2")], also=lambda uow, made: seen.append(made)
    )
    again = store.insert_runs(
        [_new("r3", "k1"), _new("r4", "k3")], also=lambda uow, made: seen.append(made)
    )
    assert first == [("r1", True), ("r2", True)]
    assert again == [("r1", False), ("r4", True)]
    assert seen == [[True, True], [False, True]]
    with pytest.raises(IdempotencyConflictError):
        store.insert_runs([_new("r5", "k2", workflow="other")])
    assert store.get_run("r4").idempotency_key == "k3"


def test_the_correlated_run_is_found_by_key_then_by_id(store: Store) -> None:
    store.insert_runs([_new("run-a", "order-7")])
    with store.transaction() as uow:
        assert uow.events.run_of("acme", "order-7", lock=True) == ("run-a", "ENQUEUED")
        assert uow.events.run_of("acme", "run-a") == ("run-a", "ENQUEUED")
        assert uow.events.run_of("globex", "order-7") is None
