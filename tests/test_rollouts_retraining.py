"""Retraining hands its candidate to a rollout when configured to (both backends, real
training on banking77 slices): the champion stays until the rollout promotes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.apps.retrain_app import CERTIFY, FAST, POLICIES, BankingLabels, banking

from aevos import Aevos
from aevos.errors import RetrainingConfigError

MODEL = "intents"


@pytest.fixture
def retrain_app(database_url: str) -> Iterator[Aevos]:
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=POLICIES
    )
    app.retraining.data = BankingLabels()
    yield app
    app.close()


def _run(app: Aevos) -> dict[str, object]:
    handle = app.retraining.start(MODEL)
    worker = app.worker(concurrency=1).start()
    try:
        result = handle.result(timeout=120)
    finally:
        worker.stop()
    assert isinstance(result, dict)
    return result


def test_a_retrained_candidate_is_rolled_out_instead_of_promoted(retrain_app: Aevos) -> None:
    app = retrain_app
    plan = {"steps": [0, 50, 100], "step_minutes": 5, "criteria": {"min_calls": 20}}
    config = app.retraining.configure(
        MODEL, recipe="tfidf-logreg", params=FAST, rollout=plan, **CERTIFY
    )
    assert config.rollout == plan
    # No champion yet: the first candidate is promoted as before.
    first = _run(app)
    assert first["promotion"]["promoted"] is True  # type: ignore[index]
    assert app.models.aliases(MODEL) == {"champion": 1} and app.rollouts.active(MODEL) is None

    app.retraining.data = BankingLabels(banking(per=50, seed=1))
    second = _run(app)
    promotion = second["promotion"]
    assert isinstance(promotion, dict)
    assert (promotion["decision"], promotion["promoted"]) == ("rollout", False)
    rollout = app.rollouts.get(promotion["rollout"])
    assert (rollout.model, rollout.version, rollout.champion) == (MODEL, 2, 1)
    assert rollout.steps == (0, 50, 100) and rollout.step_minutes == 5
    assert rollout.criteria.min_calls == 20 and rollout.state == "progressing"
    assert app.models.aliases(MODEL) == {"champion": 1}
    assert app.retraining.runs(MODEL)[0].promotion == "rollout"
    started = [r for r in app.audit.query("default") if r.action == "rollout.started"]
    assert started[0].actor.startswith("service:retraining#")


def test_the_label_trigger_waits_while_a_rollout_is_active(retrain_app: Aevos) -> None:
    """A candidate retrained while the model's rollout is active would fail at its promote
    step (one active rollout per model): the trigger waits for the rollout's end."""
    app = retrain_app
    plan = {"steps": [0, 100], "step_minutes": 5}
    app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, rollout=plan, **CERTIFY)
    _run(app)
    app.retraining.data = BankingLabels(banking(per=50, seed=1))
    rollout_id = _run(app)["promotion"]["rollout"]  # type: ignore[index]
    app.retraining.configure(
        MODEL, recipe="tfidf-logreg", params=FAST, rollout=plan, every_labels=10, **CERTIFY
    )
    app.retraining.data = BankingLabels(banking(per=60, seed=2))
    assert app.retraining.sweep() == []
    assert len(app.retraining.runs(MODEL)) == 2
    app.rollouts.abort(rollout_id, actor="operator:ana#t1", reason="make way")
    [started] = app.retraining.sweep()
    assert app.retraining.runs(MODEL)[0].run_id == started


def test_a_bad_rollout_plan_is_refused_at_configuration(retrain_app: Aevos) -> None:
    for plan in ({"nope": 1}, {"steps": [0, 50]}, {"step_minutes": -1}, {"replay": "yes"}, 3):
        with pytest.raises(RetrainingConfigError) as caught:
            retrain_app.retraining.configure(MODEL, recipe="tfidf-logreg", rollout=plan)
        assert caught.value.field == "rollout", plan
    default = retrain_app.retraining.configure(MODEL, recipe="tfidf-logreg")
    assert default.rollout is None
    assert (
        retrain_app.retraining.configure(MODEL, recipe="tfidf-logreg", rollout=True).rollout == {}
    )
