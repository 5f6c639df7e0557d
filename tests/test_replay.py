"""Replay (``app.replays``) on SQLite and PostgreSQL: a candidate re-decides real kept cases.

The champion is a TF-IDF classifier of six banking77 intents; the candidate is retrained by
``app.retraining`` on more of the same intents (a real certified candidate); the worse one
learned shuffled labels. Traffic is banking77 test queries answered through the gateway and
by a workflow (``ctx.predict``), so the cases are kept (encrypted) with their
``model.called`` records; some get labels, one a reviewer's wrong answer and the ground
truth that outranks it. Each replay's figures are checked against the same figures
computed directly from the cases, the audit log and the labels.
"""

from __future__ import annotations

import csv
import functools
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.apps.retrain_app import CERTIFY, FAST, BankingLabels, banking

from aevos import Aevos, WorkflowContext
from aevos.errors import ModelNotFoundError, ReplayInputError, ReplayNotFoundError
from aevos.pii import Vault
from aevos.public_data import data_file
from aevos.records.label import effective
from aevos.rollouts import Replay, ReplayCriteria
from aevos.rollouts.replay import REPLAY_TAG
from aevos.telemetry.metrics import percentile

MODEL = "intents"
INTENTS = tuple(dict.fromkeys(banking().labels))

REPLAY_GATE = """\
policy: replay-gate
version: 1
kind: promotion
description: Promote only a candidate whose latest replay of kept cases passed.
input:
  model.name: string
  replay.passed?: boolean
  replay.agreement?: number
rules:
  - name: no-passing-replay
    when: replay.passed != True
    decision: deny
    reason: the candidate's latest replay did not pass
default:
  decision: allow
  reason: the latest replay passed
"""


def queries(n: int) -> list[tuple[str, str]]:
    """The first ``n`` banking77 test queries of the six intents, shuffled alike each time."""
    rows = []
    with data_file("banking77", "test.csv").open(newline="", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            if record["category"] in INTENTS:
                rows.append((record["text"], record["category"]))
    random.Random(7).shuffle(rows)
    return rows[:n]


@functools.cache  # the same bytes each time: test_replay_api and test_replay_crash reuse them
def artifact(per: int, *, shuffled: bool = False) -> bytes:
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    data = banking(per=per, seed=3)
    labels = list(data.labels)
    if shuffled:
        random.Random(11).shuffle(labels)
    return dump_sklearn(train_text_classifier(list(data.texts), labels))


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {"champion": artifact(20), "worse": artifact(40, shuffled=True)}


@pytest.fixture
def rapp(database_url: str, tmp_path: Path, models: dict[str, bytes]) -> Iterator[Aevos]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "replay-gate.yaml").write_text(REPLAY_GATE)
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=policies
    )
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    app.models.register(
        MODEL,
        models["champion"],
        flavor="sklearn",
        signature={"type": "string"},
        aliases=["champion"],
    )
    yield app
    app.close()


def retrained(app: Aevos) -> int:
    """A candidate retrained by app.retraining (certified, not promoted)."""
    app.retraining.data = BankingLabels(banking(per=40, seed=1))
    app.retraining.configure(
        MODEL, recipe="tfidf-logreg", params=FAST, auto_promote=False, **CERTIFY
    )
    run_id = app.retraining.start(MODEL).run_id
    result = run_to_end(app, run_id)
    assert result["status"] == "succeeded", result
    return int(result["candidate"])


def run_to_end(app: Aevos, run_id: str, timeout: float = 120) -> Any:
    worker = app.worker(concurrency=1).start()
    try:
        return app.handle(run_id).result(timeout=timeout)
    finally:
        worker.stop()


def traffic(app: Aevos, n: int) -> list[str]:
    """``n`` queries answered in production: half through the gateway, half by a workflow;
    every third labelled (ground truth), and one with a wrong review the truth outranks."""
    app.models.names()

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, text: str) -> str:
        return str(ctx.predict(MODEL, text).call_id)

    ids = []
    for i, (text, _) in enumerate(queries(n)):
        if i % 2:
            ids.append(app.gateway.predict(MODEL, text).call_id)
        else:
            ids.append(triage.run(text))
    app.gateway.flush()
    for i, case_id in enumerate(ids):
        if i % 3 == 0:
            app.labels.record(case_id, queries(n)[i][1], actor="truth", unbiased=True)
    wrong = next(x for x in INTENTS if x != queries(n)[1][1])
    app.labels.record(ids[1], wrong, source="review", actor="reviewer")
    app.labels.record(ids[1], queries(n)[1][1], actor="truth")
    return ids


def expected(app: Aevos, version: int, champion: int, limit: int) -> dict[str, Any]:
    """The replay's figures, computed directly (newest ``limit`` cases)."""
    cases = sorted(
        app.cases.find(tenant="default", model=MODEL, limit=1000),
        key=lambda c: (c.created_at, c.case_id),
        reverse=True,
    )[:limit]
    adapter = app.models.load(app.models.get(MODEL, version))
    answers = {
        r.data["call_id"]: r.data["label"]
        for r in app.audit.query("default", action="model.called")
        if r.data["version"] == champion and r.data["route"] != "shadow"
    }
    threshold = app.certifications.latest(MODEL, version)
    cut = None if threshold is None else threshold.threshold
    agreed = labelled = correct = champion_correct = above = 0
    for case in cases:
        prediction = adapter.predict(case.input)
        agreed += prediction.label == answers[case.case_id]
        above += cut is not None and (prediction.confidence or 0) >= cut
        truth = effective(app.labels.list(tenant="default", case_id=case.case_id))
        if truth is not None:
            labelled += 1
            correct += prediction.label == truth.label
            champion_correct += answers[case.case_id] == truth.label
    return {
        "cases": len(cases),
        "decided": len(cases),
        "agreement": agreed / len(cases),
        "labelled": labelled,
        "accuracy": correct / labelled,
        "champion_accuracy": champion_correct / labelled,
        "above_threshold": None if cut is None else above / len(cases),
        "threshold": cut,
    }


def replayed(app: Aevos, version: int, **options: Any) -> Replay:
    replay_id = app.replays.start(MODEL, version, rate=1000, **options)
    assert app.replays.get(replay_id).status == "running"
    run_to_end(app, replay_id)
    return app.replays.get(replay_id)


def test_a_retrained_candidate_replays_kept_cases_with_figures_as_computed(
    rapp: Aevos,
) -> None:
    app = rapp
    traffic(app, 60)
    candidate = retrained(app)
    replay = replayed(app, candidate, limit=50, criteria=ReplayCriteria(min_cases=40))

    figures = replay.figures
    assert replay.champion == 1 and replay.version == candidate
    want = expected(app, candidate, 1, 50)
    for key, value in want.items():
        assert figures[key] == pytest.approx(value), key
    assert figures["expired"] == 0 and figures["errors"] == 0
    assert figures["champion_source"] == "recorded" and figures["champion_decided"] == 0
    assert figures["agreement_n"] == 50 and figures["champion_labelled"] == figures["labelled"]
    assert figures["cost"] == 0.0
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p95_ms"]
    # The same judgement, by the criteria.
    passes = figures["agreement"] >= 0.8 and (
        figures["accuracy"] >= figures["champion_accuracy"] - 0.02
    )
    assert replay.passed is passes and replay.status == ("passed" if passes else "failed")
    assert replay.finished_at is not None and replay.reason

    # Nothing was called in production: no model.called record beyond the traffic's.
    calls = app.audit.query("default", action="model.called")
    assert len(calls) == 60
    started = app.audit.query("default", action="replay.started")
    finished = app.audit.query("default", action="replay.finished")
    assert [r.subject for r in started] == [f"model:{MODEL}@{candidate}"]
    assert finished[0].data["replay_id"] == replay.replay_id
    assert finished[0].data["passed"] is replay.passed
    assert finished[0].data["figures"] == dict(figures)
    # Listed with the version, and the latest of it.
    assert app.replays.latest(MODEL, candidate) == replay
    assert app.replays.list(MODEL) == [replay] == app.replays.list(MODEL, version=candidate)
    assert app.replays.list(MODEL, version=1) == []
    # Shown with the version: its tag names the latest replay.
    tag = app.models.get(MODEL, candidate).tags[REPLAY_TAG]
    assert tag == f"{replay.status} {replay.replay_id}"


def test_a_worse_candidate_fails_and_a_policy_requiring_a_passing_replay_refuses_it(
    rapp: Aevos, models: dict[str, bytes]
) -> None:
    app = rapp
    traffic(app, 40)
    worse = app.models.register(MODEL, models["worse"], flavor="sklearn").version
    gate = app.promotions
    # Never replayed: the policy sees no replay and refuses; typed-in evidence cannot fake one.
    judged = gate.judge(
        MODEL,
        worse,
        evidence={"replay": {"passed": True}},
        tenant="default",
        actor="t",
        policy="replay-gate",
    )
    assert judged.decision.result == "deny" and "replay" not in judged.evidence

    replay = replayed(app, worse, criteria={"min_cases": 20})
    assert replay.status == "failed" and replay.passed is False
    assert replay.figures["agreement"] < 0.8 and "agreement" in (replay.reason or "")
    judged = gate.judge(
        MODEL, worse, evidence={}, tenant="default", actor="t", policy="replay-gate"
    )
    assert judged.decision.result == "deny"
    assert judged.evidence["replay"]["passed"] is False
    assert judged.evidence["replay"]["replay_id"] == replay.replay_id

    # The champion replayed on its own cases agrees with itself and passes: allowed.
    itself = replayed(app, 1, criteria={"min_cases": 20})
    assert itself.status == "passed" and itself.figures["agreement"] == 1.0
    assert itself.figures["accuracy"] == itself.figures["champion_accuracy"]
    judged = gate.judge(MODEL, 1, evidence={}, tenant="default", actor="t", policy="replay-gate")
    assert judged.decision.result == "allow"
    assert judged.evidence["replay"]["agreement"] == 1.0


def test_cases_forgotten_between_listing_and_reading_count_as_expired(rapp: Aevos) -> None:
    app = rapp

    @app.workflow(name="ticket")
    def ticket(ctx: WorkflowContext, text: str) -> str:
        return str(ctx.predict(MODEL, text).call_id)

    handles = [ticket.start(text) for text, _ in queries(12)]
    app.replays  # noqa: B018 -- registers the replay queue before the worker takes its queues
    worker = app.worker(concurrency=2).start()
    try:
        for handle in handles:
            handle.result(timeout=60)
        # Two cases a second, two per batch: the oldest cases come last, seconds after
        # the plan listed them.
        replay_id = app.replays.start(MODEL, 1, rate=2, criteria={"min_cases": 1})
        deadline = time.monotonic() + 60
        while not any(s.name.endswith(".plan") for s in app.list_steps(replay_id)):
            assert time.monotonic() < deadline, "the replay was never planned"
            time.sleep(0.02)
        # The three oldest cases: listed last, in the last two batches.
        for case in app.cases.find(tenant="default", model=MODEL, limit=3):
            assert case.run_id is not None
            assert app.cases.forget_run(case.run_id, tenant="default") == 1
        app.handle(replay_id).result(timeout=60)
    finally:
        worker.stop()
    replay = app.replays.get(replay_id)
    assert replay.figures["cases"] == 12 and replay.figures["expired"] == 3
    assert replay.figures["decided"] == 9 and replay.status == "passed"
    batches = [s for s in app.list_steps(replay_id) if s.name.endswith(".batch")]
    assert len(batches) == 6
    # Paced by durable sleeps: six batches of two at two cases a second take five seconds
    # of sleep between them, at the least.
    assert replay.finished_at is not None and replay.finished_at - replay.started_at >= 5.0


def test_a_replay_with_nothing_to_decide_is_inconclusive_and_the_champion_can_be_redecided(
    rapp: Aevos, models: dict[str, bytes]
) -> None:
    app = rapp
    empty = replayed(app, 1)
    assert empty.status == "inconclusive" and empty.passed is None
    assert empty.figures["cases"] == 0 and empty.figures["agreement"] is None
    assert empty.figures["latency_p50_ms"] is None and "0 cases decided" in (empty.reason or "")

    traffic(app, 20)
    worse = app.models.register(MODEL, models["worse"], flavor="sklearn").version
    # The champion moved since the traffic: its answers are not on record, so it decides too.
    app.models.promote(MODEL, worse, alias="champion", by="test")
    replay = replayed(
        app, 1, criteria={"min_cases": 20, "min_agreement": 0.0, "max_accuracy_drop": 1.0}
    )
    assert replay.champion == worse
    assert replay.figures["champion_source"] == "decided"
    assert replay.figures["champion_decided"] == 20 and replay.figures["champion_recorded"] == 0
    want = expected_against(app, 1, worse)
    assert replay.figures["agreement"] == pytest.approx(want)


def expected_against(app: Aevos, version: int, champion: int) -> float:
    cases = app.cases.find(tenant="default", model=MODEL)
    ours = app.models.load(app.models.get(MODEL, version))
    theirs = app.models.load(app.models.get(MODEL, champion))
    same = sum(ours.predict(c.input).label == theirs.predict(c.input).label for c in cases)
    return same / len(cases)


def test_a_worker_without_the_vault_key_ends_the_replay_in_error(
    rapp: Aevos, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = rapp
    traffic(app, 10)
    monkeypatch.delenv("AEVOS_VAULT_KEY", raising=False)
    keyless = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    try:
        replay_id = keyless.replays.start(MODEL, 1, rate=1000)
        result = run_to_end(keyless, replay_id)
    finally:
        keyless.close()
    replay = app.replays.get(replay_id)
    assert result["status"] == "error" == replay.status and replay.passed is None
    assert "vault key" in (replay.reason or "") and replay.figures["decided"] == 0
    (finished,) = app.audit.query("default", action="replay.finished")
    assert finished.data["status"] == "error" and finished.data["passed"] is None


def test_bad_requests_are_refused_clearly_and_recorded(rapp: Aevos) -> None:
    app = rapp
    with pytest.raises(ModelNotFoundError):
        app.replays.start("nope", 1)
    with pytest.raises(ModelNotFoundError):
        app.replays.start(MODEL, 9)
    for options, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"rate": 0}, "rate"),
        ({"rate": 1001}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"since": "yesterday"}, "since"),
        ({"criteria": {"min_agreement": 2}}, "min_agreement"),
        ({"criteria": {"bogus": 1}}, "criteria"),
    ):
        with pytest.raises(ReplayInputError) as caught:
            app.replays.start(MODEL, 1, **options)
        assert caught.value.field == field, options
    with pytest.raises(ReplayInputError, match="version"):
        app.replays.start(MODEL, 0)
    rejected = app.audit.query("default", action="replay.rejected")
    assert len(rejected) == 11
    assert rejected[0].data["code"] == "model_not_found"
    assert rejected[2].data["code"] == "invalid_replay"
    with pytest.raises(ReplayNotFoundError):
        app.replays.get("nope")
    with pytest.raises(ModelNotFoundError):
        app.replays.list("nope")
    assert app.replays.latest(MODEL, 1) is None
    assert percentile([], 0.5) is None  # figures of nothing stay None


def test_a_candidate_that_corrects_the_champion_is_excused_its_disagreement() -> None:
    from aevos.rollouts.replay_figures import EXCUSE_LABELS, judge

    base = {"cases": 200, "decided": 200, "errors": 0, "expired": 0, "agreement_n": 200}
    criteria = ReplayCriteria()
    low = {**base, "agreement": 0.7, "accuracy": 0.9, "champion_accuracy": 0.8}
    status, passed, reason = judge({**low, "labelled": EXCUSE_LABELS}, criteria)
    assert (status, passed) == ("passed", True) and "excused" in reason
    # Too few labelled cases to show it, or less accurate than the champion: the
    # disagreement fails it.
    for found in (
        {**low, "labelled": EXCUSE_LABELS - 1},
        {**low, "accuracy": 0.79, "labelled": 99},
    ):
        status, passed, reason = judge(found, criteria)
        assert (status, passed) == ("failed", False) and "agreement" in reason, found
