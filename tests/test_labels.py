"""Labels, QA sampling and dataset versions, through the Python API (both backends).

A real model (banking77, 4 intents, TF-IDF) suggests; a reviewer's decision and a QA
answer become labels linked to the model call; late ground truth outranks them and the
disagreement is recorded; dataset versions are content-addressed snapshots of the labels.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aevos import Aevos, Field, RunStatus, TaskStatus, WorkflowContext
from aevos.errors import (
    CaseNotFoundError,
    DatasetError,
    DatasetNotFoundError,
    DefinitionError,
    ExportFormatError,
    LabelInputError,
)
from aevos.public_data import data_file
from aevos.records.label import LabelSource

DATA = data_file("banking77")
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked"]
FORM = [Field.choice("intent", INTENTS), Field.text("note", required=False)]
ALICE = "reviewer:alice#t1"
CLAIMS = "service:claims#t9"


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def intent_model() -> bytes:
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    seen: dict[str, int] = {}
    texts, labels = [], []
    with (DATA / "train.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in INTENTS and seen.get(row["category"], 0) < 30:
                seen[row["category"]] = seen.get(row["category"], 0) + 1
                texts.append(row["text"])
                labels.append(row["category"])
    return dump_sklearn(train_text_classifier(texts, labels))


@pytest.fixture
def labelled(app: Aevos, intent_model: bytes) -> Iterator[Aevos]:
    app.models.register("intent", intent_model, flavor="sklearn", aliases=["champion"])

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, text: str) -> str:
        prediction = ctx.predict("intent", text)
        decision = ctx.ask_human(
            "Which intent?", form=FORM, case={"text": text}, prediction=prediction
        )
        return str(decision["intent"])

    @app.workflow(name="auto")
    def auto(ctx: WorkflowContext, text: str, share: float) -> dict[str, Any]:
        prediction = ctx.predict("intent", text)
        task_id = ctx.qa_sample(prediction, share=share, form=FORM, case={"text": text})
        return {"intent": prediction.label, "qa": task_id, "call_id": prediction.call_id}

    @app.workflow(name="auto_then_wait")
    def auto_then_wait(ctx: WorkflowContext, text: str, share: float) -> str | None:
        prediction = ctx.predict("intent", text)
        task_id = ctx.qa_sample(prediction, share=share, form=FORM, case={"text": text})
        ctx.wait_signal("go")
        return task_id

    yield app


def _qa_label(app: Aevos, text: str, answer: str, actor: str = ALICE) -> str:
    """An automated decision sampled for QA (share 1), answered: its case id."""
    out = app.workflow_named("auto").run(text, 1.0)
    app.tasks.submit(out["qa"], {"intent": answer}, actor=actor)
    return str(out["call_id"])


# -- reviews and QA answers become labels -----------------------------------------------------


def test_a_reviewers_decision_is_a_label_linked_to_the_call_it_overrode(labelled: Aevos) -> None:
    app = labelled
    handle = app.start("triage", "My new card has still not arrived")
    worker = app.worker(concurrency=2).start()
    try:
        wait_for(lambda: bool(app.tasks.list(run_id=handle.run_id)))
        (task,) = app.tasks.list(run_id=handle.run_id)
        assert task.purpose == "review" and task.label_field == "intent"
        # The version has no certified threshold: every case was asked, so the review is
        # an unbiased sample of the traffic.
        assert task.unbiased
        _, record = app.tasks.submit(task.task_id, {"intent": "pin_blocked"}, actor=ALICE)
        assert handle.result(timeout=15) == "pin_blocked"
    finally:
        worker.stop()
    assert record.purpose == "review" and record.unbiased
    (label,) = app.labels.list()
    assert label.case_id == task.call_id == record.call_id
    assert label.label == "pin_blocked" and label.source is LabelSource.REVIEW
    assert label.feedback_id == record.id and label.task_id == task.task_id
    assert label.run_id == handle.run_id and label.actor == ALICE
    assert label.model == "intent" and label.model_version == "intent@1" and label.unbiased
    recorded = [r for r in app.audit.query(tenant="default") if r.action == "label.recorded"]
    assert [r.data["label_id"] for r in recorded] == [label.id]
    submitted = next(r for r in app.audit.query(tenant="default") if r.action == "task.submitted")
    assert submitted.data["label_id"] == label.id


def test_a_task_without_a_prediction_labels_nothing(labelled: Aevos) -> None:
    app = labelled

    @app.workflow(name="plain")
    def plain(ctx: WorkflowContext) -> str:
        return str(ctx.ask_human("Anything?", form=[Field.text("why")])["why"])

    handle = app.start("plain")
    worker = app.worker().start()
    try:
        wait_for(lambda: bool(app.tasks.list(run_id=handle.run_id)))
        (task,) = app.tasks.list(run_id=handle.run_id)
        assert task.label_field is None and not task.unbiased
        app.tasks.submit(task.task_id, {"why": "because"}, actor=ALICE)
        assert handle.result(timeout=15) == "because"
    finally:
        worker.stop()
    assert app.labels.list() == []


def test_qa_sampling_does_not_hold_the_run_and_its_answer_is_an_unbiased_qa_label(
    labelled: Aevos,
) -> None:
    app = labelled
    out = app.workflow_named("auto").run("I lost my card on the train", 1.0)
    # The run finished at once; the QA task waits on its own.
    runs = app.list_runs(workflow="auto")
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED]
    task = app.tasks.get(out["qa"])
    assert task.status is TaskStatus.OPEN and task.purpose == "qa" and task.queue == "qa"
    assert task.unbiased and task.call_id == out["call_id"]
    assert task.suggestion == {"intent": out["intent"]}
    _, record = app.tasks.submit(task.task_id, {"intent": "lost_or_stolen_card"}, actor=ALICE)
    assert record.purpose == "qa" and record.unbiased
    (label,) = app.labels.list()
    assert label.source is LabelSource.QA and label.unbiased
    assert label.case_id == out["call_id"] and label.label == "lost_or_stolen_card"
    assert app.get_run(runs[0].run_id).status is RunStatus.SUCCEEDED  # not woken, not changed

    none = app.workflow_named("auto").run("What is the exchange rate?", 0.0)
    assert none["qa"] is None
    assert len(app.tasks.list()) == 1


def test_a_replay_makes_the_same_sampling_choice(labelled: Aevos) -> None:
    app = labelled
    flow = app.workflow_named("auto_then_wait")
    handles = [flow.start("card not here", share) for share in (1.0, 0.0, 0.5, 0.5, 0.5)]
    worker = app.worker(concurrency=5).start()
    try:
        for handle in handles:  # each sampled (or not), then parked waiting for the signal
            wait_for(lambda h=handle: h.status() is RunStatus.WAITING)
        for handle in handles:
            app.send_signal(handle.run_id, "go")
        results = [handle.result(timeout=15) for handle in handles]
    finally:
        worker.stop()
    for handle, result in zip(handles, results, strict=True):
        assert handle.info().executions >= 2  # replayed after parking
        (qa,) = [s for s in app.list_steps(handle.run_id) if s.name == "aevos.qa"]
        assert qa.output["task_id"] == result
        assert qa.output["sampled"] == (qa.output["draw"] < qa.output["share"])
        tasks = app.tasks.list(run_id=handle.run_id)
        assert [t.task_id for t in tasks] == ([] if result is None else [result])
    assert results[0] is not None and results[1] is None


def test_qa_sampling_refuses_a_share_outside_0_to_1(labelled: Aevos) -> None:
    app = labelled
    shares: list[Any] = [1.5, -0.1, float("nan"), True, "0.1"]

    @app.workflow(name="bad_share")
    def bad(ctx: WorkflowContext, which: int) -> None:
        ctx.qa_sample(ctx.predict("intent", "card"), share=shares[which], form=FORM)

    for which in range(len(shares)):
        with pytest.raises(DefinitionError, match="qa_sample share"):
            bad.run(which)
    assert app.tasks.list() == []


# -- late ground truth ---------------------------------------------------------------------------


def test_late_ground_truth_outranks_a_reviewer_and_the_conflict_is_recorded(
    labelled: Aevos,
) -> None:
    app = labelled
    case = _qa_label(app, "My card has not arrived yet", "card_arrival")
    truth = app.labels.record(case, "lost_or_stolen_card", actor=CLAIMS)
    assert truth.source is LabelSource.GROUND_TRUTH and truth.model == "intent"
    assert truth.run_id is not None  # lineage: the run the case came from
    assert app.labels.effective(case) == truth
    (conflict,) = app.labels.conflicts()
    assert conflict.case_id == case and conflict.label_id == truth.id
    assert conflict.label == "lost_or_stolen_card" and conflict.other == "card_arrival"
    assert conflict.source is LabelSource.GROUND_TRUTH and conflict.other_source is LabelSource.QA
    assert conflict.winner_id == truth.id
    # Nothing was overwritten: the reviewer's label is still there.
    assert [label.label for label in app.labels.list(case_id=case)] == [
        "card_arrival",
        "lost_or_stolen_card",
    ]
    actions = [r.action for r in app.audit.query(tenant="default")]
    assert actions.count("label.recorded") == 2 and actions.count("label.conflict") == 1

    # A reviewer answering later does not outrank the ground truth; it is a conflict too.
    again = _qa_label(app, "My card has not arrived yet", "card_arrival")
    assert again != case
    app.labels.record(case, "lost_or_stolen_card", source="review", actor=ALICE)
    assert app.labels.effective(case) == truth
    assert len(app.labels.conflicts()) == 1  # agreeing with the ground truth is no conflict
    late = app.labels.record(case, "pin_blocked", source="review", actor=ALICE)
    assert app.labels.effective(case) == truth
    second = app.labels.conflicts()[-1]
    assert second.label_id == late.id and second.winner_id == truth.id


def test_the_later_of_two_contradicting_ground_truths_holds_and_both_stay(
    labelled: Aevos,
) -> None:
    app = labelled
    case = _qa_label(app, "Is my PIN blocked?", "pin_blocked")
    first = app.labels.record(case, "pin_blocked", actor=CLAIMS)
    assert app.labels.conflicts() == []
    appeal = app.labels.record(case, "card_arrival", actor=CLAIMS)
    assert app.labels.effective(case) == appeal
    (conflict,) = app.labels.conflicts(case_id=case)
    assert (conflict.label_id, conflict.other_id, conflict.winner_id) == (
        appeal.id,
        first.id,
        appeal.id,
    )


def test_a_label_for_an_unknown_case_is_refused_and_the_refusal_recorded(labelled: Aevos) -> None:
    app = labelled
    case = _qa_label(app, "card", "card_arrival")
    with pytest.raises(CaseNotFoundError) as caught:
        app.labels.record_many(
            [{"case_id": case, "label": "pin_blocked"}, {"case_id": "nope", "label": "x"}],
            actor=CLAIMS,
        )
    assert caught.value.code == "case_not_found" and "labels[1]" in caught.value.message
    # All or nothing: the known case's label was not recorded either.
    assert [label.source for label in app.labels.list()] == [LabelSource.QA]
    (rejected,) = [r for r in app.audit.query(tenant="default") if r.action == "label.rejected"]
    assert rejected.data["reason"] == "case_not_found" and rejected.subject == "case:nope"
    assert rejected.actor == CLAIMS
    # Another tenant's case is unknown in this one.
    with pytest.raises(CaseNotFoundError):
        app.labels.record(case, "pin_blocked", tenant="other", actor=CLAIMS)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"case_id": "", "label": "x"}, "labels[0].case_id"),
        ({"case_id": "c", "label": None}, "labels[0].label"),
        ({"case_id": "c", "label": "x" * 1001}, "labels[0].label"),
        ({"case_id": "c", "label": float("inf")}, "labels[0].label"),
        ({"case_id": "c", "label": ["a"]}, "labels[0].label"),
        ({"case_id": "c", "label": "x", "source": "oracle"}, "labels[0].source"),
        ({"case_id": "c", "label": "x", "unbiased": "yes"}, "labels[0].unbiased"),
        ({"case_id": "c", "label": "x", "at": "yesterday"}, "labels[0].at"),
        ({"case_id": "c", "label": "x", "extra": 1}, "labels[0].extra"),
    ],
)
def test_a_label_that_cannot_be_one_is_refused_naming_the_field(
    app: Aevos, item: dict[str, Any], field: str
) -> None:
    with pytest.raises(LabelInputError) as caught:
        app.labels.record_many([item], actor=CLAIMS)
    assert caught.value.field == field and caught.value.code == "invalid_label"
    assert [r.action for r in app.audit.query(tenant="default")] == ["label.rejected"]


def test_a_batch_is_bounded(app: Aevos) -> None:
    with pytest.raises(LabelInputError, match="1 to 1000"):
        app.labels.record_many([{"case_id": "c", "label": "x"}] * 1001, actor=CLAIMS)
    with pytest.raises(LabelInputError):
        app.labels.record_many([], actor=CLAIMS)


# -- dataset versions ------------------------------------------------------------------------------


def test_a_snapshot_is_content_addressed_and_immutable(labelled: Aevos) -> None:
    app = labelled
    a = _qa_label(app, "My card has not arrived", "card_arrival")
    b = _qa_label(app, "What rate do you use?", "exchange_rate")
    first = app.datasets.snapshot("intent", actor="operator:ops#t0")
    assert first.model == "intent" and first.case_ids() == [a, b]
    assert [r.label for r in first.rows] == ["card_arrival", "exchange_rate"]
    assert all(r.source is LabelSource.QA and r.unbiased for r in first.rows)
    assert first.info.rows == 2 and first.info.people == 1 and first.info.runs == 2
    assert first.info.sources == {"qa": 2} and first.info.created_by == "operator:ops#t0"
    # Same rows: the same version, stored once, audited once.
    again = app.datasets.snapshot("intent")
    assert again.digest == first.digest and again.info == first.info
    assert len(app.datasets.list()) == 1

    # A new label is a new version; the old one is unchanged.
    app.labels.record(a, "lost_or_stolen_card", actor=CLAIMS)
    second = app.datasets.snapshot("intent")
    assert second.digest != first.digest
    assert [r.label for r in second.rows] == ["exchange_rate", "lost_or_stolen_card"]
    assert second.rows[1].source is LabelSource.GROUND_TRUTH and second.rows[1].unbiased
    assert app.datasets.get(first.digest) == first
    assert [d.digest for d in app.datasets.list(model="intent")] == [second.digest, first.digest]
    # Cut at a time: the labels known then.
    cut = app.datasets.snapshot("intent", until=first.rows[-1].labelled_at)
    assert cut.digest == first.digest
    created = [r for r in app.audit.query(tenant="default") if r.action == "dataset.created"]
    assert [r.subject for r in created] == [f"dataset:{first.digest}", f"dataset:{second.digest}"]
    # Tenant scoped.
    with pytest.raises(DatasetNotFoundError):
        app.datasets.get(first.digest, tenant="other")
    assert app.datasets.list(tenant="other") == []


def test_a_model_without_labels_has_no_dataset(app: Aevos) -> None:
    with pytest.raises(DatasetError, match="no labelled cases"):
        app.datasets.snapshot("intent")
    with pytest.raises(DatasetNotFoundError):
        app.datasets.get("0" * 64)
    with pytest.raises(DatasetNotFoundError, match="64"):
        app.datasets.get("../etc")


def test_a_csv_export_reads_back_as_the_rows(labelled: Aevos) -> None:
    app = labelled
    _qa_label(app, "My card has not arrived", "card_arrival")
    _qa_label(app, "PIN blocked, help", "pin_blocked", actor='reviewer:o"neil,jr#t3')
    version = app.datasets.snapshot("intent")
    text = b"".join(app.datasets.export(version.digest)).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [
        (r["case_id"], r["label"], r["source"], r["unbiased"], r["run_id"], r["actor"])
        for r in rows
    ] == [(r.case_id, r.label, r.source.value, "true", r.run_id, r.actor) for r in version.rows]
    assert [float(r["labelled_at"]) for r in rows] == [r.labelled_at for r in version.rows]
    with pytest.raises(ExportFormatError, match="unknown export format"):
        app.datasets.export(version.digest, format="xlsx")


def test_parquet_without_pyarrow_names_the_missing_extra(
    labelled: Aevos, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = labelled
    _qa_label(app, "card", "card_arrival")
    version = app.datasets.snapshot("intent")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(ExportFormatError) as caught:
        app.datasets.export(version.digest, format="parquet")
    assert caught.value.code == "export_format_unavailable"
    assert "parquet" in caught.value.message and "pyarrow" in caught.value.message


def test_parquet_export_when_pyarrow_is_installed(labelled: Aevos) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    app = labelled
    _qa_label(app, "card", "card_arrival")
    version = app.datasets.snapshot("intent")
    data = b"".join(app.datasets.export(version.digest, format="parquet"))
    table = pq.read_table(io.BytesIO(data))
    assert table.column("case_id").to_pylist() == version.case_ids()


# -- kept cases: ground truth for automated calls, text for training ---------------------------


@pytest.fixture
def kept(labelled: Aevos) -> Aevos:
    """The app with a vault key: model calls keep their (tokenised) input as cases."""
    from aevos.pii import Vault

    labelled.vault = Vault(labelled.store, Vault.decode_key(Vault.generate_key()))
    return labelled


def test_ground_truth_labels_an_automated_call_and_training_data_has_its_text(
    kept: Aevos,
) -> None:
    app = kept
    texts = ["My card still has not arrived", "I want to know the exchange rate"]
    outs = [app.workflow_named("auto").run(text, 0.0) for text in texts]
    assert [o["qa"] for o in outs] == [None, None]  # automated, nobody asked
    for out, truth in zip(outs, ["card_arrival", "exchange_rate"], strict=True):
        label = app.labels.record(out["call_id"], truth, actor=CLAIMS, unbiased=True)
        assert label.model == "intent" and label.model_version == "intent@1"
        assert label.run_id is not None and label.task_id is None
    version = app.datasets.snapshot("intent")
    assert version.info.sources == {"ground_truth": 2} and version.info.unbiased == 2
    data = app.datasets.training_data(version.digest)
    assert data.texts == tuple(texts) and data.labels == ("card_arrival", "exchange_rate")
    cases = app.cases.open_many("default", version.case_ids())
    assert data.times == tuple(cases[c].created_at for c in version.case_ids())

    exported = b"".join(app.datasets.export(version.digest, text=True)).decode()
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["label"], r["text"]) for r in rows] == list(
        zip(["card_arrival", "exchange_rate"], texts, strict=True)
    )
    # A case forgotten since (its run, or its data subject) leaves the training data.
    app.cases.forget_run(version.rows[0].run_id or "", tenant="default")
    assert app.datasets.training_data(version.digest).texts == (texts[1],)
    assert app.datasets.get(version.digest) == version  # the version itself is unchanged


def test_training_data_names_a_missing_text_field(kept: Aevos) -> None:
    app = kept
    out = app.workflow_named("auto").run("card not here", 0.0)
    app.labels.record(out["call_id"], "card_arrival", actor=CLAIMS)
    version = app.datasets.snapshot("intent")
    with pytest.raises(DatasetError, match="no text field 'body'"):
        app.datasets.training_data(version.digest, text_field="body")


def test_a_qa_task_keeps_its_case_like_any_task(kept: Aevos) -> None:
    app = kept
    out = app.workflow_named("auto").run("My card has not arrived", 1.0)
    case = app.cases.get("task:" + out["qa"], tenant="default")
    assert case.kind == "task" and case.input == {"text": "My card has not arrived"}
    assert app.cases.get(out["call_id"], tenant="default").kind == "model_call"
