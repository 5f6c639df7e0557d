"""End to end, on SQLite and PostgreSQL: an e-mail dropped in a maildir starts a run (a
worker watching the inbox), whose result a SQL connector writes to a table of the user's
(a SQLite file) and whose completion is published to NATS JetStream through the outbox (a
private nats-server); the trace is checked span by span in an in-memory exporter, and once
over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import mailbox
import os
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.conftest import IN_CI
from tests.nats_support import NATS_SERVER, NatsServer, _with_js, add_stream, wait_for
from tests.test_tracing import Received, _Receiver

from aevos import Aevos, StepContext, WorkflowContext
from aevos.connectors import CONNECTOR_RETRY, NatsDestination, SqlConnector
from aevos.telemetry.tracing import TracingConfig

SENDER = "ann.smith@example.com"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if not os.access(NATS_SERVER, os.X_OK):
        problem = f"nats-server not found at {NATS_SERVER} (Debian: apt-get install nats-server)"
        if IN_CI:
            pytest.fail(problem + " (CI must run the NATS tests)")
        pytest.skip(problem)
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received: Received = []
    handler = type("Receiver", (_Receiver,), {"requests": received, "keys": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _crm(path: Path) -> str:
    """The user's own database: a SQLite file with a results table keyed by aevos."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE triage_results (aevos_key TEXT PRIMARY KEY, ticket TEXT, queue TEXT)"
            )
        )
    engine.dispose()
    return url


def _rows(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT aevos_key, ticket, queue FROM triage_results"))
            )
    finally:
        engine.dispose()


def _support_app(database_url: str, tracing: TracingConfig, inbox: Path, crm_url: str) -> Aevos:
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, tracing=tracing
    )
    crm = SqlConnector(crm_url)

    @app.step(name="classify")
    def classify(sctx: StepContext, subject: str) -> str:
        return "it" if "vpn" in subject.lower() else "general"

    @app.step(name="record", retries=CONNECTOR_RETRY)
    def record(sctx: StepContext, ticket: str, queue: str) -> str:
        return crm.upsert(sctx, "triage_results", {"ticket": ticket, "queue": queue})

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, ticket: str, subject: str) -> dict[str, str]:
        queue = classify(ctx, subject)
        key = record(ctx, ticket, queue)
        ctx.publish("support.triaged", {"ticket": ticket, "queue": queue})
        return {"queue": queue, "row": key}

    app.maildir_trigger(
        "support-inbox",
        inbox,
        workflow="triage",
        interval=0.05,
        map=lambda mail: {
            "ticket": mail["message_id"].strip("<>").split("@")[0],
            "subject": mail["subject"],
        },
    )
    return app


def _deliver(inbox: Path, subject: str, message_id: str) -> None:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content(f"Hello, I am {SENDER} and my VPN drops every hour.\n")
    mailbox.Maildir(inbox, create=True).add(msg)


def _finished(app: Aevos, key: str) -> str:
    found: list[str] = []

    def done() -> bool:
        with app.store._tx() as conn:
            from aevos.storage.schema import runs

            row = conn.execute(
                sa.select(runs.c.run_id, runs.c.status).where(runs.c.idempotency_key == key)
            ).first()
        if row is not None and row.status == "SUCCEEDED":
            found.append(row.run_id)
            return True
        return False

    wait_for(done, what=f"run {key} succeeded")
    return found[0]


def _stream(url: str, stream: str) -> list[tuple[dict[str, str], bytes]]:
    async def work(js: Any) -> list[tuple[dict[str, str], bytes]]:
        info = await js.stream_info(stream)
        got = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            got.append((dict(msg.headers or {}), bytes(msg.data)))
        return got

    result: list[tuple[dict[str, str], bytes]] = asyncio.run(_with_js(url, work))
    return result


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, sorted(s.name for s in spans))
    return found[0]


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_mail_to_run_to_sql_row_to_nats_one_trace_span_by_span(
    database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    crm_url = _crm(tmp_path / "crm.db")
    inbox = tmp_path / "inbox"
    mailbox.Maildir(inbox, create=True)
    app = _support_app(
        database_url, TracingConfig(processors=[SimpleSpanProcessor(exporter)]), inbox, crm_url
    )
    add_stream(nats_server.url, "SUPPORT", ["support.>"])
    relay = app.outbox_relay([NatsDestination(nats_server.url, subjects="support.>")])
    worker = app.worker(concurrency=2).start()
    try:
        _deliver(inbox, "VPN keeps dropping", "<t-100@mail.example.com>")
        run_id = _finished(app, "email:support-inbox:t-100@mail.example.com")
        relay.run_once()  # the worker relays too, every few seconds: the stream de-duplicates
    finally:
        worker.stop()
    try:
        # The mail was moved out of new/ once its run's start committed.
        assert os.listdir(inbox / "new") == []
        # The SQL connector's row, keyed by the step (<run id>/<seq>).
        rows = _rows(crm_url)
        assert len(rows) == 1
        assert rows[0].ticket == "t-100" and rows[0].queue == "it"
        assert rows[0].aevos_key.startswith(f"{run_id}/")
        assert app.get_run(run_id).output == {"queue": "it", "row": rows[0].aevos_key}
        # The completion, in the stream once, with its run's trace context.
        wait_for(lambda: len(_stream(nats_server.url, "SUPPORT")) >= 1, what="published")
        relay.run_once()
        published = _stream(nats_server.url, "SUPPORT")
        assert len(published) == 1
        headers, body = published[0]
        assert json.loads(body) == {"ticket": "t-100", "queue": "it"}
        assert headers["X-Aevos-Run-Id"] == run_id
        assert headers["Nats-Msg-Id"].startswith(f"{run_id}/")

        assert app.tracer is not None and app.tracer.force_flush()
        spans = list(exporter.get_finished_spans())
        receive = _one(spans, "aevos.email receive")
        start = _one(spans, "aevos.run.start triage")
        execution = _one(spans, "aevos.run triage")
        classify = _one(spans, "aevos.step classify")
        record = _one(spans, "aevos.step record")
        upsert = _one(spans, "sql upsert")
        publish = _one(spans, "aevos.publish support.triaged")
        # One trace: ingress -> start -> execution -> steps -> the connector's call.
        trace_ids = {s.context.trace_id for s in spans if s.context is not None}
        assert len(trace_ids) == 1
        assert receive.parent is None and receive.kind is SpanKind.SERVER
        assert _parent(start) == _id(receive) and start.kind is SpanKind.PRODUCER
        assert _parent(execution) == _id(start) and execution.kind is SpanKind.CONSUMER
        assert _parent(classify) == _id(execution) and _parent(record) == _id(execution)
        assert _parent(upsert) == _id(record) and upsert.kind is SpanKind.CLIENT
        assert _parent(publish) == _id(execution)
        assert receive.attributes is not None and start.attributes is not None
        assert receive.attributes["aevos.event.channel"] == "email"
        assert receive.attributes["aevos.event.status"] == "ACCEPTED"
        assert receive.attributes["aevos.run.id"] == run_id
        assert start.attributes["aevos.run.id"] == run_id
        assert upsert.attributes is not None
        assert dict(upsert.attributes) == {
            "aevos.connector.system": "sql",
            "aevos.connector.operation": "upsert",
            "aevos.connector.status": "ok",
            "aevos.run.id": run_id,
            "aevos.step.name": "record",
            "aevos.step.seq": upsert.attributes["aevos.step.seq"],
            "aevos.step.attempt": 1,
            "db.system.name": "sqlite",
            "db.operation.name": "upsert",
            "db.collection.name": "triage_results",
        }
        assert publish.attributes is not None
        assert publish.attributes["messaging.destination.name"] == "support.triaged"
        assert publish.attributes["messaging.message.id"] == headers["Nats-Msg-Id"]
        # The message carries the run's trace context: a consumer joins this trace.
        traceparent = headers["traceparent"]
        assert traceparent.split("-")[1] == format(next(iter(trace_ids)), "032x")
        assert traceparent.split("-")[2] == format(_id(start), "016x")
        # Neither the sender's address nor the mail's text is on any span.
        for span in spans:
            for value in (span.attributes or {}).values():
                assert SENDER not in str(value) and "VPN drops" not in str(value), span.name
    finally:
        app.close()


def test_the_same_flow_reaches_an_otlp_http_receiver(
    database_url: str, receiver: tuple[str, Received], tmp_path: Path
) -> None:
    base, received = receiver
    crm_url = _crm(tmp_path / "crm.db")
    inbox = tmp_path / "inbox"
    _deliver(inbox, "printer jam", "<t-200@mail.example.com>")
    app = _support_app(
        database_url,
        TracingConfig(endpoint=base + "/v1/traces", service_name="support-intake"),
        inbox,
        crm_url,
    )
    try:
        handled = app.file_watcher().scan_once()
        assert [h.status for h in handled] == ["ACCEPTED"]
        worker = app.worker(concurrency=1, events=False).start()
        try:
            run_id = _finished(app, "email:support-inbox:t-200@mail.example.com")
        finally:
            worker.stop()
        assert app.tracer is not None and app.tracer.force_flush()
    finally:
        app.close()
    assert len(_rows(crm_url)) == 1
    spans: dict[str, Any] = {}
    for path, kind, request in received:
        assert path == "/v1/traces" and kind == "application/x-protobuf"
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = span
    assert {
        "aevos.email receive",
        "aevos.run.start triage",
        "aevos.run triage",
        "aevos.step classify",
        "aevos.step record",
        "sql upsert",
        "aevos.publish support.triaged",
    } <= set(spans)
    assert len({span.trace_id for span in spans.values()}) == 1
    upsert = spans["sql upsert"]
    assert upsert.parent_span_id == spans["aevos.step record"].span_id
    attributes = {a.key: a.value for a in upsert.attributes}
    assert attributes["db.system.name"].string_value == "sqlite"
    assert attributes["aevos.run.id"].string_value == run_id
