"""The rollout controller on SQLite and PostgreSQL, with real banking77 models called
through the real gateway: shadow -> canary steps -> promotion, a worse candidate rolled back
at the first step, an inconclusive step paused with an operator task, operators racing, and
traffic split as the rollout's state in the database says."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.rollout_support import (
    CRITERIA,
    MODEL,
    Traffic,
    calls,
    policies,
    register,
    trained,
    wait_for,
)

from aevos import Aevos
from aevos.errors import ModelNotFoundError, RolloutConflictError, RolloutInputError
from aevos.identity import Principal, Role
from aevos.rollouts import Criteria, Rollout
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
    yield app
    app.close()


def actions(app: Aevos, rollout: Rollout) -> list[str]:
    return [t.action for t in app.rollouts.history(rollout.rollout_id)]


def test_a_good_candidate_goes_from_shadow_through_every_canary_step_to_champion(
    app: Aevos,
) -> None:
    rollouts, traffic = app.rollouts, Traffic(app)
    rollout = rollouts.start(MODEL, 2, criteria=CRITERIA, actor="operator:ops#t1")
    assert (rollout.state, rollout.step_name, rollout.champion) == ("progressing", "shadow", 1)
    assert rollout.deadline is not None and rollout.deadline > rollout.step_started_at

    # Shadow: every answer is the champion's; the candidate sees the same calls.
    answered = traffic.send(20)
    assert {(r.version, r.route) for r in answered} == {(1, "primary")}
    traffic.until(2, CRITERIA["min_calls"], "shadow")
    assert rollouts.tick() == [rollout.rollout_id]
    seen = [rollouts.get(rollout.rollout_id).step_name]
    for share in (5, 25, 50):
        traffic.until(2, CRITERIA["min_calls"], "canary")
        assert rollouts.tick() == [rollout.rollout_id]
        seen.append(rollouts.get(rollout.rollout_id).step_name)
        assert seen[-1] != f"canary {share}%"
    assert seen == ["canary 5%", "canary 25%", "canary 50%", "canary 100%"]
    # All traffic to the candidate at the last step, then promoted through the gate.
    app.gateway.rollout_routes.forget()
    assert {r.version for r in traffic.send(30)} == {2}
    traffic.until(2, CRITERIA["min_calls"], "canary")
    rollouts.tick()
    done = rollouts.get(rollout.rollout_id)
    assert done.state == "promoted" and done.deadline is None
    assert app.models.aliases(MODEL)["champion"] == 2
    assert rollouts.active(MODEL) is None
    assert actions(app, rollout) == ["rollout.started"] + ["rollout.advanced"] * 4 + [
        "rollout.promoted"
    ]
    history = rollouts.history(rollout.rollout_id)
    assert [(t.from_step, t.to_step) for t in history[1:5]] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(t.analysis and t.analysis["outcome"] == "successful" for t in history[1:])
    # Versions outside the rollout (v3, v4 registered meanwhile) never received a call.
    assert [v.version for v in app.models.versions(MODEL)] == [1, 2, 3, 4]
    traffic.settle()
    assert calls(app, 3) == [] and calls(app, 4) == []


def test_a_worse_candidate_is_rolled_back_in_shadow_and_the_champion_is_untouched(
    app: Aevos,
) -> None:
    rollouts, traffic = app.rollouts, Traffic(app)
    rollout = rollouts.start(MODEL, 3, criteria=CRITERIA)
    traffic.until(3, 30, "shadow")
    assert rollouts.tick() == [rollout.rollout_id]
    ended = rollouts.get(rollout.rollout_id)
    assert ended.state == "rolled_back" and ended.step == 0
    assert ended.last_verdict is not None and ended.last_verdict["outcome"] == "failed"
    assert "agreement" in ended.reason
    assert app.models.aliases(MODEL)["champion"] == 1
    (record,) = [r for r in app.audit.query("default") if r.action == "rollout.rolled_back"]
    assert record.subject == f"rollout:{rollout.rollout_id}"
    assert record.data["analysis"]["outcome"] == "failed" and record.data["to_step"] == 0
    # Traffic back to the champion alone: no canary, no shadow.
    app.gateway.rollout_routes.forget()

    def shadows_landed() -> bool:  # every call of the shadow step had its shadow recorded
        traffic.settle()
        return len(calls(app, 3)) == len(calls(app, 1))

    wait_for(shadows_landed)
    before = len(calls(app, 3))
    assert {(r.version, r.route) for r in traffic.send(40)} == {(1, "primary")}
    traffic.settle()
    assert len(calls(app, 3)) == before
    assert calls(app, 2) == [] and calls(app, 4) == []


def test_canary_shares_follow_the_step_and_stick_to_their_key(app: Aevos) -> None:
    rollouts = app.rollouts
    rollout = rollouts.start(MODEL, 2, steps=[25, 100], criteria=CRITERIA)
    gateway, text = app.gateway, "My card has not arrived yet"
    first = {k: gateway.predict(MODEL, text, key=f"k{k}").version for k in range(400)}
    share = sum(1 for v in first.values() if v == 2) / len(first)
    assert 0.18 < share < 0.32
    again = {k: gateway.predict(MODEL, text, key=f"k{k}").version for k in range(400)}
    assert again == first and set(first.values()) == {1, 2}
    # An operator's pause holds the split; an abort ends it at once for this process.
    rollouts.pause(rollout.rollout_id, actor="operator:ops#t1", reason="looking")
    gateway.rollout_routes.forget()
    assert {k: gateway.predict(MODEL, text, key=f"k{k}").version for k in range(400)} == first
    rollouts.abort(rollout.rollout_id, actor="operator:ops#t1")
    gateway.rollout_routes.forget()
    assert {gateway.predict(MODEL, text, key=f"k{k}").version for k in range(400)} == {1}


def test_an_inconclusive_step_pauses_with_an_operator_task_that_decides(app: Aevos) -> None:
    rollouts = app.rollouts
    quiet = rollouts.start(MODEL, 2, criteria=CRITERIA, step_minutes=1)
    assert quiet.deadline is not None
    # No traffic at all, and the deadline passed: never left progressing.
    assert rollouts.tick(now=quiet.deadline + 1) == [quiet.rollout_id]
    paused = rollouts.get(quiet.rollout_id)
    assert paused.state == "paused" and paused.deadline is None
    assert paused.reason.startswith("inconclusive")
    assert paused.last_verdict is not None and paused.last_verdict["outcome"] == "inconclusive"
    worker = app.worker(concurrency=2).start()
    try:
        wait_for(lambda: bool(app.tasks.list(queue=TASK_QUEUE)))
        (task,) = app.tasks.list(queue=TASK_QUEUE)
        assert task.case["rollout_id"] == quiet.rollout_id
        assert rollouts.tick(now=quiet.deadline + 2) == []  # the same task, not another
        assert len(app.tasks.list(queue=TASK_QUEUE)) == 1
        app.tasks.claim(task.task_id, actor="admin:olga#t9")
        app.tasks.submit(
            task.task_id, {"action": "resume", "note": "traffic is coming"}, actor="admin:olga#t9"
        )
        wait_for(lambda: rollouts.get(quiet.rollout_id).state == "progressing")
    finally:
        worker.stop()
    resumed = rollouts.get(quiet.rollout_id)
    assert resumed.deadline is not None and resumed.reason == "traffic is coming"
    last = rollouts.history(quiet.rollout_id)[-1]
    assert (last.action, last.actor) == ("rollout.resumed", "admin:olga#t9")


def test_an_operator_task_answered_abort_ends_the_rollout(app: Aevos) -> None:
    rollouts = app.rollouts
    quiet = rollouts.start(MODEL, 2, criteria=CRITERIA)
    assert quiet.deadline is not None
    rollouts.tick(now=quiet.deadline + 1)
    worker = app.worker(concurrency=2).start()
    try:
        wait_for(lambda: bool(app.tasks.list(queue=TASK_QUEUE)))
        (task,) = app.tasks.list(queue=TASK_QUEUE)
        app.tasks.claim(task.task_id, actor="admin:olga#t9")
        app.tasks.submit(task.task_id, {"action": "abort"}, actor="admin:olga#t9")
        wait_for(lambda: rollouts.get(quiet.rollout_id).state == "aborted")
    finally:
        worker.stop()
    assert rollouts.active(MODEL) is None and app.models.aliases(MODEL)["champion"] == 1


def test_two_operators_acting_at_once_exactly_one_wins(app: Aevos) -> None:
    rollouts = app.rollouts
    rollout = rollouts.start(MODEL, 2, criteria=CRITERIA)
    with app.store.reading() as uow:
        stale = uow.rollouts.get("default", rollout.rollout_id)
    assert stale is not None
    outcomes: list[Any] = []
    gate = threading.Barrier(4)

    def act(action: str, who: str) -> None:
        gate.wait()
        try:
            done = getattr(rollouts, action)(rollout.rollout_id, actor=who)
            outcomes.append(done.state)
        except RolloutConflictError as exc:
            outcomes.append(exc)

    threads = [
        threading.Thread(target=act, args=(a, f"operator:{a}#t"))
        for a in ("abort", "pause", "rollback", "abort")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(outcomes) == 4
    ended = rollouts.get(rollout.rollout_id).state
    # A pause may win and then one ending action after it; never two endings.
    endings = [t for t in actions(app, rollout) if t in ("rollout.aborted", "rollout.rolled_back")]
    assert len(endings) <= 1 and len(winners) == len(actions(app, rollout)) - 1
    assert ended in ("paused", "aborted", "rolled_back")
    # A stale revision never moves it: the loser is told.
    with pytest.raises(RolloutConflictError):
        rollouts.move(stale, "rollout.paused", "operator:late#t", "", state="paused")
    assert rollouts.get(rollout.rollout_id).state == ended


def test_starting_refuses_what_cannot_be_and_audits_the_refusal(app: Aevos) -> None:
    rollouts = app.rollouts
    bad: list[tuple[dict[str, Any], str]] = [
        ({"steps": [5, 5, 100]}, "steps"),
        ({"steps": [0, 50]}, "steps"),
        ({"steps": [0, 101]}, "steps"),
        ({"steps": []}, "steps"),
        ({"steps": "0,100"}, "steps"),
        ({"step_minutes": 0}, "step_minutes"),
        ({"step_minutes": float("nan")}, "step_minutes"),
        ({"criteria": {"min_calls": "many", "nope": 1}}, "criteria"),
    ]
    for options, field in bad:
        with pytest.raises(RolloutInputError) as caught:
            rollouts.start(MODEL, 2, **options)
        assert caught.value.field == field, options
    with pytest.raises(RolloutInputError) as caught:
        rollouts.start(MODEL, 1)
    assert caught.value.field == "version" and "champion" in caught.value.message
    with pytest.raises(ModelNotFoundError):
        rollouts.start(MODEL, 99)
    first = rollouts.start(MODEL, 2, criteria=Criteria(min_calls=5))
    with pytest.raises(RolloutConflictError):
        rollouts.start(MODEL, 3)
    rejected = [r for r in app.audit.query("default") if r.action == "rollout.rejected"]
    assert len(rejected) == len(bad) + 3
    assert rejected[-1].data["reason"] == "rollout_conflict"
    assert rollouts.active(MODEL) == rollouts.get(first.rollout_id)
    assert [r.rollout_id for r in rollouts.list(model=MODEL)] == [first.rollout_id]


def test_an_analysis_that_raises_is_recorded_retried_and_never_outlives_the_deadline(
    app: Aevos,
) -> None:
    rollouts = app.rollouts
    started = rollouts.start(MODEL, 2, criteria=CRITERIA)
    assert started.deadline is not None
    # A row whose criteria no analysis can judge (written by hand, as an older version or a
    # botched migration might): the analysis raises on every tick.
    with app.store.transaction() as uow:
        record = uow.rollouts.get("default", started.rollout_id)
        assert record is not None
        uow.rollouts.transition(record.rollout_id, record.revision, 1.0, state="aborted")
        broken = dataclasses.replace(
            record, rollout_id="ro_broken", criteria={"min_calls": "many"}, revision=0
        )
        assert uow.rollouts.insert(broken)
    assert rollouts.tick(now=started.deadline - 1) == []
    failing = rollouts.get("ro_broken")
    assert failing.state == "progressing" and failing.reason.startswith("analysis failed:")
    assert rollouts.tick(now=started.deadline - 0.5) == []  # retried, still there
    assert rollouts.tick(now=started.deadline + 1) == ["ro_broken"]
    paused = rollouts.get("ro_broken")
    assert paused.state == "paused" and paused.deadline is None
    assert paused.reason.startswith("inconclusive") and "analysis failed" in paused.reason
    (run,) = [r for r in app.list_runs() if r.workflow == "aevos.rollout.operator"]
    assert run.input["args"] == ["ro_broken", paused.revision]


def test_a_promotion_the_policy_puts_to_a_person_waits_for_four_eyes(
    database_url: str, tmp_path: Path, artifacts: dict[str, bytes]
) -> None:
    app = Aevos(database_url, poll_interval=0.02, policies=policies(tmp_path, "approve"))
    try:
        register(app, artifacts)
        rollouts = app.rollouts
        rollout = rollouts.start(MODEL, 2, steps=[100], criteria=CRITERIA)
        waiting = rollouts.promote(rollout.rollout_id, actor="operator:ops#t1")
        assert waiting.state == "paused" and waiting.reason.startswith("awaiting approval")
        assert app.models.aliases(MODEL)["champion"] == 1
        (approval,) = app.approvals.list(model=MODEL)
        assert approval.requester_name == "ops"
        assert rollouts.tick() == []  # nothing to do until a second person decides
        lead = Principal(token_id="t2", tenant="default", role=Role.ADMIN, name="lead")
        app.approvals.approve(approval.approval_id, approver=lead)
        assert rollouts.tick() == [rollout.rollout_id]
        done = rollouts.get(rollout.rollout_id)
        assert done.state == "promoted" and app.models.aliases(MODEL)["champion"] == 2
        assert [t.action for t in rollouts.history(rollout.rollout_id)] == [
            "rollout.started",
            "rollout.paused",
            "rollout.promoted",
        ]
    finally:
        app.close()


def test_the_public_names_of_rollouts() -> None:
    import aevos.rollouts

    assert aevos.rollouts.__all__ == [
        "DEFAULT_STEPS",
        "Criteria",
        "Figures",
        "Replay",
        "ReplayCriteria",
        "Replays",
        "Rollout",
        "Rollouts",
        "Transition",
        "Verdict",
        "judge",
        "measure",
    ]


def test_workers_ticking_at_once_move_a_rollout_once(app: Aevos) -> None:
    rollouts = app.rollouts
    quiet = rollouts.start(MODEL, 2, criteria=CRITERIA)
    assert quiet.deadline is not None
    late = quiet.deadline + 1
    moved: list[list[str]] = []
    gate = threading.Barrier(3)

    def tick() -> None:
        gate.wait()
        moved.append(rollouts.tick(now=late))

    threads = [threading.Thread(target=tick) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(m) for m in moved) == [0, 0, 1]
    assert actions(app, quiet) == ["rollout.started", "rollout.paused"]
    operator_runs = [r for r in app.list_runs() if r.workflow == "aevos.rollout.operator"]
    assert len(operator_runs) == 1


def test_a_rollout_replaces_the_code_canary_and_the_code_route_returns_after_it(
    app: Aevos,
) -> None:
    from aevos.models.routing import Canary

    gateway, text = app.gateway, "I still have not received my new card"
    gateway.route(MODEL, canary=Canary(4, 50))
    rollout = app.rollouts.start(MODEL, 2, steps=[25, 100], criteria=CRITERIA)
    during = {gateway.predict(MODEL, text, key=f"k{k}").version for k in range(300)}
    assert during == {1, 2}  # version 4, the code's canary, gets nothing meanwhile
    app.rollouts.abort(rollout.rollout_id)
    gateway.rollout_routes.forget()
    after = {gateway.predict(MODEL, text, key=f"k{k}").version for k in range(300)}
    assert after == {1, 4}


def test_a_gate_that_cannot_decide_is_retried_then_paused_at_the_deadline(app: Aevos) -> None:
    rollouts, traffic = app.rollouts, Traffic(app)
    rollout = rollouts.start(MODEL, 2, steps=[100], criteria=CRITERIA, policy="no-such-policy")
    assert rollout.deadline is not None
    traffic.until(2, CRITERIA["min_calls"], "canary")
    assert rollouts.tick() == []
    waiting = rollouts.get(rollout.rollout_id)
    assert waiting.state == "progressing" and "promotion gate failed" in waiting.reason
    assert rollouts.tick(now=rollout.deadline + 1) == [rollout.rollout_id]
    paused = rollouts.get(rollout.rollout_id)
    assert paused.state == "paused" and paused.reason.startswith("inconclusive")
    assert app.models.aliases(MODEL)["champion"] == 1
