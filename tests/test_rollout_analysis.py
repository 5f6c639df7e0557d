"""The analysis of a rollout step: judge() over constructed figures (every outcome, every
threshold and its boundary), and measure() over real calls on both backends.

measure() reads what real gateway calls of two real models left behind: a champion trained
on banking77 (4 intents) and a candidate trained on the same texts with shuffled labels,
routed in shadow and as a canary; reviewers' decisions through the inbox, and late ground
truth. The expected figures are worked out here from what each model predicts on its own.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from aevos import Aevos, Field, WorkflowContext
from aevos.errors import BudgetExceededError, DefinitionError, ModelCallError
from aevos.models import flavors
from aevos.models.routing import Canary
from aevos.models.types import Prediction
from aevos.public_data import data_file
from aevos.rollouts import Criteria, Figures, Verdict, judge, measure

DATA = data_file("banking77")
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked"]
FORM = [Field.choice("intent", INTENTS)]
ALICE = "reviewer:alice#t1"
CLAIMS = "service:claims#t9"


# -- judge(): constructed figures ------------------------------------------------------------


def good(**changes: Any) -> Figures:
    """A candidate (or champion) that meets the default criteria with room to spare."""
    base: dict[str, Any] = {
        "calls": 100,
        "errors": 1,
        "error_rate": 0.01,
        "latency_p95_ms": 20.0,
        "cost_per_decision": 0.01,
        "labelled": 40,
        "correct": 36,
        "precision": 0.9,
        "reviewed": 40,
        "overrides": 4,
        "override_rate": 0.1,
        "agreement": 0.95,
        "agreement_n": 100,
    }
    base.update(changes)
    return Figures(**base)


def verdict(
    candidate: Figures,
    champion: Figures | None = None,
    *,
    shadow: bool = False,
    deadline_passed: bool = False,
    **criteria: Any,
) -> Verdict:
    return judge(
        candidate,
        good() if champion is None else champion,
        Criteria(**criteria),
        shadow=shadow,
        deadline_passed=deadline_passed,
    )


def test_enough_evidence_and_every_threshold_met_is_successful() -> None:
    v = verdict(good(), shadow=True, min_labels=20, min_precision=0.85, max_override_rate=0.2)
    assert v.outcome == "successful"
    assert v.reasons == (
        "error rate 0.01 <= 0.05",
        "agreement 0.95 >= 0.8",
        "precision 0.9 >= 0.85",
        "precision drop 0 <= 0.05",
        "override rate 0.1 <= 0.2",
        "latency not compared in shadow: shadow calls run in the background",
        "cost ratio 1 <= 1.5 (0.01 per decision against the champion's 0.01)",
    )
    # As a canary the latency is compared.
    canary = verdict(good(), min_labels=20, min_precision=0.85, max_override_rate=0.2)
    assert canary.reasons[1:] == (
        "precision 0.9 >= 0.85",
        "precision drop 0 <= 0.05",
        "override rate 0.1 <= 0.2",
        "latency p95 ratio 1 <= 2 (20 ms against the champion's 20 ms)",
        "cost ratio 1 <= 1.5 (0.01 per decision against the champion's 0.01)",
    )


def test_too_few_calls_is_running_then_inconclusive_at_the_deadline() -> None:
    few = good(calls=10, errors=0, error_rate=0.0, labelled=0, correct=0, precision=None)
    running = verdict(few)
    assert running.outcome == "running"
    assert running.reasons == ("too few calls: 10 < 50",)
    late = verdict(few, deadline_passed=True)
    assert late.outcome == "inconclusive"
    assert late.reasons == ("too few calls: 10 < 50 by the deadline",)
    # No calls at all: the same, never a success on nothing.
    assert verdict(Figures(), deadline_passed=True).outcome == "inconclusive"
    assert verdict(Figures()).outcome == "running"


def test_too_few_labels_is_running_then_inconclusive() -> None:
    few = good(labelled=5, correct=5, precision=1.0)
    assert verdict(few, min_labels=20).reasons == ("too few labelled decisions: 5 < 20",)
    assert verdict(few, min_labels=20).outcome == "running"
    late = verdict(few, min_labels=20, deadline_passed=True)
    assert late.outcome == "inconclusive"
    assert late.reasons == ("too few labelled decisions: 5 < 20 by the deadline",)
    # The boundary: exactly min_labels is enough.
    assert verdict(good(labelled=20, correct=18), min_labels=20).outcome == "successful"
    assert verdict(good(calls=50), min_calls=50).outcome == "successful"
    assert verdict(good(calls=49), min_calls=50).outcome == "running"


def test_error_rate_threshold_and_its_boundary() -> None:
    assert verdict(good(errors=5, error_rate=0.05)).outcome == "successful"
    failed = verdict(good(errors=6, error_rate=0.06))
    assert failed.outcome == "failed"
    assert failed.reasons == ("error rate 0.06 > 0.05",)
    assert verdict(good(errors=0, error_rate=0.0), max_error_rate=0.0).outcome == "successful"
    assert verdict(good(errors=1), max_error_rate=0.0).outcome == "failed"


def test_a_clear_breach_fails_before_the_calls_are_in() -> None:
    # 3 errors in 10: more than 5% of 50 even if the next 40 calls all succeed.
    clear = verdict(good(calls=10, errors=3, error_rate=0.3))
    assert clear.outcome == "failed"
    assert clear.reasons == ("error rate 3/10 > 0.05 however the remaining 40 of 50 turn out",)
    # 2 in 10 could still end at 2/50 = 4%: wait (and, at the deadline, too few calls).
    unclear = verdict(good(calls=10, errors=2, error_rate=0.2))
    assert unclear.outcome == "running"
    assert verdict(good(calls=10, errors=2), deadline_passed=True).outcome == "inconclusive"
    # A failure outranks missing evidence, at the deadline too.
    assert verdict(good(calls=10, errors=3), deadline_passed=True).outcome == "failed"


def test_agreement_in_shadow_and_its_boundary() -> None:
    assert verdict(good(agreement=0.8), shadow=True).outcome == "successful"
    # (On 10 labels the precision excuses nothing: see the next tests.)
    low = verdict(good(agreement=0.79, labelled=10, correct=9), shadow=True)
    assert low.outcome == "failed"
    assert low.reasons == ("agreement 0.79 < 0.8",)
    # Agreement is a shadow step's figure only.
    assert verdict(good(agreement=0.1), shadow=False).outcome == "successful"


def test_a_candidate_that_disagrees_on_every_call_fails_early_in_shadow() -> None:
    # 11 disagreements: even 39 agreeing calls to come leave 39/50 = 0.78 < 0.8.
    early = good(calls=11, errors=0, agreement=0.0, agreement_n=11, labelled=0, precision=None)
    v = verdict(early, shadow=True)
    assert v.outcome == "failed"
    assert v.reasons == (
        "agreement 0/11 < 0.8 however the remaining 39 of 50 shadowed calls turn out",
    )
    # 10 disagreements: 40/50 agreeing is still possible.
    ten = good(calls=10, errors=0, agreement=0.0, agreement_n=10, labelled=0, precision=None)
    assert verdict(ten, shadow=True).outcome == "running"


def test_low_agreement_is_excused_when_the_candidate_is_as_precise_on_enough_labels() -> None:
    better = good(agreement=0.7, labelled=30, correct=27, precision=0.9)
    champion = good(labelled=30, correct=24, precision=0.8)
    v = verdict(better, champion, shadow=True)
    assert v.outcome == "successful"
    assert (
        "agreement 0.7 < 0.8, but precision 0.9 >= the champion's 0.8 on 30 labelled cases"
        in v.reasons
    )
    # On 29 labels the precision is not evidence enough: the disagreement fails it.
    fewer = good(agreement=0.7, labelled=29, correct=27, precision=27 / 29)
    assert verdict(fewer, champion, shadow=True).reasons == ("agreement 0.7 < 0.8",)
    # Less precise than the champion: no excuse.
    worse = good(agreement=0.7, labelled=30, correct=23, precision=23 / 30)
    assert verdict(worse, champion, shadow=True).outcome == "failed"


def test_agreement_without_a_champion_or_without_pairs() -> None:
    alone = verdict(good(agreement=None, agreement_n=0), Figures(), shadow=True)
    assert alone.outcome == "successful"
    assert "agreement not judged: the champion answered no calls" in alone.reasons
    assert "latency not compared in shadow: shadow calls run in the background" in alone.reasons
    assert "cost not compared: the champion answered no calls" in alone.reasons
    assert "precision not compared: the champion has no labelled decisions" in alone.reasons
    unpaired = verdict(good(agreement=None, agreement_n=0), shadow=True)
    assert unpaired.outcome == "running"
    assert unpaired.reasons == ("no shadowed call was answered by the champion too",)


def test_min_precision_and_its_boundary() -> None:
    assert verdict(good(precision=0.9), min_precision=0.9).outcome == "successful"
    low = verdict(good(precision=0.89), min_precision=0.9)
    assert low.outcome == "failed" and low.reasons == ("precision 0.89 < 0.9",)
    # No labels required and none there: not judged, noted.
    none = verdict(good(labelled=0, correct=0, precision=None), min_precision=0.9)
    assert none.outcome == "successful"
    assert "precision not judged: no labelled decisions" in none.reasons


def test_a_clear_precision_breach_fails_before_the_labels_are_in() -> None:
    # 2 right of 10 with 20 required: at best 12/20 = 0.6 < 0.9.
    v = verdict(good(labelled=10, correct=2, precision=0.2), min_labels=20, min_precision=0.9)
    assert v.outcome == "failed"
    assert v.reasons == ("precision 2/10 < 0.9 however the remaining 10 of 20 labels turn out",)
    # 9 right of 10: 19/20 = 0.95 is still possible.
    ok = verdict(good(labelled=10, correct=9, precision=0.9), min_labels=20, min_precision=0.9)
    assert ok.outcome == "running"


def precise(right: int, of: int) -> Figures:
    return good(labelled=of, correct=right, precision=right / of)


def test_precision_drop_against_the_champion_and_its_boundary() -> None:
    champion = precise(900, 1000)
    assert verdict(precise(850, 1000), champion).outcome == "successful"
    drop = verdict(precise(840, 1000), champion)
    assert drop.outcome == "failed"
    assert drop.reasons == ("precision drop 0.06 > 0.05 (0.84 against the champion's 0.9)",)
    # The drop alone, whatever chance says:
    assert (
        verdict(precise(890, 1000), champion, max_precision_drop=0.0, precision_p_value=1.0)
    ).outcome == "failed"
    # A drop that a few labels make: 8 right of 10 against 5 of 5 is no evidence (p 0.43).
    few = verdict(precise(8, 10), precise(5, 5), min_labels=5)
    assert few.outcome == "successful"
    assert (
        "precision drop 0.2 > 0.05 (0.8 against the champion's 1), but not less precise "
        "beyond chance (Fisher p 0.429 >= 0.05)"
    ) in few.reasons
    # The shuffled candidate of the benchmark: 1 right of 12 against 40 of 45.
    assert verdict(precise(1, 12), precise(40, 45), min_labels=10).outcome == "failed"


def test_override_rate_and_its_boundary() -> None:
    assert verdict(good(overrides=20, reviewed=100), max_override_rate=0.2).outcome == (
        "successful"
    )
    high = verdict(good(overrides=21, reviewed=100), max_override_rate=0.2)
    assert high.outcome == "failed" and high.reasons == ("override rate 0.21 > 0.2",)
    unreviewed = verdict(good(overrides=0, reviewed=0, override_rate=None), max_override_rate=0.2)
    assert "override rate not judged: no reviewed suggestions" in unreviewed.reasons
    # Not asked for: not judged at all.
    assert verdict(good(overrides=90, reviewed=100)).outcome == "successful"
    # Labels enough (from ground truth) but fewer reviews: noted, not judged.
    few = verdict(good(overrides=1, reviewed=5), min_labels=20, max_override_rate=0.2)
    assert few.outcome == "successful"
    assert "override rate not judged: 5 reviewed suggestions < 20" in few.reasons
    # Before the labels are in, only a clear breach: 10 of 12 overridden, 20 required.
    early = verdict(
        good(overrides=10, reviewed=12, labelled=12), min_labels=20, max_override_rate=0.2
    )
    assert early.outcome == "failed"
    assert early.reasons == ("override rate 10/12 > 0.2 however the remaining 8 of 20 turn out",)


def test_latency_against_the_champion_its_boundary_and_its_floor() -> None:
    champion = good(latency_p95_ms=20.0)
    assert verdict(good(latency_p95_ms=40.0), champion).outcome == "successful"
    slow = verdict(good(latency_p95_ms=41.0), champion)
    assert slow.outcome == "failed"
    assert slow.reasons == ("latency p95 ratio 2.05 > 2 (41 ms against the champion's 20 ms)",)
    # Both under the floor (10 ms): equal, however many times slower.
    fast = verdict(good(latency_p95_ms=9.0), good(latency_p95_ms=0.5))
    assert fast.outcome == "successful"
    assert verdict(good(latency_p95_ms=21.0), good(latency_p95_ms=0.5)).outcome == "failed"
    assert verdict(
        good(latency_p95_ms=21.0), good(latency_p95_ms=0.5), latency_floor_ms=0.0
    ).reasons == ("latency p95 ratio 42 > 2 (21 ms against the champion's 0.5 ms)",)
    # The champion answered nothing (a step at 100%): not compared, noted.
    # Above the ratio but not slower beyond chance (a few slow calls on a busy host): passes,
    # saying why; slower beyond chance as well: fails.
    noisy = verdict(good(latency_p95_ms=41.0, latency_slower_p=0.2), champion)
    assert noisy.outcome == "successful"
    assert (
        "latency p95 ratio 2.05 > 2 (41 ms against the champion's 20 ms), but not slower "
        "beyond chance (Mann-Whitney p 0.2 >= 0.01)"
    ) in noisy.reasons
    slower = verdict(good(latency_p95_ms=41.0, latency_slower_p=0.001), champion)
    assert slower.outcome == "failed" and slower.reasons == slow.reasons
    at_alpha = verdict(good(latency_p95_ms=41.0, latency_slower_p=0.01), champion)
    assert at_alpha.outcome == "successful"  # p must be below latency_p_value
    strict = verdict(good(latency_p95_ms=41.0, latency_slower_p=0.2), champion, latency_p_value=0.5)
    assert strict.outcome == "failed"
    alone = verdict(good(latency_p95_ms=500.0), Figures())
    assert "latency not compared: the champion answered no calls" in alone.reasons
    # Not asked for.
    assert verdict(good(latency_p95_ms=500.0), max_latency_p95_ratio=None).outcome == "successful"


def test_cost_against_the_champion_and_its_boundary() -> None:
    champion = good(cost_per_decision=0.01)
    assert verdict(good(cost_per_decision=0.015), champion).outcome == "successful"
    dear = verdict(good(cost_per_decision=0.016), champion)
    assert dear.outcome == "failed"
    assert dear.reasons == (
        "cost ratio 1.6 > 1.5 (0.016 per decision against the champion's 0.01)",
    )
    free = good(cost_per_decision=0.0)
    assert verdict(good(cost_per_decision=0.0), free).outcome == "successful"
    assert verdict(good(cost_per_decision=0.001), free).reasons == (
        "cost ratio inf > 1.5 (0.001 per decision against the champion's 0)",
    )
    assert verdict(good(cost_per_decision=0.001), free, max_cost_ratio=None).outcome == (
        "successful"
    )


def test_several_breaches_are_all_named() -> None:
    v = verdict(good(errors=10, error_rate=0.1, correct=20, precision=0.5, latency_p95_ms=100.0))
    assert v.outcome == "failed"
    assert [r.split(" ")[0] for r in v.reasons] == ["error", "precision", "latency"]


def test_criteria_round_trip_and_refuse_bad_values() -> None:
    criteria = Criteria(min_calls=20, min_precision=0.9, max_cost_ratio=None)
    assert Criteria.from_dict(json.loads(json.dumps(criteria.to_dict()))) == criteria
    assert Criteria.from_dict(None) == Criteria() == Criteria.from_dict({})
    with pytest.raises(DefinitionError, match="criteria has no field 'min_cals'"):
        Criteria.from_dict({"min_cals": 3})
    with pytest.raises(DefinitionError, match="criteria must be an object"):
        Criteria.from_dict([1, 2])  # type: ignore[arg-type]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"min_calls": 0}, "min_calls must be a whole number from 1"),
        ({"min_calls": True}, "min_calls"),
        ({"min_calls": 2.5}, "min_calls"),
        ({"min_labels": -1}, "min_labels"),
        ({"min_agreement": 1.5}, "min_agreement must be a number from 0 to 1"),
        ({"max_error_rate": float("nan")}, "max_error_rate"),
        ({"min_precision": "high"}, "min_precision"),
        ({"max_latency_p95_ratio": 0}, "max_latency_p95_ratio must be a number above 0"),
        ({"max_cost_ratio": float("inf")}, "max_cost_ratio"),
        ({"latency_floor_ms": -1}, "latency_floor_ms"),
        ({"latency_p_value": 2}, "latency_p_value must be a number from 0 to 1"),
    ]
    for data, message in bad:
        with pytest.raises(DefinitionError, match=message):
            Criteria.from_dict(data)


def test_a_verdict_is_a_json_record_and_reads_back() -> None:
    v = verdict(good(errors=6, error_rate=0.06))
    record = json.loads(json.dumps(v.to_record()))
    assert record["outcome"] == "failed" and record["reasons"] == ["error rate 0.06 > 0.05"]
    assert record["candidate"]["errors"] == 6 and record["champion"]["calls"] == 100
    assert Verdict.from_record(record) == v
    with pytest.raises(DefinitionError, match="outcome"):
        Verdict.from_record({"outcome": "great"})


# -- measure(): real calls of real models ----------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _rows(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(newline="") as handle:
        return [
            (r["text"], r["category"]) for r in csv.DictReader(handle) if r["category"] in INTENTS
        ]


@pytest.fixture(scope="module")
def artifacts() -> tuple[bytes, bytes]:
    """A champion trained on 30 tickets per intent, and a candidate trained on the same
    tickets with their labels shuffled (a deliberately worse model)."""
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    seen: dict[str, int] = {}
    texts, labels = [], []
    for text, category in _rows("train.csv"):
        if seen.get(category, 0) < 30:
            seen[category] = seen.get(category, 0) + 1
            texts.append(text)
            labels.append(category)
    shuffled = list(labels)
    random.Random(7).shuffle(shuffled)
    return (
        dump_sklearn(train_text_classifier(texts, labels)),
        dump_sklearn(train_text_classifier(texts, shuffled)),
    )


@dataclass
class Rig:
    app: Aevos
    predict: dict[int, Callable[[str], Any]]  # each version on its own, outside the gateway
    tickets: list[tuple[str, str]]  # (text, true intent) from the test split
    artifact: bytes  # the champion's

    def calls(self, **filters: Any) -> list[Any]:
        return [
            r
            for r in self.app.audit.query("default", action="model.called", limit=100_000)
            if all(r.data.get(k) == v for k, v in filters.items())
        ]


@pytest.fixture
def rig(app: Aevos, artifacts: tuple[bytes, bytes]) -> Iterator[Rig]:
    from aevos.pii import Vault

    # With a vault key, calls outside workflows keep their cases: ground truth can label them.
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    champion, candidate = artifacts
    v1 = app.models.register("intent", champion, flavor="sklearn", aliases=["champion"])
    v2 = app.models.register("intent", candidate, flavor="sklearn", aliases=["challenger"])
    adapters = {v.version: app.models.load(v) for v in (v1, v2)}

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, text: str, key: str) -> str:
        prediction = ctx.predict("intent", text, key=key)
        decision = ctx.ask_human(
            "Which intent?", form=FORM, case={"text": text}, prediction=prediction
        )
        return str(decision["intent"])

    predict = {n: (lambda text, a=a: a.predict(text).label) for n, a in adapters.items()}
    yield Rig(app, predict, _rows("test.csv")[:40], champion)


def _reviewed(rig: Rig, tickets: list[tuple[str, str]], answer: Mapping[str, str]) -> list[Any]:
    """Run the triage workflow on ``tickets``; a reviewer answers each task with
    ``answer[text]``. Returns the tasks, decided."""
    app = rig.app
    handles = [app.start("triage", text, f"key-{i}") for i, (text, _) in enumerate(tickets)]
    worker = app.worker(concurrency=4).start()
    try:
        for handle in handles:
            wait_for(lambda h=handle: bool(app.tasks.list(run_id=h.run_id)))
        tasks = [app.tasks.list(run_id=h.run_id)[0] for h in handles]
        for task, (text, _) in zip(tasks, tickets, strict=True):
            app.tasks.submit(task.task_id, {"intent": answer[text]}, actor=ALICE)
        for handle in handles:
            handle.result(timeout=20)
    finally:
        worker.stop()
    return [app.tasks.get(t.task_id) for t in tasks]


def _p95(records: list[Any]) -> float:
    return float(np.percentile([r.data["latency_ms"] for r in records], 95))


def _slower(mine: list[Any], theirs: list[Any]) -> float:
    """The one-sided Mann-Whitney p-value of "mine answered slower", computed here from the
    audit records (measure reads them through its own query)."""
    from scipy.stats import mannwhitneyu

    a, b = ([r.data["latency_ms"] for r in rs] for rs in (mine, theirs))
    return float(mannwhitneyu(a, b, alternative="greater").pvalue)


def test_measure_in_shadow_counts_calls_labels_reviews_and_agreement(rig: Rig) -> None:
    app, predict = rig.app, rig.predict
    app.gateway.predict("intent", "before the window")  # not in the window
    app.gateway.flush()
    since = time.time()
    app.gateway.route("intent", shadow="challenger")
    truth = dict(rig.tickets)
    reviewed = rig.tickets[:8]
    direct = rig.tickets[8:20]
    _reviewed(rig, reviewed, truth)
    call_ids = [app.gateway.predict("intent", text).call_id for text, _ in direct]
    for _ in range(2):  # inputs neither model can take: errors of both
        with pytest.raises(ModelCallError):
            app.gateway.predict("intent", {"text": "not a string"})
    app.gateway.flush()  # the automated calls' cases are kept as their records are written
    # Late ground truth for 6 automated calls, and one that overrules a reviewer.
    ground = dict(zip(call_ids[:6], [t for _, t in direct[:6]], strict=True))
    for call_id, label in ground.items():
        app.labels.record(call_id, label, actor=CLAIMS)
    overruled_text = reviewed[0][0]
    overruled = next(t.call_id for t in app.tasks.list() if t.case == {"text": overruled_text})
    app.labels.record(overruled, "pin_blocked", actor=CLAIMS)
    # Another tenant's calls of a model of the same name are not this tenant's evidence.
    app.models.register(
        "intent", rig.artifact, flavor="sklearn", tenant="other", aliases=["champion"]
    )
    app.gateway.predict("intent", "card", tenant="other")
    app.gateway.flush()
    wait_for(lambda: len(rig.calls(route="shadow")) == 22)
    app.gateway.flush()
    until = time.time() + 0.001

    candidate, champion = measure(app.store, "default", "intent", 2, 1, since, until)

    texts = [t for t, _ in reviewed + direct]
    labels_of = {t: truth[t] for t, _ in reviewed} | {t: truth[t] for t, _ in direct[:6]}
    labels_of[overruled_text] = "pin_blocked"  # ground truth outranks the reviewer
    right = {n: sum(predict[n](t) == label for t, label in labels_of.items()) for n in (1, 2)}
    overrides = sum(predict[1](t) != truth[t] for t, _ in reviewed)
    alike = sum(predict[1](t) == predict[2](t) for t in texts)
    shadow = rig.calls(route="shadow", version=2, outcome="ok")
    primary = [r for r in rig.calls(route="primary", version=1, outcome="ok") if r.at >= since]
    assert candidate == Figures(
        calls=22,
        errors=2,
        error_rate=2 / 22,
        latency_p95_ms=pytest.approx(_p95(shadow)),
        cost_per_decision=0.0,
        labelled=14,
        correct=right[2],
        precision=right[2] / 14,
        reviewed=0,  # in shadow nobody saw the candidate's suggestions
        overrides=0,
        override_rate=None,
        agreement=alike / 20,
        agreement_n=20,
        latency_slower_p=pytest.approx(_slower(shadow, primary)),
    )
    assert champion == Figures(
        calls=22,
        errors=2,
        error_rate=2 / 22,
        latency_p95_ms=pytest.approx(_p95(primary)),
        cost_per_decision=0.0,
        labelled=14,
        correct=right[1],
        precision=right[1] / 14,
        reviewed=8,
        overrides=overrides,
        override_rate=overrides / 8,
    )
    # The shuffled candidate is the worse model, and judged so in shadow.
    assert right[2] < right[1]
    criteria = Criteria(min_calls=20, max_error_rate=0.1)
    v = judge(candidate, champion, criteria, shadow=True, deadline_passed=False)
    assert v.outcome == "failed"
    p1, p2 = right[1] / 14, right[2] / 14
    assert v.reasons == (
        f"agreement {alike / 20:.3g} < 0.8",
        f"precision drop {p1 - p2:.3g} > 0.05 ({p2:.3g} against the champion's {p1:.3g})",
    )

    # A window before any of it holds nothing; a champion of None gives empty figures.
    assert measure(app.store, "default", "intent", 2, 1, since - 10, since - 5) == (
        Figures(),
        Figures(),
    )
    alone, nobody = measure(app.store, "default", "intent", 2, None, since, until)
    assert nobody == Figures() and alone.agreement is None and alone.calls == 22
    with pytest.raises(DefinitionError, match="since < until"):
        measure(app.store, "default", "intent", 2, 1, until, since)


def test_measure_as_a_canary_attributes_reviews_and_labels_to_the_version_that_answered(
    rig: Rig,
) -> None:
    app, predict = rig.app, rig.predict
    since = time.time()
    app.gateway.route("intent", canary=Canary("challenger", percent=50))
    tickets = rig.tickets[:16]
    truth = dict(tickets)
    tasks = _reviewed(rig, tickets, truth)
    by_version: dict[int, list[Any]] = {1: [], 2: []}
    for task in tasks:
        by_version[int(task.model_version.split("@")[1])].append(task)
    assert by_version[1] and by_version[2]  # 16 keys split about evenly between the two
    app.gateway.flush()
    until = time.time() + 0.001
    # Decided after the window's end: not evidence of it.
    later = _reviewed(rig, rig.tickets[16:18], {t: "pin_blocked" for t, _ in rig.tickets[16:18]})
    assert later

    candidate, champion = measure(app.store, "default", "intent", 2, 1, since, until)

    answered = {v: [r for r in rig.calls(version=v) if since <= r.at < until] for v in (1, 2)}
    for version, figures in ((2, candidate), (1, champion)):
        mine = by_version[version]
        texts = [t.case["text"] for t in mine]
        wrong = sum(predict[version](text) != truth[text] for text in texts)
        records = answered[version]
        # Only the candidate's figures say whether it answered slower than the champion.
        slower = pytest.approx(_slower(answered[2], answered[1])) if version == 2 else None
        assert {r.data["route"] for r in records} == {"canary" if version == 2 else "primary"}
        assert figures == Figures(
            calls=len(mine),
            errors=0,
            error_rate=0.0,
            latency_p95_ms=pytest.approx(_p95(records)),
            cost_per_decision=0.0,
            labelled=len(mine),
            correct=len(mine) - wrong,
            precision=(len(mine) - wrong) / len(mine),
            reviewed=len(mine),
            overrides=wrong,
            override_rate=wrong / len(mine),
            latency_slower_p=slower,
        )


# A priced model: what it answers and what each answer costs are in its config.
@dataclass
class _Priced:
    config: Mapping[str, Any]
    flavor: str = "priced-test"

    def predict(self, input: Any) -> Prediction:
        return Prediction(label=self.config["label"], cost=float(self.config["cost"]))


flavors.register_flavor("priced-test", lambda artifact, config, trusted: _Priced(config))


def test_measure_cost_per_decision_and_refused_calls(app: Aevos) -> None:
    for version, cost in ((1, 0.002), (2, 0.005)):
        config = {"label": f"v{version}", "cost": cost}
        app.models.register(
            "priced",
            json.dumps(config).encode(),
            flavor="priced-test",
            config=config,
            aliases=["champion" if version == 1 else "challenger"],
        )
    since = time.time()
    app.gateway.route("priced", canary=Canary("challenger", percent=50))
    app.gateway.set_budget(model="priced", calls=10)
    answered = [app.gateway.predict("priced", "x", key=f"k{i}") for i in range(10)]
    with pytest.raises(BudgetExceededError):
        app.gateway.predict("priced", "x", key="k0")  # refused: neither a call nor an error
    app.gateway.flush()
    until = time.time() + 0.001
    candidate, champion = measure(app.store, "default", "priced", 2, 1, since, until)
    n2 = sum(r.version == 2 for r in answered)
    assert 0 < n2 < 10  # the keys' split is fixed: some of each
    assert (candidate.calls, champion.calls) == (n2, 10 - n2)
    assert candidate.errors == champion.errors == 0
    assert candidate.cost_per_decision == pytest.approx(0.005)
    assert champion.cost_per_decision == pytest.approx(0.002)
    assert candidate.labelled == 0 and candidate.precision is None
    refused = [
        r for r in app.audit.query("default", action="model.called") if r.data["outcome"] != "ok"
    ]
    assert [r.data["outcome"] for r in refused] == ["budget_exceeded"]
