"""Metrics: the Prometheus exposition and the console's dashboard, from known inputs.

Runs come from real workflows (their timestamps then set to known values); human tasks and
feedback rows are inserted directly; model calls are real gateway calls, or call records
appended under a fixed clock so that they land in known buckets.
"""

from __future__ import annotations

import contextlib
import json
import math
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aevos import Aevos, StepContext, WorkflowContext
from aevos.errors import DefinitionError, ModelInputError
from aevos.models.recorder import CallRecord
from aevos.server import create_app
from aevos.storage.schema import feedback, runs, tasks
from aevos.telemetry.metrics import dashboard, exposition, model_metrics, percentile, psi

T0 = 2_000_000_000.0  # a fixed time after every real record of the test


@pytest.fixture
def app(database_url: str) -> Iterator[Aevos]:
    application = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @application.step()
    def score(ctx: StepContext, amount: float) -> float:
        return min(1.0, amount / 10_000)

    @application.workflow(name="claims.intake")
    def intake(ctx: WorkflowContext, claim: dict[str, Any]) -> dict[str, Any]:
        if claim.get("fail"):
            raise ValueError("unreadable claim")
        return {"risk": score(ctx, float(claim["amount"]))}

    yield application
    application.close()


def _run(app: Aevos, tenant: str, claim: dict[str, Any]) -> str:
    """A real run of claims.intake, inline; its id."""
    key = uuid.uuid4().hex
    workflow = app.workflows["claims.intake"]
    with contextlib.suppress(ValueError):  # a failing claim fails its run
        workflow.options(tenant=tenant, idempotency_key=key).run(claim)
    (info,) = [
        r for r in app.store.list_runs(tenant=tenant, limit=1000) if r.idempotency_key == key
    ]
    return info.run_id


def _times(app: Aevos, run_id: str, created: float, finished: float) -> None:
    with app.store._tx() as conn:
        conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == run_id)
            .values(created_at=created, finished_at=finished, updated_at=finished)
        )


def _task(app: Aevos, tenant: str, run_id: str, *, queue: str, status: str) -> None:
    now = T0
    with app.store._tx() as conn:
        conn.execute(
            tasks.insert().values(
                task_id=f"{run_id}.{uuid.uuid4().hex[:6]}",
                tenant=tenant,
                run_id=run_id,
                workflow="claims.intake",
                seq=1,
                title="Check the claim",
                queue=queue,
                role="reviewer",
                status=status,
                priority=0,
                form=json.dumps({"approve": "boolean"}),
                created_at=now,
                updated_at=now,
            )
        )


def _feedback(
    app: Aevos, tenant: str, *, overridden: bool, at: float, model: str | None = "claims-router"
) -> None:
    with app.store._tx() as conn:
        conn.execute(
            feedback.insert().values(
                tenant=tenant,
                task_id=uuid.uuid4().hex,
                run_id=uuid.uuid4().hex,
                workflow="claims.intake",
                seq=1,
                model=model,
                model_version=None if model is None else f"{model}@1",
                suggestion=json.dumps({"approve": True}),
                confidence=0.7,
                decision=json.dumps({"approve": not overridden}),
                overridden=int(overridden),
                reviewer="reviewer:r#1",
                asked_at=at - 5,
                decided_at=at,
            )
        )


def _calls(
    app: Aevos,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str,
    at: float,
    model: str,
    confidences: list[float | None],
    cost: float | None = None,
) -> None:
    """Call records as the gateway writes them, appended when the clock reads ``at``."""
    monkeypatch.setattr("aevos.audit.log.time", types.SimpleNamespace(time=lambda: at))
    records = [
        CallRecord(
            call_id=uuid.uuid4().hex,
            tenant=tenant,
            actor="system:test",
            model=model,
            version=1,
            ref="champion",
            route="primary",
            outcome="ok",
            input_digest="0" * 64,
            latency_ms=12.5,
            confidence=confidence,
            label="x",
            cost=cost,
        )
        for confidence in confidences
    ]
    app.audit.append_many([record.event() for record in records])
    monkeypatch.undo()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def _scrape(app: Aevos) -> tuple[Any, Any]:
    """What ``exposition`` reads: the app's store and its running call totals."""
    return app.store, app.call_totals


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- Prometheus ------------------------------------------------------------------------------


def test_prometheus_exposition_counts_known_inputs(app: Aevos, make_app: Any) -> None:
    durations = [0.05, 2.0, 7200.0]
    for seconds in durations:
        run_id = _run(app, "acme", {"amount": 100})
        _times(app, run_id, 1000.0, 1000.0 + seconds)
    failed = _run(app, "acme", {"fail": True})
    _times(app, failed, 1000.0, 1020.0)
    app.workflow_named("claims.intake").options(tenant="acme").start(
        {"amount": 1}
    )  # enqueued: no worker runs it
    _run(app, "tenant-b", {"amount": 1})

    for queue, status in [
        ("claims", "OPEN"),
        ("claims", "OPEN"),
        ("claims", "CLAIMED"),
        ("fraud", "OPEN"),
        ("claims", "SUBMITTED"),  # decided: not open
    ]:
        _task(app, "acme", failed, queue=queue, status=status)
    _task(app, "tenant-b", failed, queue="claims", status="OPEN")
    for overridden in (True, False, False, True):
        _feedback(app, "acme", overridden=overridden, at=T0)
    _feedback(app, "acme", overridden=False, at=T0, model=None)
    _feedback(app, "tenant-b", overridden=True, at=T0)

    # Real model calls through the gateway: three answered, one refused by the signature.
    table = {
        "input": {"amount": "number"},
        "table": [{"when": {"amount": {"lt": 500}}, "label": "auto", "confidence": 0.9}],
        "default": {"label": "review", "confidence": 0.5},
    }
    app.models.register(
        "claims-router",
        json.dumps(table).encode(),
        flavor="rules",
        tenant="acme",
        aliases=["champion"],
    )
    for amount in (10, 20, 900):
        app.gateway.predict("claims-router", {"amount": amount}, tenant="acme")
    with pytest.raises(ModelInputError):
        app.gateway.predict("claims-router", {"amount": "ten"}, tenant="acme")
    app.gateway.flush()
    priced = CallRecord(
        call_id="c1",
        tenant="acme",
        actor="system:test",
        model="llm",
        version=2,
        ref="champion",
        route="fallback:0",
        outcome="ok",
        input_digest="0" * 64,
        latency_ms=1500.0,
        cost=0.25,
    )
    app.audit.append_many([priced.event(), priced.event()])

    text = exposition(*_scrape(app), "acme").decode()
    samples = _samples(text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("aevos_runs", workflow="claims.intake", status="SUCCEEDED") == 3
    assert value("aevos_runs", workflow="claims.intake", status="FAILED") == 1
    assert value("aevos_runs", workflow="claims.intake", status="ENQUEUED") == 1
    histogram = "aevos_run_duration_seconds"
    assert value(f"{histogram}_count", workflow="claims.intake") == 4
    assert value(f"{histogram}_sum", workflow="claims.intake") == pytest.approx(7222.05)
    expected_buckets = {"0.1": 1, "1.0": 1, "5.0": 2, "10.0": 2, "30.0": 3, "3600.0": 3}
    expected_buckets |= {"14400.0": 4, "+Inf": 4}
    for le, n in expected_buckets.items():
        assert value(f"{histogram}_bucket", workflow="claims.intake", le=le) == n, le
    assert value("aevos_human_tasks_open", queue="claims", status="OPEN") == 2
    assert value("aevos_human_tasks_open", queue="claims", status="CLAIMED") == 1
    assert value("aevos_human_tasks_open", queue="fraud", status="OPEN") == 1
    assert (
        "aevos_human_tasks_open",
        frozenset({("queue", "claims"), ("status", "SUBMITTED")}),
    ) not in samples
    assert value("aevos_feedback_decisions_total", model="claims-router") == 4
    assert value("aevos_feedback_overrides_total", model="claims-router") == 2
    assert value("aevos_feedback_decisions_total", model="") == 1
    primary = {"model": "claims-router", "version": "1", "route": "primary"}
    assert value("aevos_model_calls_total", **primary, outcome="ok") == 3
    assert value("aevos_model_calls_total", **primary, outcome="model_input_invalid") == 1
    llm = {"model": "llm", "version": "2", "route": "fallback:0", "outcome": "ok"}
    assert value("aevos_model_calls_total", **llm) == 2
    assert value("aevos_model_call_cost_total", **llm) == pytest.approx(0.5)
    assert value("aevos_model_call_duration_seconds_sum", **llm) == pytest.approx(3.0)
    assert value("aevos_model_call_duration_seconds_count", **llm) == 2

    # Tenant B's exposition holds only B's rows.
    other = _samples(exposition(*_scrape(app), "tenant-b").decode())
    assert (
        other[("aevos_runs", frozenset({("workflow", "claims.intake"), ("status", "SUCCEEDED")}))]
        == 1
    )
    assert (
        other[("aevos_human_tasks_open", frozenset({("queue", "claims"), ("status", "OPEN")}))] == 1
    )
    assert not [key for key in other if key[0].startswith("aevos_model_call")]
    assert not [key for key in other if ("status", "FAILED") in key[1]]

    # Another process on the same database says the same (queue ages measured at one time).
    assert exposition(*_scrape(make_app()), "acme", now=T0) == exposition(
        *_scrape(app), "acme", now=T0
    )


def test_model_call_counters_add_only_what_was_appended_and_agree_with_a_recount(
    app: Aevos, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def calls(text: str) -> dict[Any, float]:
        return {k: v for k, v in _samples(text).items() if k[0].startswith("aevos_model_calls")}

    _calls(app, monkeypatch, "acme", 1000.0, "risk", [0.9, 0.8], cost=0.5)
    first = calls(exposition(*_scrape(app), "acme").decode())
    _calls(app, monkeypatch, "acme", 1001.0, "risk", [0.7], cost=0.5)
    _calls(app, monkeypatch, "acme", 1002.0, "other", [None])
    app.audit.append_many([])  # nothing appended: nothing changes
    second = calls(exposition(*_scrape(app), "acme").decode())
    assert sum(v for (n, _), v in first.items() if n == "aevos_model_calls_total") == 2
    assert sum(v for (n, _), v in second.items() if n == "aevos_model_calls_total") == 4
    # Another process adds everything up from the start, and agrees.
    fresh = make_app()
    recount = calls(exposition(*_scrape(fresh), "acme").decode())
    assert recount.keys() == second.keys()
    assert all(math.isclose(recount[k], second[k], rel_tol=1e-9) for k in second)  # rounding
    # A log that shrank (a reset) is added up again, not subtracted from.
    app.store.truncate_all()
    _calls(app, monkeypatch, "acme", 1003.0, "risk", [0.6])
    after = calls(exposition(*_scrape(app), "acme").decode())
    assert sum(v for (n, _), v in after.items() if n == "aevos_model_calls_total") == 1


def test_metrics_endpoint(app: Aevos, monkeypatch: pytest.MonkeyPatch) -> None:
    from aevos.identity import ROLE_PERMISSIONS, Role

    _run(app, "acme", {"amount": 5})
    _run(app, "tenant-b", {"amount": 5})
    _run(app, "tenant-b", {"amount": 6})
    with TestClient(create_app(app)) as client:
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
        service = _token(app, "acme", "service")
        response = client.get("/metrics", headers=service)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = _samples(response.text)
        succeeded = (
            "aevos_runs",
            frozenset({("workflow", "claims.intake"), ("status", "SUCCEEDED")}),
        )
        assert samples[succeeded] == 1  # acme's one run, not tenant B's two
        other = _samples(client.get("/metrics", headers=_token(app, "tenant-b", "auditor")).text)
        assert other[succeeded] == 2

        # Every role reads runs today; one that could not would be refused, and audited.
        monkeypatch.setitem(ROLE_PERMISSIONS, Role.REVIEWER, frozenset())
        refused = client.get("/metrics", headers=_token(app, "acme", "reviewer"))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        denied = [r for r in app.audit.query("acme") if r.action == "authz.denied"]
        assert denied[-1].data["attempted"] == "read metrics"


# -- dashboard -------------------------------------------------------------------------------


def _dashboard_inputs(app: Aevos, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three 100 s buckets from T0, with known contents (see test_dashboard_from_known_inputs)."""
    plan = [
        (10.0, 2.0, False, False),  # bucket 0
        (50.0, 4.0, True, False),
        (120.0, 1.0, False, False),  # bucket 1
        (150.0, 3.0, True, False),
        (199.0, 10.0, True, True),  # failed
        (400.0, 1.0, False, False),  # after the window
    ]
    for offset, latency, asked, fail in plan:
        run_id = _run(app, "acme", {"fail": True} if fail else {"amount": 10})
        _times(app, run_id, T0 + offset - latency, T0 + offset)
        if asked:
            _task(app, "acme", run_id, queue="claims", status="SUBMITTED")
    app.workflow_named("claims.intake").options(tenant="acme").start(
        {"amount": 1}
    )  # never finishes
    other = _run(app, "tenant-b", {"amount": 1})
    _times(app, other, T0 + 5, T0 + 20)

    for offset, overridden in [(30, True), (60, False), (110, True), (130, True), (140, True)]:
        _feedback(app, "acme", overridden=overridden, at=T0 + offset)
    _feedback(app, "acme", overridden=False, at=T0 + 160)
    _feedback(app, "acme", overridden=True, at=T0 + 300)  # until is exclusive
    _feedback(app, "tenant-b", overridden=True, at=T0 + 30)

    _calls(app, monkeypatch, "acme", T0 + 20, "router", [0.05] * 5 + [0.95] * 5, cost=0.1)
    _calls(app, monkeypatch, "tenant-b", T0 + 21, "router", [0.5] * 7, cost=5.0)
    _calls(app, monkeypatch, "acme", T0 + 110, "router", [0.95] * 10, cost=0.2)
    _calls(app, monkeypatch, "acme", T0 + 111, "ocr", [0.55] * 4)
    _calls(app, monkeypatch, "acme", T0 + 112, "ocr", [None])  # an error: no confidence
    _calls(app, monkeypatch, "acme", T0 + 250, "ocr", [0.15] * 4)


def test_dashboard_from_known_inputs(app: Aevos, monkeypatch: pytest.MonkeyPatch) -> None:
    _dashboard_inputs(app, monkeypatch)
    board = dashboard(app.store, "acme", since=T0, until=T0 + 300, buckets=3)
    assert board.bucket_seconds == 100
    first, second, third = board.buckets
    assert [(b.start, b.end) for b in board.buckets] == [
        (T0, T0 + 100),
        (T0 + 100, T0 + 200),
        (T0 + 200, T0 + 300),
    ]
    assert [b.throughput for b in board.buckets] == [2, 3, 0]
    # Linear interpolation between ranks: [2, 4] and [1, 3, 10] seconds.
    assert (first.latency_p50, first.latency_p95, first.latency_p99) == pytest.approx(
        (3.0, 3.9, 3.98)
    )
    assert (second.latency_p50, second.latency_p95, second.latency_p99) == pytest.approx(
        (3.0, 9.3, 9.86)
    )
    assert third.latency_p50 is None and third.automation_rate is None
    assert [b.automated for b in board.buckets] == [1, 1, 0]
    assert first.automation_rate == 0.5 and second.automation_rate == pytest.approx(1 / 3)
    assert [(b.feedback, b.overrides) for b in board.buckets] == [(2, 1), (4, 3), (0, 0)]
    assert first.override_rate == 0.5 and second.override_rate == 0.75
    assert third.override_rate is None
    assert [b.model_calls for b in board.buckets] == [10, 15, 4]
    assert [b.cost for b in board.buckets] == pytest.approx([1.0, 2.0, 0.0])
    assert first.cost_per_decision == pytest.approx(0.5)
    assert second.cost_per_decision == pytest.approx(2.0 / 3)
    assert third.cost_per_decision is None

    # Drift: the router against bucket 0, the OCR model against bucket 1 (its first calls).
    assert board.drift_reference == {"ocr": 1, "router": 0}
    floor = 1e-4
    router_shift = (floor - 0.5) * math.log(floor / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    ocr_shift = 2 * (1 - floor) * math.log(1 / floor)
    assert first.drift == {"router": 0.0, "ocr": None}  # every model in every bucket
    assert second.drift["router"] == pytest.approx(router_shift)
    assert second.drift["ocr"] == 0.0
    assert third.drift == {"router": None, "ocr": pytest.approx(ocr_shift)}

    # One bucket over the same window sums the three.
    (whole,) = dashboard(app.store, "acme", since=T0, until=T0 + 300, buckets=1).buckets
    assert (whole.throughput, whole.automated, whole.feedback, whole.overrides) == (5, 2, 6, 4)
    assert whole.latency_p50 == 3.0 and whole.cost == pytest.approx(3.0)
    assert whole.drift == {"router": 0.0, "ocr": 0.0}

    # Tenant B sees only its own rows.
    (b_first, b_second, _) = dashboard(
        app.store, "tenant-b", since=T0, until=T0 + 300, buckets=3
    ).buckets
    assert (b_first.throughput, b_first.latency_p50, b_first.feedback) == (1, 15.0, 1)
    assert (b_first.model_calls, b_first.cost, b_first.cost_per_decision) == (7, 35.0, 35.0)
    assert b_second.throughput == 0 and b_second.model_calls == 0


def test_dashboard_endpoint(app: Aevos, monkeypatch: pytest.MonkeyPatch) -> None:
    _dashboard_inputs(app, monkeypatch)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        params = {"since": T0, "until": T0 + 300, "buckets": 3}
        assert client.get("/v1/metrics/dashboard", params=params).status_code == 401
        response = client.get(
            "/v1/metrics/dashboard", params=params, headers=_token(app, "acme", "auditor")
        )
        assert response.status_code == 200, response.text
        board = response.json()
        assert (board["tenant"], board["bucket_seconds"]) == ("acme", 100.0)
        assert [b["throughput"] for b in board["buckets"]] == [2, 3, 0]
        assert [b["override_rate"] for b in board["buckets"]] == [0.5, 0.75, None]
        assert board["buckets"][1]["drift"]["ocr"] == 0.0
        assert board["drift_reference"] == {"ocr": 1, "router": 0}
        other = client.get(
            "/v1/metrics/dashboard", params=params, headers=_token(app, "tenant-b", "operator")
        ).json()
        assert other["tenant"] == "tenant-b"
        assert [b["throughput"] for b in other["buckets"]] == [1, 0, 0]
        assert other["drift_reference"] == {"router": 0}

        ops = _token(app, "acme", "operator")
        for bad, field in [
            ({"since": T0, "until": T0}, "query.since"),
            ({"since": T0 + 10, "until": T0}, "query.since"),
            ({"buckets": 0}, "query.buckets"),
            ({"buckets": 10_000}, "query.buckets"),
            ({"since": "yesterday"}, "query.since"),
        ]:
            refused = client.get("/v1/metrics/dashboard", params=bad, headers=ops)
            assert refused.status_code == 422, bad
            assert [f["field"] for f in refused.json()["error"]["fields"]] == [field]
        # The default: the last day in 24 buckets.
        default = client.get("/v1/metrics/dashboard", headers=ops).json()
        assert len(default["buckets"]) == 24
        assert default["bucket_seconds"] == pytest.approx(3600.0)


def test_percentile_and_psi() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0
    assert psi([3, 1], [3, 1]) == 0.0
    assert psi([30, 10], [3, 1]) == 0.0  # proportions, not counts
    expected = (0.5 - 0.75) * math.log(0.5 / 0.75) + (0.5 - 0.25) * math.log(0.5 / 0.25)
    assert psi([3, 1], [1, 1]) == pytest.approx(expected)
    assert psi([1, 1], [3, 1]) == pytest.approx(expected)  # symmetric
    with pytest.raises(DefinitionError):
        psi([1, 1], [1])
    with pytest.raises(DefinitionError):
        psi([0, 0], [1, 1])


def test_dashboard_refuses_bad_windows(app: Aevos) -> None:
    with pytest.raises(DefinitionError):
        dashboard(app.store, "acme", since=T0, until=T0, buckets=3)
    with pytest.raises(DefinitionError):
        dashboard(app.store, "acme", since=T0, until=T0 + 1, buckets=0)
    empty = dashboard(app.store, "acme", since=T0, until=T0 + 60, buckets=2)
    assert [b.throughput for b in empty.buckets] == [0, 0]
    assert empty.drift_reference == {} and all(b.drift == {} for b in empty.buckets)


def test_model_metrics_per_version_from_known_inputs(
    app: Aevos, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = 1_800_000_000.0
    _calls(app, monkeypatch, "acme", start + 10, "claims-router", [0.2, 0.4, 0.9])
    _calls(app, monkeypatch, "acme", start + 3610, "claims-router", [0.6])
    _calls(app, monkeypatch, "globex", start + 10, "claims-router", [0.1])  # another tenant
    _feedback(app, "acme", overridden=True, at=start + 20)
    _feedback(app, "acme", overridden=False, at=start + 30)
    _feedback(app, "acme", overridden=False, at=start + 3620)

    live = model_metrics(
        app.store, "acme", "claims-router", since=start, until=start + 7200, buckets=2
    )
    assert list(live.versions) == ["claims-router@1"]
    first, second = live.versions["claims-router@1"]
    assert (first.calls, first.errors, first.error_rate) == (3, 0, 0.0)
    assert first.mean_confidence == pytest.approx(0.5)
    assert first.latency_p50_ms == first.latency_p95_ms == 12.5
    assert (first.decisions, first.overrides, first.override_rate) == (2, 1, 0.5)
    assert (second.calls, second.decisions, second.override_rate) == (1, 1, 0.0)
    assert second.mean_confidence == pytest.approx(0.6)

    table = {"input": {"amount": "number"}, "table": [], "default": {"label": "review"}}
    app.models.register("claims-router", json.dumps(table).encode(), flavor="rules", tenant="acme")
    client = TestClient(create_app(app), raise_server_exceptions=False)
    ops = _token(app, "acme", "operator")
    body = client.get(
        "/v1/models/claims-router/metrics",
        params={"since": start, "until": start + 7200, "buckets": 2},
        headers=ops,
    ).json()
    assert body["versions"]["claims-router@1"][0]["calls"] == 3
    assert body["versions"]["claims-router@1"][0]["override_rate"] == 0.5
    # Another tenant has no such model: 404, nothing of acme's shown.
    other = client.get(
        "/v1/models/claims-router/metrics", headers=_token(app, "globex", "operator")
    )
    assert other.status_code == 404
    assert client.get("/v1/models/claims-router/metrics").status_code == 401
    bad = client.get(
        "/v1/models/claims-router/metrics", params={"since": start, "until": start}, headers=ops
    )
    assert bad.status_code == 422
