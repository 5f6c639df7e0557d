"""Rollouts with ``replay=True`` on SQLite and PostgreSQL, real banking77 models through the
real gateway: the candidate re-decides the kept cases before it sees live traffic. A replay
that passes moves the rollout to shadow; one that fails ends it before the candidate ever
answers (or shadows) a live call; one with nothing to decide pauses it for an operator; and
a replay that never finishes cannot hold the rollout past its deadline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.rollout_support import CRITERIA, MODEL, Traffic, calls, policies, register, trained
from tests.rollout_support import wait_for as wait_until

from aevos import Aevos
from aevos.pii import Vault
from aevos.rollouts.operator import TASK_QUEUE


@pytest.fixture(scope="module")
def artifacts() -> dict[str, bytes]:
    return {
        "good": trained(),
        "good2": trained(c=5.0),
        "good3": trained(c=2.0),
        "bad": trained(shuffled=True),
    }


@pytest.fixture
def app(database_url: str, tmp_path: Path, artifacts: dict[str, bytes]) -> Iterator[Aevos]:
    app = Aevos(database_url, poll_interval=0.02, park_after=0.3, policies=policies(tmp_path))
    register(app, artifacts)
    app.replays  # noqa: B018 - built before any worker starts, so workers serve its queue
    yield app
    app.close()


def kept_traffic(app: Aevos, n: int = 80) -> Traffic:
    """``n`` champion decisions kept as cases (the vault encrypts them): what replays read."""
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    traffic = Traffic(app)
    traffic.send(n)
    traffic.settle()
    assert len(app.cases.find(tenant="default", model=MODEL, limit=1000)) == n
    return traffic


def settled(app: Aevos, rollout_id: str) -> str:
    """Run a worker until the controller moved the rollout out of ``replaying``."""
    worker = app.worker(concurrency=2).start()
    try:

        def moved() -> bool:
            app.rollouts.tick()
            return app.rollouts.get(rollout_id).state != "replaying"

        wait_until(moved, timeout=90)
    finally:
        worker.stop()
    return app.rollouts.get(rollout_id).state


def test_a_passing_replay_moves_the_rollout_to_shadow(app: Aevos) -> None:
    traffic = kept_traffic(app)
    rollout = app.rollouts.start(MODEL, 2, criteria=CRITERIA, replay=True)
    assert rollout.state == "replaying" and rollout.deadline is not None
    # While it replays, production answers as before and nothing is shadowed.
    assert {(r.version, r.route) for r in traffic.send(30)} == {(1, "primary")}
    traffic.settle()
    assert calls(app, 2) == []

    assert settled(app, rollout.rollout_id) == "progressing"
    moved = app.rollouts.get(rollout.rollout_id)
    assert moved.step_name == "shadow" and moved.deadline is not None
    replay = app.replays.latest(MODEL, 2)
    assert replay is not None and replay.status == "passed"
    history = app.rollouts.history(rollout.rollout_id)
    assert [(t.action, t.reason) for t in history] == [
        ("rollout.started", ""),
        ("rollout.advanced", "replay passed"),
    ]
    app.gateway.rollout_routes.forget()
    traffic.until(2, 5, "shadow")  # now, and only now, the candidate sees live calls


def test_a_failing_replay_ends_the_rollout_before_the_candidate_sees_a_live_call(
    app: Aevos,
) -> None:
    traffic = kept_traffic(app)
    rollout = app.rollouts.start(MODEL, 3, criteria=CRITERIA, replay=True)
    assert settled(app, rollout.rollout_id) == "failed"
    ended = app.rollouts.get(rollout.rollout_id)
    assert ended.deadline is None and ended.reason.startswith("replay failed")
    replay = app.replays.latest(MODEL, 3)
    assert replay is not None and replay.status == "failed"
    audited = [
        r
        for r in app.audit.query("default", action="rollout.failed")
        if r.data.get("rollout_id") == rollout.rollout_id or r.subject.endswith(rollout.rollout_id)
    ]
    assert len(audited) == 1 and audited[0].actor == "system:rollouts"
    assert app.models.aliases(MODEL) == {"champion": 1}
    assert app.rollouts.active(MODEL) is None
    app.gateway.rollout_routes.forget()
    assert {(r.version, r.route) for r in traffic.send(40)} == {(1, "primary")}
    traffic.settle()
    assert calls(app, 3) == []  # never answered, never shadowed a live call


def test_a_replay_with_nothing_to_decide_pauses_the_rollout_for_an_operator(app: Aevos) -> None:
    # No vault: nothing was ever kept to replay.
    rollout = app.rollouts.start(MODEL, 2, criteria=CRITERIA, replay=True)
    assert settled(app, rollout.rollout_id) == "paused"
    paused = app.rollouts.get(rollout.rollout_id)
    assert paused.reason.startswith("inconclusive") and "replay" in paused.reason
    assert paused.deadline is None
    worker = app.worker(concurrency=2).start()
    try:
        wait_until(lambda: bool(app.tasks.list(queue=TASK_QUEUE)))
    finally:
        worker.stop()
    (task,) = app.tasks.list(queue=TASK_QUEUE)
    assert task.case["rollout_id"] == rollout.rollout_id
    assert calls(app, 2) == [] and app.models.aliases(MODEL) == {"champion": 1}


def test_a_replay_that_never_finishes_pauses_the_rollout_at_its_deadline(app: Aevos) -> None:
    kept_traffic(app, 20)
    rollout = app.rollouts.start(MODEL, 2, criteria=CRITERIA, replay=True, step_minutes=1)
    assert rollout.deadline is not None
    # No worker runs the replay: before the deadline the controller waits...
    assert app.rollouts.tick(now=rollout.deadline - 1) == []
    assert app.rollouts.get(rollout.rollout_id).state == "replaying"
    # ...and at the deadline it pauses the rollout, with why, instead of waiting forever.
    assert app.rollouts.tick(now=rollout.deadline + 1) == [rollout.rollout_id]
    paused = app.rollouts.get(rollout.rollout_id)
    assert paused.state == "paused" and paused.deadline is None
    assert "did not finish by the deadline" in paused.reason
