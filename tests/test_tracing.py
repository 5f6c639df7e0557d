"""OpenTelemetry tracing: one trace per run, checked span by span (both backends).

A claims workflow runs a step, calls a real rules model through the gateway, asks a policy,
and (the model not being confident enough) asks a person; the run parks on one worker and
is resumed by another app's worker after the decision. Every span is read back from an
in-memory exporter; once, the spans go over OTLP/HTTP to a receiver on loopback that
decodes the protobuf ``ExportTraceServiceRequest``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aevos import Aevos, Field, RunStatus, StepContext, WorkflowContext
from aevos.events.webhook import sign
from aevos.kernel.tracing import trace_headers
from aevos.pii import DataPolicy
from aevos.server import create_app
from aevos.telemetry.tracing import TracingConfig, extract_context, inject_context

EMAIL = "jane.doe@example.com"
IBAN = "DE89370400440532013000"
SECRET = "whsec_tracing-3c5e7a9b1d2f4e6a8c0b"
# The sender's trace: what an upstream service puts on its webhook call.
SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"

RULES = b"""
input:
  amount: number
  severity: {type: string, enum: [Minor Damage, Major Damage]}
table:
  - id: small
    when: {amount: {lt: 10000}}
    label: auto
    confidence: 0.95
default: {label: adjuster, confidence: 0.6}
"""

POLICY = """
policy: auto-route
version: 4
kind: action
input:
  prediction.label: string
  prediction.confidence: number
rules:
  - name: confident
    when: prediction.confidence >= 0.9
    decision: allow
    reason: the model is confident
default:
  decision: review
  reason: a person routes it
"""

FORM = [Field.choice("route", ["auto", "adjuster", "siu"], label="Route")]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "auto-route.yaml").write_text(POLICY)
    return folder


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def build(
    database_url: str,
    policies: Path,
    tracing: TracingConfig | bool | None,
    *,
    trace_payloads: bool = False,
    register: bool = True,
) -> Aevos:
    app = Aevos(
        database_url,
        lease_seconds=2.0,
        park_after=0.3,
        poll_interval=0.02,
        policies=policies,
        tracing=tracing,
        code_version="v1",
    )
    if register:
        app.models.register("router", RULES, flavor="rules", aliases=["champion"])

    @app.step(name="check")
    def check(ctx: StepContext, claim: dict[str, Any]) -> dict[str, Any]:
        # Returns the claimant's contact: personal data a trace must never carry raw.
        return {"contact": f"{claim['email']} / {claim['iban']}", "checked": True}

    # "keep": the workflow sees the raw input, so only the tracer's redaction stands
    # between it and the spans.
    @app.workflow(name="claims", data_policy=DataPolicy("keep", trace_payloads=trace_payloads))
    def claims(ctx: WorkflowContext, claim: dict[str, Any]) -> dict[str, Any]:
        check(ctx, claim)
        prediction = ctx.predict(
            "router", {"amount": claim["amount"], "severity": claim["severity"]}
        )
        decision = ctx.decide(
            "auto-route",
            prediction={
                "label": prediction.label,
                "confidence": prediction.prediction.confidence,
            },
        )
        if decision.allowed:
            return {"route": prediction.label, "by": "model"}
        answer = ctx.ask_human(
            "Route this claim",
            form=FORM,
            case={"amount": claim["amount"]},
            prediction=prediction,
            queue="claims",
        )
        return {"route": answer["route"], "by": answer.reviewer}

    return app


def claim(amount: float) -> dict[str, Any]:
    return {"amount": amount, "severity": "Major Damage", "email": EMAIL, "iban": IBAN}


def config(exporter: InMemorySpanExporter) -> TracingConfig:
    return TracingConfig(processors=[SimpleSpanProcessor(exporter)])


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = by_name(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def no_raw_pii(spans: Sequence[ReadableSpan]) -> None:
    for span in spans:
        for key, value in (span.attributes or {}).items():
            assert EMAIL not in str(value) and IBAN not in str(value), (span.name, key)
        for event in span.events:
            assert EMAIL not in str(event.attributes) and IBAN not in str(event.attributes)


# -- a run, span by span ----------------------------------------------------------------------


def test_a_parked_run_resumed_by_another_worker_is_one_trace_span_by_span(
    database_url: str, policies: Path, exporter: InMemorySpanExporter
) -> None:
    first = build(database_url, policies, config(exporter))
    second = build(database_url, policies, config(exporter), register=False)
    try:
        handle = first.start("claims", claim(42_000.0))
        worker = first.worker(concurrency=1).start()
        try:
            wait_for(lambda: bool(first.tasks.list(run_id=handle.run_id)))
            wait_for(lambda: handle.status() is RunStatus.WAITING)  # parked
        finally:
            worker.stop()
        (task,) = first.tasks.list(run_id=handle.run_id)
        first.tasks.submit(task.task_id, {"route": "siu"}, actor="reviewer:alice")
        # The other app (another worker, as on another host) resumes the run.
        other = second.worker(concurrency=1).start()
        try:
            assert handle.result(timeout=20) == {"route": "siu", "by": "reviewer:alice"}
        finally:
            other.stop()
    finally:
        first.close()
        second.close()

    spans = exporter.get_finished_spans()
    run_id = handle.run_id
    # One trace: every span of the run shares the start span's trace id.
    start = one(spans, "aevos.run.start claims")
    assert {trace_id(s) for s in spans} == {trace_id(start)}
    assert start.parent is None and start.kind is SpanKind.PRODUCER
    assert start.attributes is not None
    assert start.attributes["aevos.run.id"] == run_id
    assert start.attributes["aevos.run.created"] is True

    executions = sorted(by_name(spans, "aevos.run claims"), key=lambda s: s.start_time or 0)
    assert len(executions) == 2  # parked once, resumed once
    for number, execution in enumerate(executions, start=1):
        assert parent_of(execution) == span_id(start)
        assert execution.attributes is not None
        assert execution.attributes["aevos.run.id"] == run_id
        assert execution.attributes["aevos.run.execution"] == number
        assert execution.attributes["aevos.code_version"] == "v1"
    parked, resumed = executions
    assert parked.attributes is not None and parked.attributes["aevos.run.suspended"] is True
    assert resumed.attributes is not None
    assert resumed.attributes["aevos.run.status"] == "SUCCEEDED"

    step = one(spans, "aevos.step check")
    assert parent_of(step) == span_id(parked)
    assert step.attributes == {
        "aevos.run.id": run_id,
        "aevos.workflow": "claims",
        "aevos.step.name": "check",
        "aevos.step.seq": 0,
    }  # no payload: the data policy does not let it into traces

    predict = one(spans, "aevos.predict router")
    assert parent_of(predict) == span_id(parked)
    assert predict.attributes is not None
    assert predict.attributes["aevos.model.version"] == 1
    assert predict.attributes["aevos.step.seq"] == 1
    assert predict.attributes["aevos.model.route"] == "primary"
    assert "aevos.model.input" not in predict.attributes
    call = one(spans, "predict router")
    assert parent_of(call) == span_id(predict) and call.kind is SpanKind.CLIENT
    assert call.attributes is not None
    assert {k: v for k, v in call.attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "predict",
        "gen_ai.provider.name": "rules",
        "gen_ai.request.model": "router",
        "gen_ai.response.model": "router@1",
    }  # a rules table counts no tokens: no usage attributes
    assert call.attributes["aevos.model.outcome"] == "ok"
    assert call.attributes["aevos.model.confidence"] == pytest.approx(0.6)

    decide = one(spans, "aevos.decide auto-route")
    assert parent_of(decide) == span_id(parked)
    assert decide.attributes is not None
    assert decide.attributes["aevos.policy.version"] == 4
    assert decide.attributes["aevos.policy.result"] == "review"
    assert decide.attributes["aevos.policy.rule"] == "default"
    assert decide.attributes["aevos.step.seq"] == 2

    asked = one(spans, "aevos.ask_human claims")
    assert parent_of(asked) == span_id(parked)
    assert asked.attributes is not None
    assert asked.attributes["aevos.task.id"] == task.task_id
    assert asked.attributes["aevos.model.version"] == "router@1"
    decided = one(spans, "aevos.human_decision")
    assert parent_of(decided) == span_id(resumed)
    assert decided.attributes is not None
    assert decided.attributes["aevos.task.id"] == task.task_id
    assert decided.attributes["aevos.task.outcome"] == "SUCCEEDED"
    assert decided.attributes["aevos.task.overridden"] is True
    # Replayed positions made their spans when they ran: the resumed execution adds none.
    assert len(by_name(spans, "aevos.step check")) == 1
    no_raw_pii(spans)


def test_payloads_go_into_spans_only_redacted_when_the_data_policy_allows(
    database_url: str, policies: Path, exporter: InMemorySpanExporter
) -> None:
    app = build(database_url, policies, config(exporter), trace_payloads=True)
    try:
        # Small: the model is confident, the policy allows, no person is asked.
        assert app.workflow_named("claims").run(claim(900.0)) == {"route": "auto", "by": "model"}
    finally:
        app.close()
    spans = exporter.get_finished_spans()
    step = one(spans, "aevos.step check")
    assert step.attributes is not None
    output = str(step.attributes["aevos.step.output"])
    assert "<EMAIL" in output and "<IBAN" in output and '"checked": true' in output
    predict = one(spans, "aevos.predict router")
    assert predict.attributes is not None
    assert '"amount": 900.0' in str(predict.attributes["aevos.model.input"])
    assert predict.attributes["aevos.model.label"] == '"auto"'
    decide = one(spans, "aevos.decide auto-route")
    assert decide.attributes is not None and decide.attributes["aevos.policy.result"] == "allow"
    assert not by_name(spans, "aevos.ask_human claims")
    no_raw_pii(spans)


def test_a_failing_step_marks_its_span_by_type_never_by_message(
    database_url: str, exporter: InMemorySpanExporter, policies: Path
) -> None:
    app = Aevos(database_url, tracing=config(exporter), poll_interval=0.02)

    @app.step(name="boom", retries=1)
    def boom(ctx: StepContext, email: str) -> None:
        raise ValueError(f"no account for {email}")

    @app.workflow(name="fails")
    def fails(ctx: WorkflowContext, email: str) -> None:
        boom(ctx, email)

    try:
        with pytest.raises(Exception, match="no account"):
            fails.run(EMAIL)
    finally:
        app.close()
    spans = exporter.get_finished_spans()
    step = one(spans, "aevos.step boom")
    assert step.status.status_code is StatusCode.ERROR
    assert step.attributes is not None and step.attributes["error.type"] == "builtins.ValueError"
    execution = one(spans, "aevos.run fails")
    assert execution.attributes is not None and execution.attributes["aevos.run.status"] == "FAILED"
    no_raw_pii(spans)


def test_an_async_workflows_steps_are_children_of_its_execution(
    database_url: str, exporter: InMemorySpanExporter
) -> None:
    app = Aevos(database_url, tracing=config(exporter), poll_interval=0.02)

    @app.step(name="double")
    async def double(ctx: StepContext, value: int) -> int:
        return value * 2

    @app.workflow(name="async-flow")
    async def flow(ctx: WorkflowContext, value: int) -> int:
        return await double(ctx, await double(ctx, value))

    try:
        assert flow.run(5) == 20
    finally:
        app.close()
    spans = exporter.get_finished_spans()
    execution = one(spans, "aevos.run async-flow")
    steps = by_name(spans, "aevos.step double")
    assert [s.attributes and s.attributes["aevos.step.seq"] for s in steps] == [0, 1]
    assert {parent_of(s) for s in steps} == {span_id(execution)}


def test_a_child_run_is_traced_inside_its_parents_trace(
    database_url: str, exporter: InMemorySpanExporter
) -> None:
    app = Aevos(database_url, tracing=config(exporter), poll_interval=0.02)

    @app.workflow(name="child")
    def child(ctx: WorkflowContext, value: int) -> int:
        return value + 1

    @app.workflow(name="parent")
    def parent(ctx: WorkflowContext, value: int) -> int:
        return child(ctx, value) * 10

    try:
        assert parent.run(1) == 20
    finally:
        app.close()
    spans = exporter.get_finished_spans()
    assert len({trace_id(s) for s in spans}) == 1
    parent_run = one(spans, "aevos.run parent")
    child_start = one(spans, "aevos.run.start child")
    assert parent_of(child_start) == span_id(parent_run)
    assert child_start.attributes is not None
    assert child_start.attributes["aevos.run.parent_id"] == parent_run.attributes["aevos.run.id"]
    assert parent_of(one(spans, "aevos.run child")) == span_id(child_start)


# -- ingress: the sender's trace context is the run's parent ---------------------------------


def test_a_webhooks_traceparent_becomes_the_parent_of_the_run(
    database_url: str, policies: Path, exporter: InMemorySpanExporter
) -> None:
    app = build(database_url, policies, config(exporter))
    app.webhook("claims-in", workflow="claims", secret=SECRET, map=lambda e: {"claim": e})
    body = b'{"amount": 500.0, "severity": "Minor Damage", "email": "x", "iban": "y"}'
    try:
        with TestClient(create_app(app)) as client:
            response = client.post(
                "/v1/events/claims-in",
                content=body,
                headers={
                    "X-Aevos-Signature": sign(SECRET, body, event_id="evt-1"),
                    "X-Aevos-Event-Id": "evt-1",
                    "traceparent": TRACEPARENT,
                    "tracestate": "vendor=abc",
                },
            )
            assert response.status_code == 202, response.text
            run_id = response.json()["run_id"]
            worker = app.worker(concurrency=1).start()
            try:
                app.handle(run_id).result(timeout=20)
            finally:
                worker.stop()
    finally:
        app.close()
    spans = exporter.get_finished_spans()
    received = one(spans, "aevos.webhook receive")
    assert received.kind is SpanKind.SERVER
    assert format(trace_id(received), "032x") == SENDER_TRACE
    assert received.parent is not None and format(received.parent.span_id, "016x") == SENDER_SPAN
    assert received.parent.is_remote
    assert received.attributes is not None
    assert received.attributes["aevos.event.status"] == "ACCEPTED"
    assert received.attributes["aevos.run.id"] == run_id
    start = one(spans, "aevos.run.start claims")
    assert parent_of(start) == span_id(received)
    execution = one(spans, "aevos.run claims")
    assert parent_of(execution) == span_id(start)
    assert {format(trace_id(s), "032x") for s in spans} == {SENDER_TRACE}


def test_an_api_start_continues_the_callers_trace_and_a_bad_traceparent_starts_a_new_one(
    database_url: str, policies: Path, exporter: InMemorySpanExporter
) -> None:
    app = build(database_url, policies, config(exporter))
    token = app.identity.create_token(tenant="default", role="operator", name="t", created_by="t")
    auth = {"Authorization": f"Bearer {token.token}"}
    body = {"workflow": "claims", "kwargs": {"claim": claim(100.0)}}
    try:
        with TestClient(create_app(app)) as client:
            traced = client.post(
                "/v1/runs", json=body, headers={**auth, "traceparent": TRACEPARENT}
            )
            assert traced.status_code == 201, traced.text
            malformed = client.post(
                "/v1/runs", json=body, headers={**auth, "traceparent": "00-nonsense-01"}
            )
            assert malformed.status_code == 201, malformed.text
    finally:
        app.close()
    spans = exporter.get_finished_spans()
    calls = by_name(spans, "aevos.api start_run")
    assert len(calls) == 2
    ours = [s for s in calls if format(trace_id(s), "032x") == SENDER_TRACE]
    assert len(ours) == 1 and ours[0].parent is not None
    assert ours[0].attributes is not None
    assert ours[0].attributes["aevos.run.id"] == traced.json()["run_id"]
    (fresh,) = [s for s in calls if s is not ours[0]]
    assert fresh.parent is None  # a malformed traceparent is ignored, the start still works


def test_carriers_inject_and_extract_the_w3c_trace_context(exporter: InMemorySpanExporter) -> None:
    context = extract_context({"TraceParent": TRACEPARENT})
    headers: dict[str, str] = {}
    inject_context(headers, context)
    assert headers["traceparent"] == TRACEPARENT
    assert trace_headers({"traceparent": TRACEPARENT + "x" * 60, "other": "1"}) == {}
    assert extract_context({}) == extract_context({"traceparent": "garbage"})


# -- off by default; configured from the environment -----------------------------------------


def test_without_configuration_nothing_is_traced_or_stored(
    database_url: str, policies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    app = build(database_url, policies, None)
    try:
        assert app.tracer is None and app.runtime.tracing is None
        run = app.workflow_named("claims").run(claim(900.0))
        assert run["by"] == "model"
        (info,) = app.list_runs(workflow="claims")
        with app.store.reading() as uow:
            assert uow.traces.get(info.run_id) is None
    finally:
        app.close()


def test_the_standard_environment_configures_the_exporter() -> None:
    assert TracingConfig.from_env({}) is None
    base = TracingConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base is not None and base.endpoint == "http://collector:4318/v1/traces"
    exact = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom",
            "OTEL_SERVICE_NAME": "claims-intake",
        }
    )
    assert exact is not None and exact.endpoint == "http://collector:4318/custom"
    assert exact.service_name == "claims-intake"
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    assert TracingConfig.from_env(off) is None
    none = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}
    assert TracingConfig.from_env(none) is None


# -- over the wire: OTLP/HTTP protobuf to a receiver on loopback -----------------------------


Received = list[tuple[str, str, ExportTraceServiceRequest]]


class _Receiver(BaseHTTPRequestHandler):
    requests: Received
    keys: list[str | None]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(length))
        self.requests.append((self.path, self.headers.get("Content-Type", ""), request))
        self.keys.append(self.headers.get("x-key"))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received, list[str | None]]]:
    received: Received = []
    keys: list[str | None] = []
    handler = type("Receiver", (_Receiver,), {"requests": received, "keys": keys})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received, keys
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_spans_reach_an_otlp_http_receiver_as_protobuf(
    database_url: str,
    policies: Path,
    receiver: tuple[str, Received, list[str | None]],
) -> None:
    base, received, keys = receiver
    app = build(
        database_url,
        policies,
        TracingConfig(
            endpoint=base + "/v1/traces", service_name="claims-intake", headers={"x-key": "k"}
        ),
    )
    try:
        assert app.workflow_named("claims").run(claim(900.0))["by"] == "model"
        assert app.tracer is not None and app.tracer.force_flush()
    finally:
        app.close()
    assert received, "the receiver got no export"
    assert {path for path, _, _ in received} == {"/v1/traces"}
    assert {kind for _, kind, _ in received} == {"application/x-protobuf"}
    assert set(keys) == {"k"}
    spans: dict[str, Any] = {}
    services = set()
    for _, _, request in received:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "aevos"
                for span in scope_spans.spans:
                    spans[span.name] = span
    assert services == {"claims-intake"}
    assert {
        "aevos.run.start claims",
        "aevos.run claims",
        "aevos.step check",
        "aevos.predict router",
        "predict router",
        "aevos.decide auto-route",
    } <= set(spans)
    assert len({span.trace_id for span in spans.values()}) == 1
    call = spans["predict router"]
    assert call.parent_span_id == spans["aevos.predict router"].span_id
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "predict"
    assert attributes["gen_ai.provider.name"].string_value == "rules"
    assert attributes["gen_ai.request.model"].string_value == "router"
    assert attributes["gen_ai.response.model"].string_value == "router@1"
    decide = {a.key: a.value for a in spans["aevos.decide auto-route"].attributes}
    assert decide["aevos.policy.version"].int_value == 4


def test_the_standard_environment_alone_sends_spans_to_the_receiver(
    database_url: str,
    policies: Path,
    receiver: tuple[str, Received, list[str | None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, received, keys = receiver
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-key=from-env")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    app = build(database_url, policies, None)
    try:
        assert app.tracer is not None
        assert app.workflow_named("claims").run(claim(900.0))["by"] == "model"
    finally:
        app.close()  # flushes the batch
    assert received and {path for path, _, _ in received} == {"/v1/traces"}
    assert set(keys) == {"from-env"}
    names = {
        span.name
        for _, _, request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
    assert {"aevos.run claims", "aevos.step check", "predict router"} <= names


# -- a worker killed mid-run: the run that another worker finishes is still one trace -------


def _received_spans(received: Received) -> list[Any]:
    return [
        span
        for _, _, request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


@pytest.mark.slow
def test_a_run_resumed_after_its_worker_was_killed_stays_in_its_trace(
    database_url: str,
    tmp_path: Path,
    exporter: InMemorySpanExporter,
    receiver: tuple[str, Received, list[str | None]],
) -> None:
    from tests.apps.traced_app import TRACED_WORKFLOW
    from tests.apps.traced_app import build as build_traced
    from tests.apps.workers import WorkerPool

    base, received, _ = receiver
    marks = tmp_path / "marks"
    marks.mkdir()
    # The test process only starts the run: its start span is kept in memory.
    app = build_traced(database_url, tracing=config(exporter))
    pool: WorkerPool | None = None
    try:
        pool = WorkerPool(
            "tests.apps.traced_app",
            database_url,
            tmp_path,
            1,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": base,
                "OTEL_BSP_SCHEDULE_DELAY": "50",  # export ended spans within 50 ms
                "TRACED_MARKS": str(marks),
                "TRACED_HOLD": "1",
            },
        )
        run_id = app.workflow_named(TRACED_WORKFLOW).start(20).run_id
        deadline = time.monotonic() + 60

        def exported(name: str) -> list[Any]:
            return [s for s in _received_spans(received) if s.name == name]

        while not ((marks / "held").exists() and exported("aevos.step first")):
            pool.check_alive()
            assert time.monotonic() < deadline, pool.log_tail()
            time.sleep(0.02)
        pool.env["TRACED_HOLD"] = "0"
        pool.kill(0, restart=True)  # SIGKILL inside `hold`; its execution span never ends
        assert app.handle(run_id).result(timeout=60) == 42
        while not exported("aevos.run traced.flow"):
            pool.check_alive()
            assert time.monotonic() < deadline, pool.log_tail()
            time.sleep(0.02)
    finally:
        if pool is not None:
            pool.close()
        app.close()

    start = one(exporter.get_finished_spans(), "aevos.run.start traced.flow")
    spans = _received_spans(received)
    # Every span the two workers exported is in the start span's trace.
    assert {int.from_bytes(s.trace_id, "big") for s in spans} == {trace_id(start)}
    (first,) = [s for s in spans if s.name == "aevos.step first"]
    (execution,) = [s for s in spans if s.name == "aevos.run traced.flow"]
    (hold,) = [s for s in spans if s.name == "aevos.step hold"]  # only the finished attempt
    attributes = {a.key: a.value for a in execution.attributes}
    assert attributes["aevos.run.execution"].int_value == 2
    assert attributes["aevos.run.status"].string_value == "SUCCEEDED"
    # The killed execution's span never arrived; both executions hang off the start span.
    assert int.from_bytes(execution.parent_span_id, "big") == span_id(start)
    assert first.parent_span_id != execution.span_id
    assert hold.parent_span_id == execution.span_id
