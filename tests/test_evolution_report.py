"""The evolution report (``app.reports.evolution``, ``GET /v1/evolution/report``, ``aevos
evolution report``) on both backends, against a direct count.

A real support triage: TF-IDF models trained on banking77 (4 intents) decide tickets of
test.csv in a workflow; below a confidence threshold a reviewer decides (a review task),
above it the decision is automated and, for every other ticket, sampled for QA. Version 2
first shadows version 1 (its calls are not cases), then is promoted. QA answers and a late
ground truth label the sampled cases. The report's figures must equal what the audit log,
the tasks and the labels say when counted one by one.
"""

from __future__ import annotations

import csv
import functools
import json
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aevos import Aevos, AuditEvent, Field, TaskStatus, WorkflowContext
from aevos.cli import cli
from aevos.errors import ModelNotFoundError, ReportInputError
from aevos.public_data import data_file
from aevos.records.label import same_label
from aevos.server import create_app
from aevos.telemetry.report import EvolutionReport, wilson

DATA = data_file("banking77")
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked"]
FORM = [Field.choice("intent", INTENTS)]
REVIEWER = "reviewer:rita#t1"
TENANT = "acme"


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
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


@dataclass(frozen=True)
class Ticket:
    text: str
    intent: str  # the truth, as test.csv labels it
    threshold: float  # the workflow automates at or above this confidence
    share: float  # the QA sampling share if automated


@dataclass(frozen=True)
class Trained:
    v1: bytes
    v2: bytes
    phase1: list[Ticket]  # decided by version 1
    phase2: list[Ticket]  # by version 2, once promoted


def _phase(model: Any, rows: list[tuple[str, str]]) -> list[Ticket]:
    """The rows as tickets: about half above a threshold between two of the model's
    confidences (so none equals it); the first three automated ones sampled for QA."""
    confidences = [float(c) for c in model.predict_proba([t for t, _ in rows]).max(axis=1)]
    ordered = sorted(confidences)
    middle = len(ordered) // 2
    threshold = (ordered[middle - 1] + ordered[middle]) / 2
    assert ordered[middle - 1] < threshold < ordered[middle]
    tickets, sampled = [], 0
    for (text, intent), confidence in zip(rows, confidences, strict=True):
        share = 0.0
        if confidence >= threshold and sampled < 3:
            share, sampled = 1.0, sampled + 1
        tickets.append(Ticket(text, intent, threshold, share))
    return tickets


@pytest.fixture(scope="module")
def trained() -> Trained:
    return train_versions()


@functools.cache
def train_versions() -> Trained:
    """Versions 1 and 2 and their tickets, trained once per session: the same bytes every
    time, and tests/test_console_evolution.py tells the same story."""
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    train = _rows("train.csv")

    def fit(per_intent: int) -> Any:
        seen: dict[str, int] = {}
        texts, labels = [], []
        for text, intent in train:
            if seen.get(intent, 0) < per_intent:
                seen[intent] = seen.get(intent, 0) + 1
                texts.append(text)
                labels.append(intent)
        return train_text_classifier(texts, labels)

    small, large = fit(10), fit(60)
    tickets = _rows("test.csv")[::7][:20]
    return Trained(
        dump_sklearn(small),
        dump_sklearn(large),
        _phase(small, tickets[:10]),
        _phase(large, tickets[10:]),
    )


@dataclass
class Story:
    app: Aevos
    started: float
    finished: float
    truth: dict[str, str]  # call id -> true intent


def _triage(app: Aevos, tickets: list[Ticket]) -> dict[str, str]:
    """Run the tickets; a reviewer answers each review with the true intent."""
    triage = app.workflow_named("triage").options(tenant=TENANT)
    handles = {triage.start(t.text, t.threshold, t.share): t.intent for t in tickets}
    truth: dict[str, str] = {}
    pending = dict(handles)
    deadline = time.monotonic() + 60
    while pending:
        assert time.monotonic() < deadline, "the triage runs did not finish"
        for task in app.tasks.list(tenant=TENANT, status=[TaskStatus.OPEN]):
            if task.purpose == "review" and task.run_id in {h.run_id for h in pending}:
                intent = next(i for h, i in pending.items() if h.run_id == task.run_id)
                app.tasks.submit(task.task_id, {"intent": intent}, actor=REVIEWER, tenant=TENANT)
        for handle in list(pending):
            if app.get_run(handle.run_id).status.terminal:
                truth[str(handle.result(timeout=5)["call_id"])] = pending.pop(handle)
        time.sleep(0.02)
    return truth


def tell(app: Aevos, trained: Trained) -> Story:
    started = time.time()
    app.models.register("intent", trained.v1, flavor="sklearn", tenant=TENANT, aliases=["champion"])
    app.models.register("intent", trained.v2, flavor="sklearn", tenant=TENANT)

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, text: str, threshold: float, share: float) -> dict[str, Any]:
        prediction = ctx.predict("intent", text)
        if (prediction.confidence or 0.0) < threshold:
            ctx.ask_human("Which intent?", form=FORM, case={"text": text}, prediction=prediction)
            return {"call_id": prediction.call_id}
        ctx.qa_sample(prediction, share=share, form=FORM, case={"text": text})
        return {"call_id": prediction.call_id}

    app.gateway.route("intent", shadow=2)  # version 2 shadows the champion: not cases
    truth: dict[str, str] = {}
    worker = app.worker(concurrency=4).start()
    try:
        truth.update(_triage(app, trained.phase1))
        app.models.promote("intent", 2, tenant=TENANT, by="operator:olga#t2")
        app.gateway.route("intent")  # no shadow now
        app.gateway.invalidate("intent")  # the new champion answers at once
        truth.update(_triage(app, trained.phase2))
    finally:
        worker.stop()
    app.gateway.flush()

    # QA answers: the true intent; then late ground truth contradicts one of them.
    qa = [
        t
        for t in app.tasks.list(tenant=TENANT, status=[TaskStatus.OPEN], limit=1000)
        if t.purpose == "qa"
    ]
    assert len(qa) == 6
    for task in qa:
        assert task.call_id is not None
        app.tasks.submit(
            task.task_id, {"intent": truth[task.call_id]}, actor=REVIEWER, tenant=TENANT
        )
    overruled = qa[0].call_id
    assert overruled is not None
    wrong = next(i for i in INTENTS if i != truth[overruled])
    app.labels.record(overruled, wrong, tenant=TENANT, actor="service:crm#t3")

    # A retraining on these few labels, on a worker: its outcome is a marker, whichever.
    app.retraining.configure(
        "intent", recipe="tfidf-logreg", auto_promote=False, tenant=TENANT, actor="operator:olga"
    )
    worker = app.worker().start()
    try:
        retraining = app.retraining.start("intent", tenant=TENANT, actor="operator:olga")
        wait_for(lambda: app.get_run(retraining.run_id).status.terminal, timeout=120)
    finally:
        worker.stop()

    # What the rollout controller and the monitors record (contracts12.md), for this model
    # and for another one, which a report of "intent" must not show.
    for model in ("intent", "other"):
        app.audit.append(
            AuditEvent(
                action="monitor.alerted",
                actor="system:monitors",
                tenant=TENANT,
                subject=f"model:{model}@2",
                data={
                    "alert_id": "a1",
                    "model": model,
                    "version": 2,
                    "monitor": "prediction_drift",
                    "figures": {"distance": 0.31},
                    "window": [started, time.time()],
                },
            )
        )
        app.audit.append(
            AuditEvent(
                action="rollout.rolled_back",
                actor="system:rollouts",
                tenant=TENANT,
                subject="rollout:r1",
                data={
                    "rollout_id": "r1",
                    "model": model,
                    "version": 3,
                    "champion": 2,
                    "from_step": 1,
                    "to_step": None,
                    "step_name": "canary 5%",
                    "reason": "precision 0.71 below 0.90",
                    "analysis": None,
                },
            )
        )
    return Story(app, started, time.time() + 0.001, truth)


@pytest.fixture
def story(app: Aevos, trained: Trained) -> Story:
    return tell(app, trained)


# -- the direct count --------------------------------------------------------------------------


def direct(app: Aevos, since: float, until: float, buckets: int) -> list[dict[str, Any]]:
    """Each bucket's figures counted record by record through the public APIs."""
    width = (until - since) / buckets
    starts = [since + i * width for i in range(buckets)]
    records = app.audit.query(TENANT, action="model.called", limit=10_000)
    tasks = app.tasks.list(tenant=TENANT, status=list(TaskStatus), limit=10_000)
    cells = [
        {"cases": 0, "automated": 0, "reviews": 0, "qa": 0, "n": 0, "correct": 0, "cost": 0.0}
        for _ in starts
    ]
    for r in records:
        if r.data["model"] != "intent" or not since <= r.at < until:
            continue
        cell = cells[bisect_right(starts, r.at) - 1]
        cell["cost"] += r.data["cost"] or 0.0
        if r.data["route"] not in ("primary", "canary"):
            continue
        mine = [t for t in tasks if t.call_id == r.data["call_id"]]
        reviews = sum(t.purpose == "review" for t in mine)
        qa = sum(t.purpose == "qa" for t in mine)
        cell["cases"] += 1
        cell["automated"] += reviews == 0
        cell["reviews"] += reviews
        cell["qa"] += qa
        if qa and not reviews:
            label = app.labels.effective(r.data["call_id"], tenant=TENANT)
            if label is not None:
                cell["n"] += 1
                cell["correct"] += same_label(label.label, r.data["label"])
    return cells


def assert_matches(report: EvolutionReport, cells: list[dict[str, Any]]) -> None:
    assert len(report.buckets) == len(cells)
    for b, c in zip(report.buckets, cells, strict=True):
        assert (b.cases, b.automated, b.reviews, b.qa) == (
            c["cases"],
            c["automated"],
            c["reviews"],
            c["qa"],
        )
        assert (b.precision_n, b.correct) == (c["n"], c["correct"])
        assert b.automation_rate == (c["automated"] / c["cases"] if c["cases"] else None)
        expected = 100 * (c["reviews"] + c["qa"]) / c["cases"] if c["cases"] else None
        assert b.reviews_per_100 == pytest.approx(expected)
        assert b.precision == (c["correct"] / c["n"] if c["n"] else None)
        assert (b.precision_low, b.precision_high) == wilson(c["correct"], c["n"])
        assert b.cost == pytest.approx(c["cost"])


# -- the report --------------------------------------------------------------------------------


def test_the_report_equals_a_direct_count_and_marks_what_changed(story: Story) -> None:
    app = story.app
    for buckets in (1, 4, 13):
        report = app.reports.evolution(
            "intent", tenant=TENANT, since=story.started, until=story.finished, buckets=buckets
        )
        assert_matches(report, direct(app, story.started, story.finished, buckets))
    totals = report.totals
    # 20 tickets, each one case: version 2's shadow calls are not cases.
    assert totals["cases"] == 20
    assert 0 < totals["automated"] < 20 and totals["reviews"] == 20 - totals["automated"]
    assert totals["qa"] == 6 and totals["precision_n"] == 6
    assert totals["precision"] is not None and totals["precision"] < 1.0  # the overruled one
    assert totals["cost_per_decision"] == 0.0  # local models cost nothing
    shadows = [
        r for r in app.audit.query(TENANT, action="model.called") if r.data["route"] == "shadow"
    ]
    assert len(shadows) == 10  # version 2 shadowed phase 1

    (retrained,) = app.retraining.runs("intent", tenant=TENANT)
    outcome = f"retraining.{retrained.status.value}"
    assert outcome in ("retraining.succeeded", "retraining.failed")
    kinds = [(m.kind, m.version) for m in report.markers]
    assert kinds == [
        ("model.alias_moved", 1),  # version 1 became the champion when registered
        ("model.promoted", 2),
        (outcome, retrained.candidate),  # not retraining.configured
        ("monitor.alerted", 2),
        ("rollout.rolled_back", 3),
    ]
    promoted = report.markers[1]
    assert promoted.detail == "champion v1 → v2" and promoted.model == "intent"
    assert report.markers[2].detail.startswith("trigger manual")
    assert report.markers[4].detail == "step canary 5%: precision 0.71 below 0.90"
    # The promotion falls between the two phases' cases on the same time axis.
    calls = sorted(
        r.at for r in app.audit.query(TENANT, action="model.called") if r.data["route"] == "primary"
    )
    assert calls[9] < promoted.at < calls[10]
    assert report.drift == ()  # no monitor series on this branch: alerts are markers

    data = json.loads(json.dumps(report.to_dict()))
    assert data["model"] == "intent" and len(data["buckets"]) == 13
    assert set(data["buckets"][0]) >= {
        "start",
        "end",
        "cases",
        "automated",
        "automation_rate",
        "reviews",
        "reviews_per_100",
        "qa",
        "precision",
        "precision_low",
        "precision_high",
        "cost_per_decision",
    }
    assert data["markers"][1] == {
        "at": promoted.at,
        "kind": "model.promoted",
        "model": "intent",
        "version": 2,
        "detail": "champion v1 → v2",
    }
    assert data["totals"]["cases"] == 20

    # By default the window starts at the first case or marker and ends now.
    default = app.reports.evolution("intent", tenant=TENANT)
    assert default.totals["cases"] == 20 and len(default.buckets) == 20
    assert default.since <= report.markers[0].at and default.until >= story.finished - 0.001
    # Every model of the tenant: the other model's markers too.
    every = app.reports.evolution(tenant=TENANT, since=story.started, until=story.finished)
    assert every.model is None and every.totals["cases"] == 20
    assert [m.model for m in every.markers].count("other") == 2


def test_an_empty_tenant_has_empty_buckets_and_bad_parameters_are_refused(app: Aevos) -> None:
    report = app.reports.evolution(tenant="nobody", since=1000.0, until=2000.0, buckets=5)
    assert [b.cases for b in report.buckets] == [0] * 5
    assert all(b.automation_rate is None and b.precision is None for b in report.buckets)
    assert report.markers == () and report.totals["cases"] == 0
    assert app.reports.evolution(tenant="nobody").totals["cases"] == 0  # default window

    with pytest.raises(ModelNotFoundError, match="no model 'ghost'"):
        app.reports.evolution("ghost", tenant="nobody")
    for kwargs, field in (
        ({"buckets": 0}, "buckets"),
        ({"buckets": 201}, "buckets"),
        ({"buckets": True}, "buckets"),
        ({"since": 2000.0, "until": 1000.0}, "since"),
        ({"since": 0.0, "until": 367 * 86_400.0}, "since"),
        ({"since": 1000.0}, "since"),  # until defaults to now: far more than 366 days
        ({"since": time.time() + 3600}, "since"),  # after now
        ({"since": float("nan")}, "since"),
        ({"until": -1.0}, "until"),
        ({"model": ""}, "model"),
    ):
        with pytest.raises(ReportInputError) as raised:
            app.reports.evolution(tenant="nobody", **kwargs)
        assert raised.value.field == field


# -- HTTP --------------------------------------------------------------------------------------


def _bearer(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
def client(story: Story) -> Iterator[TestClient]:
    with TestClient(create_app(story.app), raise_server_exceptions=False) as served:
        yield served


def test_the_http_report_is_authenticated_permission_checked_tenant_scoped_and_bounded(
    story: Story, client: TestClient
) -> None:
    app = story.app
    window = {"since": story.started, "until": story.finished, "buckets": 4}
    got = client.get(
        "/v1/evolution/report",
        params={"model": "intent", **window},
        headers=_bearer(app, TENANT, "reviewer"),
    )
    assert got.status_code == 200, got.text
    body = got.json()
    expected = app.reports.evolution(
        "intent", tenant=TENANT, since=story.started, until=story.finished, buckets=4
    )
    assert body == json.loads(json.dumps(expected.to_dict()))

    assert client.get("/v1/evolution/report").status_code == 401
    bad = {"Authorization": "Bearer aevos_0123456789ab_" + "x" * 43}
    assert client.get("/v1/evolution/report", headers=bad).status_code == 401
    # A service token (a machine's) reads models but not people's tasks.
    denied = client.get("/v1/evolution/report", headers=_bearer(app, TENANT, "service"))
    assert denied.status_code == 403, denied.text
    assert "needs tasks:read" in denied.json()["error"]["message"]
    refusals = [r for r in app.audit.query(TENANT) if r.action == "authz.denied"]
    assert refusals[-1].data["attempted"] == "read the evolution report"

    # Another tenant sees none of acme's cases or markers, and not its model.
    globex = _bearer(app, "globex", "operator")
    theirs = client.get("/v1/evolution/report", params=window, headers=globex).json()
    assert theirs["totals"]["cases"] == 0 and theirs["markers"] == []
    missing = client.get("/v1/evolution/report", params={"model": "intent"}, headers=globex)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"

    ops = _bearer(app, TENANT, "operator")
    for params in (
        {"buckets": 0},
        {"buckets": 201},
        {"since": 2000, "until": 1000},
        {"since": 0, "until": 367 * 86_400},
        {"since": -5},
        {"model": "x" * 201},
    ):
        refused = client.get("/v1/evolution/report", params=params, headers=ops)
        assert refused.status_code == 422, (params, refused.text)


# -- CLI ---------------------------------------------------------------------------------------


def test_the_cli_prints_the_report_as_tables_and_json_and_refuses_bad_input(
    story: Story, database_url: str
) -> None:
    runner = CliRunner()

    def aevos(*args: str) -> Any:
        return runner.invoke(cli, ["--database-url", database_url, "evolution", "report", *args])

    window = ["--since", str(story.started), "--until", str(story.finished)]
    shown = aevos("--model", "intent", "--tenant", TENANT, "--buckets", "4", *window)
    assert shown.exit_code == 0, shown.output
    for text in (
        "Trends",
        "automation rate",
        "Buckets",
        "Markers",
        "model.promoted",
        "champion v1 → v2",
    ):
        assert text in shown.output
    printed = aevos("--model", "intent", "--tenant", TENANT, "--buckets", "4", "--json", *window)
    assert printed.exit_code == 0, printed.output
    expected = story.app.reports.evolution(
        "intent", tenant=TENANT, since=story.started, until=story.finished, buckets=4
    )
    assert json.loads(printed.stdout) == json.loads(json.dumps(expected.to_dict()))

    for args, message in (
        (["--buckets", "0"], "buckets: must be a whole number from 1 to 200"),
        (["--since", "yesterday"], "--since must be epoch seconds, an ISO 8601 time"),
        (["--since", "1d", "--until", "2d"], "since: must be before until"),
        (["--model", "ghost", "--tenant", TENANT], "no model 'ghost'"),
    ):
        refused = aevos(*args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    span = aevos("--tenant", TENANT, "--since", "2026-01-01T00:00:00", "--until", "2026-01-02")
    assert span.exit_code == 0 and "no version changes" in span.output
