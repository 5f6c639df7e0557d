"""Connector calls and NATS triggers in the run's trace, on SQLite and PostgreSQL: each HTTP
and SMTP call is a CLIENT span under its step's span (a failed attempt marked failed, never
a credential or a payload on it), HTTP calls carry the call's ``traceparent``, and a NATS
message's ``traceparent`` is the parent of the run it starts."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.apps.faults import free_port
from tests.conftest import IN_CI
from tests.nats_support import NATS_SERVER, NatsServer, _with_js, add_stream, wait_for
from tests.test_connectors import QUICK, TOKEN, Api, Mailbox

from aevos import Aevos, StepContext
from aevos.connectors import HttpConnector, RelayReport, SmtpConnector, WebhookDestination
from aevos.connectors.relay import Destination
from aevos.telemetry.tracing import TracingConfig


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(database_url: str, exporter: InMemorySpanExporter) -> Iterator[Aevos]:
    app = Aevos(
        database_url,
        lease_seconds=2.0,
        park_after=0.3,
        poll_interval=0.02,
        tracing=TracingConfig(processors=[SimpleSpanProcessor(exporter)]),
    )
    yield app
    app.close()


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.close()


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_http_calls_are_client_spans_under_their_step(
    traced: Aevos, api: Api, exporter: InMemorySpanExporter
) -> None:
    crm = HttpConnector(api.url, bearer=TOKEN)

    @traced.step(name="sync", retries=QUICK)
    def sync(sctx: StepContext, text: str) -> Any:
        crm.post(sctx, "/tickets", json={"text": text})
        return crm.get(sctx, "/flaky")  # 503 twice, then 200: three attempts

    @traced.workflow()
    def ticket(ctx: Any, text: str) -> Any:
        return sync(ctx, text)

    assert ticket.run("printer on fire") == {"ok": True}
    spans = list(exporter.get_finished_spans())
    (step,) = _named(spans, "aevos.step sync")
    posts = _named(spans, "http POST")
    gets = _named(spans, "http GET")
    # Each attempt of the step calls again: POST three times, GET once per attempt.
    assert len(posts) == 3 and len(gets) == 3
    for span in posts + gets:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == _id(step)
        attributes = dict(span.attributes or {})
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["aevos.connector.system"] == "http"
        for value in attributes.values():
            assert TOKEN not in str(value) and "printer" not in str(value)
    assert [dict(s.attributes or {})["http.response.status_code"] for s in gets] == [503, 503, 200]
    assert [dict(s.attributes or {})["aevos.connector.status"] for s in gets] == [
        "error",
        "error",
        "ok",
    ]
    failed = gets[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "aevos.errors.ConnectorUnavailableError"
    assert [dict(s.attributes or {})["aevos.step.attempt"] for s in gets] == [1, 2, 3]
    # The server got each call's own trace context.
    sent = [h.get("traceparent") or h.get("Traceparent") for h in api.hits("/flaky")]
    assert [p.split("-")[2] for p in sent if p] == [format(_id(s), "016x") for s in gets]


def test_smtp_sends_are_client_spans_without_addresses(
    traced: Aevos, exporter: InMemorySpanExporter
) -> None:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        mail = SmtpConnector("127.0.0.1", controller.port, sender="aevos@example.com")

        @traced.step(name="notify", retries=QUICK)
        def notify(sctx: StepContext, user: str) -> str:
            return mail.send(sctx, [f"{user}@example.com", "desk@example.com"], "Hi", "Body")

        @traced.workflow()
        def tell(ctx: Any, user: str) -> str:
            return notify(ctx, user)

        tell.run("ada")
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1
    spans = list(exporter.get_finished_spans())
    (send,) = _named(spans, "smtp send")
    (step,) = _named(spans, "aevos.step notify")
    assert send.kind is SpanKind.CLIENT and send.parent is not None
    assert send.parent.span_id == _id(step)
    attributes = dict(send.attributes or {})
    assert attributes["server.port"] == controller.port
    assert attributes["aevos.email.recipients"] == 2
    assert attributes["aevos.connector.status"] == "ok"
    assert not any("example.com" in str(v) for v in attributes.values())


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if not os.access(NATS_SERVER, os.X_OK):
        problem = f"nats-server not found at {NATS_SERVER}"
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.stop()


def test_a_nats_message_traceparent_is_the_parent_of_its_run(
    traced: Aevos, nats_server: NatsServer, exporter: InMemorySpanExporter
) -> None:
    add_stream(nats_server.url, "ORDERS", ["orders.>"])

    @traced.workflow(name="fulfil")
    def fulfil(ctx: Any, event: dict[str, Any]) -> str:
        return str(event["order"])

    traced.nats_trigger(
        "orders",
        stream="ORDERS",
        subject="orders.new",
        workflow="fulfil",
        servers=[nats_server.url],
    )
    sender_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    sender_span = "00f067aa0ba902b7"

    async def send(js: Any) -> None:
        await js.publish(
            "orders.new",
            json.dumps({"order": "o-1"}).encode(),
            headers={"traceparent": f"00-{sender_trace}-{sender_span}-01"},
        )
        await js.publish("orders.new", json.dumps({"order": "o-2"}).encode())

    asyncio.run(_with_js(nats_server.url, send))
    worker = traced.worker(concurrency=2).start()
    try:
        wait_for(
            lambda: len(_named(list(exporter.get_finished_spans()), "aevos.run fulfil")) == 2,
            what="two runs executed",
        )
    finally:
        worker.stop()
    spans = list(exporter.get_finished_spans())
    receives = _named(spans, "aevos.nats receive")
    assert len(receives) == 1  # only the message with a trace context gets an ingress span
    (receive,) = receives
    assert receive.kind is SpanKind.SERVER and receive.parent is not None
    assert receive.parent.span_id == int(sender_span, 16)
    assert receive.context is not None and receive.context.trace_id == int(sender_trace, 16)
    starts = [s for s in _named(spans, "aevos.run.start fulfil") if s.parent is not None]
    assert [s.parent.span_id for s in starts if s.parent] == [_id(receive)]
    assert dict(receive.attributes or {})["aevos.event.status"] == "ACCEPTED"


class _Legacy(Destination):
    """A user's destination written before trace headers existed: ``send(row)`` only."""

    def __init__(self) -> None:
        self.subjects = "legacy.>"
        self.name = "legacy"
        self.rows: list[Any] = []

    def send(self, row: Any) -> None:
        self.rows.append(row)


def test_the_relay_sends_the_runs_trace_context_on_webhook_headers(
    traced: Aevos, api: Api, exporter: InMemorySpanExporter
) -> None:
    @traced.workflow(name="notify")
    def notify(ctx: Any) -> None:
        ctx.publish("hooks.done", {"ok": True})
        ctx.publish("legacy.done", {"ok": True})

    legacy = _Legacy()
    relay = traced.outbox_relay(
        [WebhookDestination(api.url + "/tickets", secret="s" * 32, subjects="hooks.>"), legacy]
    )
    notify.run()
    assert relay.run_once() == RelayReport(sent=2, retried=0, dead=0)
    (start,) = _named(list(exporter.get_finished_spans()), "aevos.run.start notify")
    (hit,) = api.hits("/tickets")
    assert start.context is not None
    assert hit["X-Aevos-Run-Id"] == dict(start.attributes or {})["aevos.run.id"]
    version, trace_id, parent, _flags = hit["traceparent"].split("-")
    assert (version, trace_id, parent) == (
        "00",
        f"{start.context.trace_id:032x}",
        f"{start.context.span_id:016x}",
    )
    # A destination whose send takes only the row still gets its message.
    assert [row.subject for row in legacy.rows] == ["legacy.done"]
