"""Monitors on real data, on SQLite and PostgreSQL: drift over banking77 traffic through the
gateway (an intent shift raises a prediction-drift alert naming the new classes; the same
distribution does not), Evidently's switch from KS/chi-squared to Wasserstein/Jensen-Shannon
at 1,000 reference rows on the insurance claims, CBPE against the true accuracy of a
calibrated classifier, alerts that start a retraining and ask an operator, and a model with
no traffic.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aevos import Aevos
from aevos.errors import AlertNotFoundError, MonitorConfigError, MonitorNotConfiguredError
from aevos.evolution.certify import calibrate, calibration_curve
from aevos.monitoring import MONITORS
from aevos.monitoring import statistics as st
from aevos.pii import Vault
from aevos.public_data import data_file
from aevos.records.retraining import RetrainingStatus, Trigger

MODEL = "intent"


def _banking(split: str) -> list[tuple[str, str]]:
    with (data_file("banking77") / f"{split}.csv").open(newline="") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="session")  # test_monitors_api uses it too: trained once
def banking_model() -> tuple[bytes, list[str]]:
    """A text classifier on all 77 intents (40 examples each), and 10 intents held back
    from the reference traffic."""
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    seen: dict[str, int] = {}
    texts, labels = [], []
    for text, label in _banking("train"):
        if seen.get(label, 0) < 40:
            seen[label] = seen.get(label, 0) + 1
            texts.append(text)
            labels.append(label)
    held = sorted(seen)[::8][:10]
    return dump_sklearn(train_text_classifier(texts, labels, char_ngrams=(3, 4))), held


@pytest.fixture
def monitored(database_url: str, banking_model: tuple[bytes, list[str]]) -> Iterator[Aevos]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    app.models.register(
        MODEL,
        banking_model[0],
        flavor="sklearn",
        signature={"type": "string"},
        aliases=["champion"],
    )
    yield app
    app.close()


def _split(held: set[str], seed: int) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """test.csv shuffled by ``seed``, and its texts of the intents not held back and held."""
    rows = _banking("test")
    random.Random(seed).shuffle(rows)
    old = [text for text, label in rows if label not in held]
    return rows, old, [text for text, label in rows if label in held]


def _call(app: Aevos, texts: list[str]) -> None:
    for text in texts:
        app.gateway.predict(MODEL, text)
    app.gateway.flush()


def _open_all(app: Aevos) -> list[Any]:
    return app.monitors.alerts(model=MODEL, status="open")


def _by_monitor(results: list[Any]) -> dict[str, Any]:
    return {r.monitor: r for r in results}


def test_an_intent_shift_raises_one_prediction_drift_alert_naming_the_new_classes(
    monitored: Aevos, banking_model: tuple[bytes, list[str]]
) -> None:
    app, held = monitored, set(banking_model[1])
    rows = _banking("test")
    random.Random(1).shuffle(rows)
    old = [text for text, label in rows if label not in held]
    new = [text for text, label in rows if label in held]
    app.monitors.configure(MODEL, window_cases=300, reference_cases=600, on_alert={"retrain": True})
    _call(app, old[:600])  # the reference: the first 600 decisions of the champion
    _call(app, old[600:900])  # the same distribution
    same = _by_monitor(app.monitors.check(MODEL))
    assert {r.status for r in same.values()} <= {"ok", "no_data"}
    assert same["prediction_drift"].status == "ok" and not same["prediction_drift"].alert
    assert same["input_drift"].status == "ok" and same["input_drift"].figures["kind"] == "text"
    assert same["confidence_drift"].status == "ok"
    assert same["override_rate"].status == "no_data"  # nobody reviewed anything
    assert app.monitors.alerts() == []

    # Half the window from the 10 intents the reference never saw (a third moves the
    # hashed-token distance by p = 0.01 exactly: not below the monitors' 0.01).
    _call(app, [*old[900:1050], *new[:150]])
    shifted = _by_monitor(app.monitors.check(MODEL))
    drift = shifted["prediction_drift"]
    assert drift.alert and drift.status == "alert" and drift.p_value is not None
    assert drift.p_value < 0.05
    new_classes = drift.figures["new_classes"]
    named = set(new_classes)
    # Held-back intents the model never predicted on the reference are named (the model
    # predicts some of them now and then on other intents' texts, so not all ten).
    assert len(named & held) >= 3, named
    assert drift.figures["new_class_share"] >= 0.02 and drift.value >= 0.1
    estimate = shifted["estimated_accuracy"]
    low, high = estimate.figures["ci"]
    # Over the newest estimate_window (1,000) of the champion's 1,100 calls, from its raw
    # confidences: the version was never certified, so there is no calibration curve.
    assert estimate.status == "ok" and low < estimate.value < high and estimate.n == 1000
    assert estimate.figures["calibrated"] is False
    raised = {m for m, r in shifted.items() if r.alert}
    assert {a.monitor for a in app.monitors.alerts(model=MODEL, status="open")} == raised
    alerts = {a.monitor: a for a in app.monitors.alerts()}
    assert set(alerts["prediction_drift"].figures["new_classes"]) == named
    # No retraining configuration: the alert says why none started.
    retrain = alerts["prediction_drift"].actions["retrain"]
    assert retrain["started"] is False and retrain["code"] == "retraining_not_configured"
    audited = app.audit.query("default", action="monitor.alerted")
    assert {e.data["monitor"] for e in audited} == set(alerts)
    record = next(e for e in audited if e.data["monitor"] == "prediction_drift")
    assert record.subject == f"model:{MODEL}@1" and record.data["alert_id"] in {
        a.alert_id for a in alerts.values()
    }
    assert record.data["window"] == [drift.since, drift.until]

    # Checked again: still drifted, still one open alert per monitor.
    app.monitors.check(MODEL)
    assert len(app.monitors.alerts(status="open")) == len(alerts)
    acked = app.monitors.acknowledge(alerts["prediction_drift"].alert_id, actor="ops")
    assert acked.status == "acknowledged" and acked.closed_by == "ops"
    series = app.store.reading
    with series() as uow:
        plotted = uow.monitors.series("default", MODEL, 0, time.time() + 1)
    assert ("prediction_drift", True) in {(m, a) for _, m, _, _, a in plotted}
    with pytest.raises(AlertNotFoundError):
        app.monitors.acknowledge(acked.alert_id, tenant="other")

    # The old mix again: the monitors recover, and what is still open resolves itself.
    _call(app, old[1100:1400])
    recovered = _by_monitor(app.monitors.check(MODEL))
    assert not any(r.alert for r in recovered.values())
    assert app.monitors.alerts(status="open") == []
    # The text of the new intents moved the inputs too: that alert resolves itself.
    assert {a.monitor for a in app.monitors.alerts()} == {"input_drift", "prediction_drift"}
    for alert in app.monitors.alerts():
        if alert.alert_id != acked.alert_id:
            assert alert.status == "resolved" and alert.closed_by == "system:monitors"
            assert alert.reason is not None and alert.reason.startswith("recovered")
    assert app.monitors.alert(acked.alert_id).status == "acknowledged"


def test_labels_of_intents_the_model_never_learnt_raise_label_drift(
    database_url: str,
) -> None:
    """The champion never learnt 10 intents: it cannot predict them (each goes to a known
    intent near it), but people label them, and in a window where 13% of the traffic is of
    them the labels' share of classes the reference's labels never held is the alert. The
    same mix again is none."""
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    train = _banking("train")
    held = set(sorted({label for _, label in train})[::8][:10])
    seen: dict[str, int] = {}
    texts, labels = [], []
    for text, label in train:
        if label not in held and seen.get(label, 0) < 15:
            seen[label] = seen.get(label, 0) + 1
            texts.append(text)
            labels.append(label)
    app = Aevos(database_url)
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    try:
        model = dump_sklearn(train_text_classifier(texts, labels, char_ngrams=(3, 4)))
        app.models.register(
            MODEL, model, flavor="sklearn", signature={"type": "string"}, aliases=["champion"]
        )
        rows = _banking("test")
        random.Random(6).shuffle(rows)
        old = [row for row in rows if row[1] not in held]
        new = [row for row in rows if row[1] in held]

        def labelled(batch: list[tuple[str, str]]) -> None:
            answers = [app.gateway.predict(MODEL, text) for text, _ in batch]
            app.gateway.flush()
            app.labels.record_many(
                [
                    {"case_id": a.call_id, "label": label, "source": "review"}
                    for a, (_, label) in zip(answers, batch, strict=True)
                ],
                actor="reviewer",
            )

        app.retraining.configure(MODEL, recipe="tfidf-logreg")
        app.monitors.configure(
            MODEL, window_cases=200, reference_cases=200, on_alert={"retrain": True}
        )
        labelled(old[:200])
        labelled(old[200:400])
        same = _by_monitor(app.monitors.check(MODEL))["label_drift"]
        assert same.status == "ok" and not same.alert, same.figures
        labelled([*old[400:574], *new[:26]])  # 13% of the window
        shifted = _by_monitor(app.monitors.check(MODEL))
        drift = shifted["label_drift"]
        assert drift.alert and drift.figures["window_labels"] == 200, drift.figures
        # Named: the new intents (and a known one or two the 200 reference labels missed).
        named = set(drift.figures["new_classes"])
        assert len(named & held) >= 5 and len(named - held) <= 3, named
        assert drift.figures["new_class_share"] >= 0.1
        assert drift.figures["new_class_p_value"] < 0.01
        # Two or three labels of each new intent: a candidate could not learn them yet, so
        # no monitor's alert starts a retraining; it starts once they hold five each.
        held_labels = drift.figures["new_class_labels"]
        assert sorted(held_labels.values())[len(held_labels) // 2] < 5, held_labels
        waiting = {a.actions["retrain"]["code"] for a in _open_all(app)}
        assert waiting == {"waiting_for_labels"} and app.retraining.runs(MODEL) == []
        labelled([*old[574:654], *new[26:146]])
        app.monitors.check(MODEL)
        [run] = app.retraining.runs(MODEL)
        assert run.trigger is Trigger.DRIFT
    finally:
        app.close()


def test_the_accuracy_estimate_uses_the_certified_calibration_curve(
    monitored: Aevos,
) -> None:
    """The champion's raw confidences are far from calibrated (77 intents, 40 examples each:
    a linear model is right more often than its top probability says); certified on
    labelled cases it did not train on, its curve brings the monitors' estimate to within
    3 points of the true accuracy of the same 1,000 calls."""
    app = monitored
    train, test = _banking("train"), _banking("test")
    rng = random.Random(5)
    rng.shuffle(test)
    unseen = train[40 * 77 :]  # the fixture trained on each intent's first 40 rows ...
    rng.shuffle(unseen)
    held = [row for row in unseen if row[0] not in {t for t, _ in train[: 40 * 77]}][:1500]
    answers = [app.gateway.predict(MODEL, text) for text, _ in held]
    app.gateway.flush()
    # ... so these are cases it never saw: certification fits its curve on them.
    record = app.certifications.certify(
        MODEL,
        1,
        [a.prediction.confidence for a in answers],
        [a.prediction.label == label for a, (_, label) in zip(answers, held, strict=True)],
        target=0.9,
        delta=0.1,
    )
    assert record.calibration is not None and record.n == 1500
    app.monitors.configure(MODEL, window_cases=300, reference_cases=500)
    calls = [(app.gateway.predict(MODEL, text), label) for text, label in test[:1000]]
    app.gateway.flush()
    estimate = _by_monitor(app.monitors.check(MODEL))["estimated_accuracy"]
    truth = sum(a.prediction.label == label for a, label in calls) / len(calls)
    raw = sum(a.prediction.confidence for a, _ in calls) / len(calls)
    assert estimate.n == 1000 and estimate.figures["calibrated"] is True
    assert estimate.figures["calibration_cases"] == 1500
    assert abs(raw - truth) > 0.1, (raw, truth)  # uncalibrated: far off
    assert abs(estimate.value - truth) <= 0.03, (estimate.value, truth)
    low, high = estimate.figures["ci"]
    assert low < estimate.value < high and high - low < 0.06


def test_an_alert_starts_a_retraining_and_asks_an_operator(
    monitored: Aevos, banking_model: tuple[bytes, list[str]]
) -> None:
    app = monitored
    _, old, new = _split(set(banking_model[1]), 2)
    app.retraining.configure(MODEL, recipe="tfidf-logreg")
    app.monitors.configure(
        MODEL,
        window_cases=120,
        reference_cases=150,
        on_alert={"retrain": True, "task": True},
        thresholds={"min_window": 50},
    )
    _call(app, old[:150])
    _call(app, new[:120])
    found = _by_monitor(app.monitors.check(MODEL))
    assert found["prediction_drift"].alert
    alert = next(a for a in app.monitors.alerts() if a.monitor == "prediction_drift")
    run_id = alert.actions["retrain"]["run_id"]
    retraining = app.retraining.run(run_id)
    assert retraining.trigger is Trigger.DRIFT and retraining.model == MODEL

    task_run = alert.actions["task"]["run_id"]
    worker = app.worker(["monitoring"], concurrency=2).start()
    try:
        deadline = time.monotonic() + 20
        tasks: list[Any] = []
        while not tasks and time.monotonic() < deadline:
            tasks = [t for t in app.tasks.list(queue="operators") if t.run_id == task_run]
            time.sleep(0.05)
        info = app.get_run(task_run)
        assert tasks, (info.status, info.error)
        app.tasks.claim(tasks[0].task_id, actor="ops")
        app.tasks.submit(tasks[0].task_id, {"action": "dismiss", "note": "known"}, actor="ops")
        outcome = app.handle(task_run).result(timeout=60)
    finally:
        worker.stop()
    assert outcome["action"] == "dismiss"
    closed = app.monitors.alert(alert.alert_id)
    assert closed.status == "resolved" and closed.closed_by == "ops" and closed.reason == "known"


def test_a_drift_that_stays_retrains_again_when_nothing_answers_it(
    monitored: Aevos, banking_model: tuple[bytes, list[str]]
) -> None:
    """Open alerts whose retraining ended without a new champion (here: no labels to train
    on) retrain again on a later check, at most max_retrainings times for the drift (however
    many of its monitors alerted); never while a drift retraining is under way, nor while
    one of the model's versions is rolled out."""
    app = monitored
    rows, old, new = _split(set(banking_model[1]), 3)
    app.retraining.configure(MODEL, recipe="tfidf-logreg")
    app.monitors.configure(
        MODEL,
        window_cases=120,
        reference_cases=150,
        on_alert={"retrain": True},
        thresholds={"min_window": 50, "retrain_after": 0, "max_retrainings": 2},
    )
    _call(app, old[:150])
    _call(app, new[:120])

    def check() -> list[Any]:
        """The drift retrainings of the model after one more check, oldest first."""
        app.monitors.check(MODEL)
        runs = app.retraining.runs(MODEL)
        return sorted((r for r in runs if r.trigger is Trigger.DRIFT), key=lambda r: r.started_at)

    def started_by(run_id: str) -> dict[str, Any]:
        [action] = [
            a.actions["retrain"]
            for a in app.monitors.alerts(model=MODEL, status="open")
            if a.actions["retrain"]["started"] and a.actions["retrain"]["run_id"] == run_id
        ]
        return dict(action)

    def finish(run_id: str) -> None:
        worker = app.worker(["retraining"], concurrency=1).start()
        try:
            with pytest.raises(Exception, match="label"):  # nothing labelled to train on
                app.handle(run_id).result(timeout=60)
        finally:
            worker.stop()
        assert app.retraining.run(run_id).status is RetrainingStatus.FAILED

    [first] = check()
    assert len(_open_all(app)) >= 2  # several monitors saw the shift: one retraining
    assert started_by(first.run_id)["attempts"] == 1
    others = [a.actions["retrain"] for a in _open_all(app) if not a.actions["retrain"]["started"]]
    assert others and {o["code"] for o in others} == {"retraining_in_progress"}
    assert [r.run_id for r in check()] == [first.run_id]  # still queued: nothing more

    finish(first.run_id)
    runs = check()
    assert len(runs) == 2 and started_by(runs[1].run_id)["attempts"] == 2
    finish(runs[1].run_id)
    assert len(check()) == 2  # max_retrainings for this drift

    # A rollout of the model in progress: a new alert starts no retraining, and says why.
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    other = dump_sklearn(
        train_text_classifier([t for t, _ in rows[:300]], [y for _, y in rows[:300]])
    )
    candidate = app.models.register(MODEL, other, flavor="sklearn", signature={"type": "string"})
    rollout = app.rollouts.start(MODEL, candidate.version, actor="ops")
    for alert in _open_all(app):
        app.monitors.acknowledge(alert.alert_id, actor="ops")
    assert len(check()) == 2
    busy = [a.actions["retrain"] for a in _open_all(app)]
    assert busy and all(b["code"] == "rollout_in_progress" for b in busy)
    assert {b["rollout_id"] for b in busy} == {rollout.rollout_id}


def test_a_model_without_traffic_gets_no_data_results_and_no_alert(monitored: Aevos) -> None:
    app = monitored
    with pytest.raises(MonitorNotConfiguredError):
        app.monitors.check(MODEL)
    app.monitors.configure(MODEL, interval=60)
    results = app.monitors.check(MODEL)
    assert len(results) == len(MONITORS) and all(
        r.status == "no_data" and not r.alert for r in results
    )
    assert "fewer than min_window" in results[0].figures["reason"]
    assert app.monitors.alerts() == []
    stored = app.monitors.results(MODEL)
    assert {r.status for r in stored} == {"no_data"}
    # The workers' chore checks it once per interval, however many sweep.
    now = time.time() + 120
    assert app.monitors.sweep(now) == [f"default/{MODEL}"]
    assert app.monitors.sweep(now) == []


def test_workers_check_monitored_models_on_their_interval(monitored: Aevos) -> None:
    app = monitored
    app.monitors.configure(MODEL, interval=1)
    worker = app.worker(["monitoring"], concurrency=1)
    worker.escalation_interval = 0.05
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(app.monitors.results(MODEL)) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    checked = app.monitors.results(MODEL, limit=100)
    # At least two checks of six monitors each, one second apart at least.
    assert len(checked) >= 12 and {r.status for r in checked} == {"no_data"}
    moments = sorted({r.at for r in checked})
    assert len(moments) >= 2 and moments[1] - moments[0] >= 1


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"window_cases": None, "window_seconds": None}, "window_cases"),
        ({"window_cases": 5}, "window_cases"),
        ({"thresholds": {"pvalue": 0.1}}, "thresholds.pvalue"),
        ({"thresholds": {"p_value": 2}}, "thresholds.p_value"),
        ({"on_alert": {"retrain": "yes"}}, "on_alert.retrain"),
        ({"on_alert": {"page": True}}, "on_alert.page"),
        ({"reference": (10.0, 5.0)}, "reference"),
        ({"interval": 0}, "interval"),
    ],
)
def test_a_bad_configuration_names_its_field(
    app: Aevos, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(MonitorConfigError) as raised:
        app.monitors.configure(MODEL, **settings)
    assert raised.value.field == field


# -- statistics on real tabular data -------------------------------------------------------------

NUMERIC = ("months_as_customer", "age", "policy_annual_premium", "total_claim_amount")
CATEGORICAL = ("incident_severity", "incident_type", "insured_sex", "policy_state")


@pytest.fixture(scope="module")
def claims() -> list[dict[str, Any]]:
    with (data_file("insurance_claims") / "insurance_claims.csv").open(newline="") as handle:
        return [
            {
                **{k: float(row[k]) for k in NUMERIC},
                **{k: row[k] for k in CATEGORICAL},
            }
            for row in csv.DictReader(handle)
        ]


def _sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    pick = random.Random(seed)
    return [pick.choice(rows) for _ in range(n)]


def _shift(rows: list[dict[str, Any]], by: float) -> list[dict[str, Any]]:
    """Every numeric feature moved by ``by`` of its standard deviation."""
    import statistics

    spread = {k: statistics.pstdev(r[k] for r in rows) for k in NUMERIC}
    return [{**r, **{k: r[k] + by * spread[k] for k in NUMERIC}} for r in rows]


def test_tabular_drift_switches_from_tests_to_distances_above_1000_reference_rows(
    claims: list[dict[str, Any]],
) -> None:
    assert len(claims) == 1000
    reference, rest = claims[:500], claims[500:]
    same = st.tabular_drift(reference, rest)
    assert not same.alert and same.figures["method"] == "ks/chi2 and effect size"
    assert {f["test"] for f in same.figures["features"].values()} == {"ks", "chi2"}
    moved = st.tabular_drift(reference, _shift(rest, 0.5))
    assert moved.alert and set(moved.figures["drifted"]) == set(NUMERIC)
    # 1,000 rows is still a small reference; 1,001 is large.
    assert st.tabular_drift(claims, _shift(rest, 0.5)).figures["method"].startswith("ks")
    big = _sample(claims, 1001, seed=3)
    large = st.tabular_drift(big, _shift(_sample(claims, 800, seed=4), 0.5))
    assert large.figures["method"] == "wasserstein/jensen_shannon" and large.p_value is None
    assert {f["test"] for f in large.figures["features"].values()} == {
        "wasserstein",
        "jensen_shannon",
    }
    assert large.alert and set(large.figures["drifted"]) == set(NUMERIC)
    assert not st.tabular_drift(big, _sample(claims, 5000, seed=5)).alert


def test_a_large_window_does_not_flag_a_tiny_shift_that_is_significant(
    claims: list[dict[str, Any]],
) -> None:
    # A shift of 0.05 standard deviations over 20,000 rows: KS finds it (p < 0.05), but its
    # size is under the 0.1 threshold, so nothing is called drifted.
    window = _shift(_sample(claims, 20_000, seed=6), 0.05)
    found = st.tabular_drift(claims, window)
    features = found.figures["features"]
    assert any(features[k]["p_value"] < 0.05 for k in NUMERIC)
    assert not found.alert and found.figures["drifted"] == []


# -- the label-free accuracy estimate --------------------------------------------------------------


def test_cbpe_estimates_the_accuracy_of_a_calibrated_classifier_within_3_points() -> None:
    # Top-label calibration (isotonic regression of "the top class is right" on the top
    # confidence, fitted on rows the classifier did not train on): what CBPE assumes.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = _banking("train")
    random.Random(7).shuffle(train)
    fit, held = train[:7000], train[7000:]
    test = _banking("test")
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    model.fit([t for t, _ in fit], [label for _, label in fit])

    def top(rows: list[tuple[str, str]]) -> tuple[Any, list[bool]]:
        probabilities = model.predict_proba([t for t, _ in rows])
        guesses = model.classes_[probabilities.argmax(axis=1)]
        right = [g == label for g, (_, label) in zip(guesses, rows, strict=True)]
        return probabilities.max(axis=1), right

    raw, right = top(held)
    curve = calibration_curve(raw.tolist(), right)  # what certification keeps
    assert curve is not None and len(curve[0]) <= 101
    raw, right = top(test)
    confidences = calibrate(raw.tolist(), curve)
    errors = []
    for start in range(0, len(test) - 999, 1000):  # windows of 1,000 rows
        estimate, low, high = st.estimated_accuracy(confidences[start : start + 1000])
        truth = sum(right[start : start + 1000]) / 1000
        errors.append(abs(estimate - truth))
        assert low < estimate < high
    assert len(errors) == 3 and max(errors) <= 0.03, errors
    estimate, low, high = st.estimated_accuracy(confidences)
    truth = sum(right) / len(right)
    assert abs(estimate - truth) <= 0.03 and high - low < 0.04


def test_text_drift_flags_new_intents_and_not_the_same_distribution_at_any_size(
    banking_model: tuple[bytes, list[str]],
) -> None:
    held = set(banking_model[1])
    rows = _banking("test")
    random.Random(1).shuffle(rows)
    old = [t for t, label in rows if label not in held]
    new = [t for t, label in rows if label in held]
    reference = old[:600]
    for window in (old[600:900], old[600:2600]):
        same = st.text_drift(reference, window)
        assert not same.alert, same
        # Sampling noise alone puts two samples far apart; the excess over it is tiny.
        assert same.figures["distance"] > 0.1 and abs(same.value) < 0.005
    shifted = st.text_drift(reference, [*old[900:1100], *new[:100]])
    assert shifted.alert and shifted.p_value is not None and shifted.p_value < 0.05


def test_prediction_drift_needs_significance_and_size(
    banking_model: tuple[bytes, list[str]],
) -> None:
    # The classes of banking77 rows stand for predictions: the same mix in windows of 300
    # and 2,000 is no drift; a window with the held-back intents is, and names them.
    held = set(banking_model[1])
    rows = _banking("test")
    random.Random(4).shuffle(rows)
    old = [label for _, label in rows if label not in held]
    new = [label for _, label in rows if label in held]
    reference = old[:600]
    for window in (old[600:900], old[600:2600]):
        assert not st.prediction_drift(reference, window).alert
    # A monitor checks again and again: 67 classes in 200 calls leave most cells nearly
    # empty, where chi-squared and a fixed distance of 0.1 both call drift on noise (the
    # distance of two samples of one mix is about 0.3). Permutation-tested excesses do not.
    checks = [
        st.prediction_drift(old[:500], old[500 + 100 * i : 700 + 100 * i], p_value=0.01)
        for i in range(20)
    ]  # the monitors' default p-value
    assert not any(c.alert for c in checks), [c.p_value for c in checks]
    assert min(c.figures["noise"] for c in checks) > 0.2
    shifted = st.prediction_drift(reference, [*old[600:800], *new[:100]])
    assert shifted.alert and set(shifted.figures["new_classes"]) == held
    assert shifted.figures["new_class_share"] == pytest.approx(1 / 3)


def test_the_public_names_of_monitoring() -> None:
    import aevos.monitoring

    assert sorted(aevos.monitoring.__all__) == [
        "Check",
        "DEFAULT_THRESHOLDS",
        "Finding",
        "LARGE_REFERENCE",
        "MONITORS",
        "Monitors",
        "OPERATOR_QUEUE",
        "QUEUE",
        "WORKFLOW",
    ]
    assert MONITORS[:3] == ("input_drift", "prediction_drift", "label_drift")
