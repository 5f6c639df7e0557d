"""Contract tests of the rollouts repository, on both backends: one active rollout per
model and tenant, revision-fenced transitions, and what the gateway routes by."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from aevos.records.rollout import RolloutRecord
from aevos.storage import Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def _rollout(
    rollout_id: str, model: str = "m", tenant: str = "acme", **changes: object
) -> RolloutRecord:
    record = RolloutRecord(
        rollout_id=rollout_id,
        tenant=tenant,
        model=model,
        version=2,
        champion=1,
        steps=(0, 5, 100),
        step=0,
        state="progressing",
        criteria={"min_calls": 5},
        step_seconds=600.0,
        step_started_at=10.0,
        deadline=610.0,
        replay=False,
        policy="promotion-gate",
        created_by="operator:ops#t",
        created_at=10.0,
        updated_at=10.0,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_one_active_rollout_per_model_and_tenant(store: Store) -> None:
    with store.transaction() as uow:
        assert uow.rollouts.insert(_rollout("r1"))
        assert not uow.rollouts.insert(_rollout("r2"))  # same model, still active
        assert uow.rollouts.insert(_rollout("r3", model="other"))
        assert uow.rollouts.insert(_rollout("r4", tenant="beta"))
        assert uow.rollouts.insert(_rollout("r5", state="aborted"))  # ended: no claim
    with store.reading() as uow:
        active = uow.rollouts.active("acme", "m")
        assert active is not None and active.rollout_id == "r1"
        assert active.steps == (0, 5, 100) and active.criteria == {"min_calls": 5}
        assert uow.rollouts.get("beta", "r1") is None  # tenant scoped
        assert [r.rollout_id for r in uow.rollouts.list("acme", active=True)] == ["r3", "r1"]
        assert [r.rollout_id for r in uow.rollouts.list("acme", active=False)] == ["r5"]
        assert {r.rollout_id for r in uow.rollouts.in_states({"progressing"})} == {
            "r1",
            "r3",
            "r4",
        }
    with store.transaction() as uow:
        assert uow.rollouts.transition("r1", 0, 20.0, state="rolled_back", deadline=None)
    with store.transaction() as uow:
        # Ended: the model is free for the next rollout.
        assert uow.rollouts.insert(_rollout("r6"))


def test_a_transition_applies_only_at_the_revision_it_read(store: Store) -> None:
    with store.transaction() as uow:
        uow.rollouts.insert(_rollout("r1"))
    with store.transaction() as uow:
        assert uow.rollouts.transition("r1", 0, 20.0, step=1, reason="advanced")
        assert not uow.rollouts.transition("r1", 0, 21.0, state="paused")  # stale
        assert not uow.rollouts.transition("nope", 0, 21.0, state="paused")
    with store.reading() as uow:
        found = uow.rollouts.get("acme", "r1")
    assert found is not None
    assert (found.revision, found.step, found.state, found.reason) == (
        1,
        1,
        "progressing",
        "advanced",
    )
    assert found.updated_at == 20.0
    with store.transaction() as uow, pytest.raises(ValueError):
        uow.rollouts.transition("r1", 1, 22.0, version=3)  # the candidate never changes


def test_routing_reads_the_split_in_force(store: Store) -> None:
    with store.transaction() as uow:
        uow.rollouts.insert(_rollout("r1", step=1))
        uow.rollouts.insert(_rollout("r2", model="replaying", state="replaying"))
    with store.reading() as uow:
        routing = uow.rollouts.routing("acme", "m")
        assert routing is not None and (routing.version, routing.share) == (2, 5)
        assert uow.rollouts.routing("acme", "replaying") is None
        assert uow.rollouts.routing("beta", "m") is None
    with store.transaction() as uow:
        uow.rollouts.transition("r1", 0, 20.0, state="paused", deadline=None)
    with store.reading() as uow:
        paused = uow.rollouts.routing("acme", "m")
        assert paused is not None and paused.share == 5  # an operator's pause holds it
    with store.transaction() as uow:
        uow.rollouts.transition("r1", 1, 21.0, last_verdict={"outcome": "failed"})
    with store.reading() as uow:
        assert uow.rollouts.routing("acme", "m") is None  # never route on a failed verdict
    with store.transaction() as uow:
        uow.rollouts.transition("r1", 2, 22.0, state="promoted")
    with store.reading() as uow:
        assert uow.rollouts.routing("acme", "m") is None
