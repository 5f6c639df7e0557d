"""Retraining as a durable workflow, on SQLite and PostgreSQL, with real training.

A retraining snapshots labelled data (banking77 slices, ``tests/apps/retrain_app.py``),
splits it by time, trains ``tfidf-logreg``, registers the candidate with its lineage,
evaluates it and the champion on the same holdout, certifies it and asks the promotion
policy (``examples/policies/retraining-promotion.yaml``). Every way it can go wrong ends in a
failed retraining with its reason and no half-registered version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.apps.retrain_app import CERTIFY, FAST, POLICIES, BankingLabels, banking

from aevos import Aevos
from aevos.errors import (
    DatasetError,
    RecipeNotFoundError,
    RecipeParameterError,
    RetrainingConfigError,
    RetrainingNotConfiguredError,
    RunFailedError,
)
from aevos.evolution import Dataset, TfidfLogregParams, Trained
from aevos.kernel.step import StepContext
from aevos.records.retraining import RetrainingStatus, Trigger
from aevos.retraining import RUN_TAG, WORKFLOW, reserved, split, split_by_time

MODEL = "intents"


@pytest.fixture
def retrain_app(database_url: str) -> Iterator[Aevos]:
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=POLICIES
    )
    app.retraining.data = BankingLabels()
    yield app
    app.close()


def run_to_end(app: Aevos, run_id: str, timeout: float = 120) -> Any:
    worker = app.worker(concurrency=1).start()
    try:
        return app.handle(run_id).result(timeout=timeout)
    finally:
        worker.stop()


def failed(app: Aevos, run_id: str) -> str:
    with pytest.raises(RunFailedError):
        run_to_end(app, run_id)
    record = app.retraining.run(run_id)
    assert record.status is RetrainingStatus.FAILED and record.finished_at is not None
    assert record.reason
    return record.reason


def versions(app: Aevos, model: str = MODEL) -> list[Any]:
    return app.models.versions(model) if model in app.models.names() else []


def test_manual_retraining_registers_a_certified_candidate_with_lineage_and_promotes(
    retrain_app: Aevos,
) -> None:
    app = retrain_app
    config = app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, **CERTIFY)
    assert config.version == 1 and config.params["char_ngrams"] == [2, 3]
    handle = app.retraining.start(MODEL, actor="tester")
    assert app.retraining.run(handle.run_id).status is RetrainingStatus.QUEUED
    assert app.get_run(handle.run_id).workflow == WORKFLOW
    result = run_to_end(app, handle.run_id)

    assert result["status"] == "succeeded" and result["candidate"] == 1
    version = app.models.get(MODEL, 1)
    tags = version.tags
    assert tags[RUN_TAG] == handle.run_id
    assert tags["aevos.recipe"] == "tfidf-logreg@1"
    assert '"char_ngrams":[2,3]' in tags["aevos.recipe.params"]
    assert tags["aevos.parent"] == "" and tags["aevos.holdout.n"] == "73"
    record = app.retraining.run(handle.run_id)
    assert record.dataset is not None and tags["aevos.dataset"] == record.dataset
    assert version.card.training_run_id == handle.run_id
    assert version.card.training_data == f"dataset:{record.dataset}"
    assert version.card.metrics["accuracy"] > 0.85
    assert record.lineage["recipe_ref"] == "tfidf-logreg@1" and record.lineage["n_train"] == 167
    # Certified on the holdout, recorded with the dataset version; then promoted by policy.
    certification = app.certifications.latest(MODEL, 1)
    assert certification is not None and certification.certified
    assert certification.dataset == record.dataset and certification.n == 73
    assert tags["aevos.certified"] == f"{certification.threshold:g}"
    assert record.certified is True and record.threshold == certification.threshold
    assert record.promotion == "allow" and app.models.aliases(MODEL) == {"champion": 1}
    assert result["promotion"]["promoted"] is True
    actions = [r.action for r in app.audit.query("default")]
    for action in ("retraining.configured", "model.registered", "model.certified"):
        assert actions.count(action) == 1, action
    assert "model.promoted" in actions and actions[-1] == "retraining.succeeded"

    # A second retraining on more labels: its parent is the champion, which is measured on
    # the same holdout as the candidate.
    app.retraining.data = BankingLabels(banking(per=50, seed=1))
    second = run_to_end(app, app.retraining.start(MODEL).run_id)
    assert second["candidate"] == 2
    again = app.retraining.run(app.retraining.runs(MODEL)[0].run_id)
    assert again.parent == 1 and app.models.get(MODEL, 2).tags["aevos.parent"] == "1"
    decided = [r for r in app.audit.query("default") if r.action == "policy.decided"][-1]
    assert decided.data["model"] == f"{MODEL}@2"
    assert [r.candidate for r in app.retraining.runs(MODEL)] == [2, 1]


def test_configuration_refuses_what_cannot_be(retrain_app: Aevos) -> None:
    app = retrain_app
    with pytest.raises(RecipeNotFoundError, match="no recipe is called 'nope'"):
        app.retraining.configure(MODEL, recipe="nope")
    with pytest.raises(RecipeParameterError, match="unknown parameter 'depth'"):
        app.retraining.configure(MODEL, recipe="tfidf-logreg", params={"depth": 3})
    for field, value in (
        ("holdout", 2.0),
        ("every_labels", 0),
        ("interval", -5),
        ("target", True),
        ("min_holdout", 0),
    ):
        with pytest.raises(RetrainingConfigError) as caught:
            app.retraining.configure(MODEL, recipe="tfidf-logreg", **{field: value})
        assert caught.value.field == field
    with pytest.raises(RetrainingNotConfiguredError, match="no retraining configuration"):
        app.retraining.start(MODEL)
    assert app.list_runs() == []
    first = app.retraining.configure(MODEL, recipe="tfidf-logreg")
    second = app.retraining.configure(MODEL, recipe="tfidf-logreg", every_labels=50)
    assert (first.version, second.version) == (1, 2)
    assert app.retraining.config(MODEL).every_labels == 50
    assert [c.version for c in app.retraining.configs(MODEL)] == [2, 1]
    assert app.retraining.config(MODEL, version=1).every_labels is None


def test_each_failure_is_a_failed_retraining_with_its_reason_and_no_half_registered_version(
    retrain_app: Aevos, make_app: Callable[..., Aevos]
) -> None:
    app = retrain_app

    # A recipe this process has but the worker's app does not (unknown where it runs).
    @app.recipes.recipe("only-here", params=TfidfLogregParams)
    def only_here(dataset: Any, params: TfidfLogregParams) -> Trained:
        raise AssertionError("never trained")

    app.retraining.configure(MODEL, recipe="only-here")
    run_id = app.retraining.start(MODEL).run_id
    elsewhere = make_app(policies=POLICIES)
    elsewhere.retraining.data = BankingLabels()
    reason = failed(elsewhere, run_id)
    assert "no recipe is called 'only-here'" in reason and reason.startswith(f"{WORKFLOW}.plan")
    assert versions(app) == []

    # A recipe that raises: its type is the reason (its message could quote the data).
    @app.recipes.recipe("explodes", params=TfidfLogregParams)
    def explodes(dataset: Any, params: TfidfLogregParams) -> Trained:
        raise ZeroDivisionError("customer text here")

    app.retraining.configure(MODEL, recipe="explodes")
    reason = failed(app, app.retraining.start(MODEL).run_id)
    assert "recipe explodes@1 raised ZeroDivisionError" in reason
    assert "customer text" not in reason and versions(app) == []

    # Too few labels to hold any out.
    app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, min_holdout=20)
    app.retraining.data = BankingLabels(banking(intents=2, per=10))
    reason = failed(app, app.retraining.start(MODEL).run_id)
    assert "dataset too small to split: 20 labelled rows" in reason and versions(app) == []

    # A candidate that cannot be certified (too few cases for the start of the sequence):
    # registered whole with its lineage and a certification record saying why, never
    # promoted, nothing of it automated.
    app.retraining.data = BankingLabels()
    app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, min_count=1000)
    run_id = app.retraining.start(MODEL).run_id
    reason = failed(app, run_id)
    assert reason.startswith(f"candidate {MODEL}@1 not certified")
    [version] = versions(app)
    assert version.tags[RUN_TAG] == run_id and version.tags["aevos.certified"] == "false"
    certification = app.certifications.latest(MODEL, 1)
    assert certification is not None and certification.threshold is None
    assert certification.reason and "1000" in certification.reason
    record = app.retraining.run(run_id)
    assert (record.candidate, record.certified, record.promotion) == (1, False, None)
    assert app.models.aliases(MODEL) == {}
    actions = [r.action for r in app.audit.query("default")]
    assert actions.count("retraining.failed") == 4 and "model.promoted" not in actions
    assert "policy.decided" not in actions


def test_a_retrained_step_after_a_crash_finds_the_registered_candidate(retrain_app: Aevos) -> None:
    # The window a crash can hit: the version is registered, the step's result is not yet
    # recorded. The step run again (same run id) returns that version; nothing is registered
    # twice.
    app = retrain_app
    app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, **CERTIFY)
    run_id = app.retraining.start(MODEL).run_id
    run_to_end(app, run_id)
    service = app.retraining
    plan = {"recipe": "tfidf-logreg", "recipe_version": 1, "params": FAST, "parent": None}
    plan |= {"holdout": 0.3, "min_holdout": 20}
    dataset = {"digest": app.retraining.run(run_id).dataset}
    step = StepContext(run_id, WORKFLOW, f"{WORKFLOW}.train", 2, 1)
    again = service._train_step(step, "default", MODEL, plan, dataset)
    assert again == {"version": 1, "found": True} and len(versions(app)) == 1


def test_the_public_names_of_retraining() -> None:
    import aevos.retraining

    assert aevos.retraining.__all__ == [
        "QUEUE",
        "RUN_TAG",
        "WORKFLOW",
        "LabelledCases",
        "Retraining",
        "Split",
        "TrainingData",
        "reserved",
        "split",
        "split_by_time",
    ]


def test_split_by_time_holds_out_the_newest_labels() -> None:
    data = banking(intents=3, per=10)
    train, holdout = split_by_time(data, 0.2, 5)
    assert (len(train), len(holdout)) == (24, 6)
    assert data.times is not None and train.times is not None and holdout.times is not None
    assert max(train.times) < min(holdout.times)
    with pytest.raises(DatasetError, match="too small to split"):
        split_by_time(data, 0.2, 29)


def test_certification_sees_only_the_unbiased_reserve_and_no_candidate_trains_on_it() -> None:
    data = banking(intents=4, per=60)
    # Half the rows were asked about because of the model (biased), half at random.
    flags = tuple(i % 2 == 0 for i in range(len(data)))
    data = Dataset(data.texts, data.labels, data.times, flags)
    parts = split(data, holdout=0.2, min_holdout=20, reserve=0.5)
    assert parts.calibrated_on_evaluation and len(parts.calibration) >= 20
    unbiased = {t for t, u in zip(data.texts, flags, strict=True) if u}
    assert set(parts.calibration.texts) <= unbiased
    assert not set(parts.calibration.texts) & set(parts.train.texts)
    assert len(parts.train) + len(parts.calibration) == len(data)
    # The reserve is a property of the case, not of the snapshot: a later, larger dataset
    # (the same cases and more) keeps every reserved row reserved, so no later candidate
    # trains on a row an earlier one was certified on.
    six = banking(intents=6, per=30, seed=3)
    extra = six.subset(i for i, y in enumerate(six.labels) if y not in set(data.labels))
    more = Dataset(
        data.texts + extra.texts,
        data.labels + extra.labels,
        (data.times or ()) + tuple(1000.0 + t for t in extra.times or ()),
        flags + (True,) * len(extra),
    )
    later = split(more, holdout=0.2, min_holdout=20, reserve=0.5)
    assert set(parts.calibration.texts) <= set(later.calibration.texts)
    assert not set(parts.calibration.texts) & set(later.train.texts)
    assert all(
        reserved(text, at, 0.5)
        for text, at in zip(parts.calibration.texts, parts.calibration.times or (), strict=True)
    )
    # Too few unbiased rows: candidates are compared on the newest other rows (by time),
    # and certification still sees only the reserve, too small to certify anything.
    few = Dataset(data.texts, data.labels, data.times, (False,) * (len(data) - 3) + (True,) * 3)
    thin = split(few, holdout=0.2, min_holdout=20, reserve=1.0)
    assert not thin.calibrated_on_evaluation and len(thin.calibration) == 3
    assert len(thin.evaluation) == 48 and len(thin.train) == len(data) - 3 - 48
    assert not set(thin.calibration.texts) & set(thin.train.texts)
    # Everything unbiased and all of it reserved: nothing left to train on.
    with pytest.raises(DatasetError, match="0 rows outside the reserve of 240"):
        split(banking(), holdout=0.2, min_holdout=20, reserve=1.0)
    # Nothing unbiased: nothing to certify on.
    flagless = banking(unbiased=False)
    assert len(split(flagless, holdout=0.2, min_holdout=20, reserve=1.0).calibration) == 0


def test_every_n_labels_starts_one_retraining_across_workers(
    retrain_app: Aevos, make_app: Callable[..., Aevos]
) -> None:
    app = retrain_app
    source = BankingLabels(labels=99)
    app.retraining.data = source
    other = make_app(policies=POLICIES)
    other.retraining.data = source
    app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, every_labels=100, **CERTIFY)
    assert app.retraining.sweep() == [] and other.retraining.sweep() == []
    source.labels = 100
    started: list[list[str]] = []
    barrier = threading.Barrier(4)

    def sweep(service: Any) -> None:
        barrier.wait()
        started.append(service.sweep())

    threads = [
        threading.Thread(target=sweep, args=(a.retraining,)) for a in (app, other, app, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {run_id for found in started for run_id in found}
    runs = app.retraining.runs(MODEL)
    assert len(ids) == 1 and [r.run_id for r in runs] == list(ids)
    assert runs[0].trigger is Trigger.LABELS and runs[0].label_count == 100
    assert len(app.list_runs(workflow=WORKFLOW)) == 1
    # While it is queued or running, no other starts, however many labels arrive.
    source.labels = 250
    assert app.retraining.sweep() == [] and len(app.retraining.runs(MODEL)) == 1
    # Once it ended, the next N labels after it start the next one, once.
    run_to_end(app, runs[0].run_id)
    source.labels = 199
    assert app.retraining.sweep() == []
    source.labels = 200
    [next_id] = other.retraining.sweep()
    assert app.retraining.sweep() == [] and next_id != runs[0].run_id
    assert app.retraining.run(next_id).label_count == 200
    # A run recorded with the count an earlier trigger started from (a count that could not
    # be read is recorded as 0) does not make the trigger name that earlier, finished run:
    # the next N labels start a new one.
    run_to_end(app, next_id)
    source.labels = 0
    manual = app.retraining.start(MODEL).run_id
    run_to_end(app, manual)
    source.labels = 100
    [again] = app.retraining.sweep()
    assert again not in {runs[0].run_id, next_id, manual}
    assert app.retraining.run(again).trigger is Trigger.LABELS


def test_a_worker_sweeps_the_triggers_and_runs_the_retraining_they_start(
    retrain_app: Aevos,
) -> None:
    # Nobody calls sweep(): a worker does between claims, as in production.
    app = retrain_app
    app.retraining.data = BankingLabels(labels=100)
    app.retraining.configure(MODEL, recipe="tfidf-logreg", params=FAST, every_labels=100, **CERTIFY)
    worker = app.worker(concurrency=1).start()
    try:
        deadline = time.monotonic() + 60
        while not app.retraining.runs(MODEL) or app.retraining.runs(MODEL)[0].finished_at is None:
            assert time.monotonic() < deadline, "the worker started no retraining"
            time.sleep(0.05)
    finally:
        worker.stop()
    [record] = app.retraining.runs(MODEL)
    assert record.trigger is Trigger.LABELS and record.status is RetrainingStatus.SUCCEEDED
    assert app.models.aliases(MODEL) == {"champion": record.candidate}


def test_the_schedule_starts_one_retraining_per_interval(retrain_app: Aevos) -> None:
    app = retrain_app
    config = app.retraining.configure(
        MODEL, recipe="tfidf-logreg", params=FAST, interval=3600, **CERTIFY
    )
    slot = (config.updated_at // 3600 + 1) * 3600  # the next interval after configuring
    assert app.retraining.sweep(now=config.updated_at) == []
    [first] = app.retraining.sweep(now=slot + 1)
    assert app.retraining.run(first).trigger is Trigger.SCHEDULE
    assert app.retraining.sweep(now=slot + 2) == []  # it is queued: none other starts
    run_to_end(app, first)
    # This interval had its retraining: the slot's key names that run, whoever sweeps.
    assert app.retraining.sweep(now=slot + 3) in ([], [first])
    assert len(app.list_runs(workflow=WORKFLOW)) == 1
    [second] = app.retraining.sweep(now=slot + 3601)
    assert second != first and len(app.list_runs(workflow=WORKFLOW)) == 2


def test_labels_of_kept_cases_trigger_a_retraining_that_trains_on_their_text(
    retrain_app: Aevos,
) -> None:
    # The whole loop on the app's own data: a champion answers governed calls, their inputs
    # are kept, ground truth arrives as labels, every 100 labels a worker retrains on the
    # kept texts, and the candidate is judged against the champion on the same holdout.
    from aevos import WorkflowContext
    from aevos.pii import Vault

    app = retrain_app
    app.retraining.data = app._training_data()  # the default source: labels of kept cases
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    data = banking(intents=4, per=60, seed=3)
    first, rest = data.subset(range(0, 80)), data.subset(range(80, 240))
    champion = app.recipes.train("tfidf-logreg", first, FAST)
    assert champion.artifact is not None
    app.models.register(MODEL, champion.artifact.data, flavor="sklearn")
    app.promotions.promote(MODEL, 1, alias="champion", tenant="default", by="test")

    @app.workflow(name="answer")
    def answer(ctx: WorkflowContext, text: str) -> str:
        return str(ctx.predict(MODEL, text).call_id)

    # Precision >= 0.8 here: about 48 reserved cases of a model trained on about 112.
    settings = {**CERTIFY, "target": 0.8}
    app.retraining.configure(
        MODEL, recipe="tfidf-logreg", params=FAST, every_labels=100, **settings
    )
    calls = [answer.run(text) for text in rest.texts]
    for i, (call_id, truth) in enumerate(zip(calls, rest.labels, strict=True)):
        app.labels.record(call_id, truth, actor="service:crm#1", unbiased=True)
        if i == 98:
            assert app.retraining.sweep() == []  # 99 labels: not yet
    [run_id] = app.retraining.sweep()
    result = run_to_end(app, run_id)
    record = app.retraining.run(run_id)
    assert record.trigger is Trigger.LABELS and record.label_count == 160
    assert record.parent == 1 and result["candidate"] == 2
    version = app.datasets.info(record.dataset or "")
    assert version.rows == 160 and version.model == MODEL
    # Every label was unbiased ground truth: a reserve of about 30% of the cases (by a hash
    # of each case) is held out for good, the rest trains.
    lineage = record.lineage
    assert lineage["n_train"] + lineage["n_holdout"] == 160
    assert lineage["n_reserve"] == lineage["n_holdout"] and 20 <= lineage["n_holdout"] <= 80
    # Both measured on the same reserve; the policy promotes when the candidate is at least
    # as accurate (it is certified, or it would not have been asked).
    holdout = lineage["holdout"]
    assert holdout["evaluated_on"] == "reserve"
    assert holdout["candidate"]["samples"] == holdout["champion"]["samples"]
    assert holdout["candidate"]["samples"] == lineage["n_holdout"]
    better = holdout["candidate"]["accuracy"] >= holdout["champion"]["accuracy"]
    assert record.certified is True
    assert record.promotion == ("allow" if better else "deny")
    assert app.models.aliases(MODEL)["champion"] == (2 if better else 1)
