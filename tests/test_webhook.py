"""Event ingress by webhook: signatures, idempotent starts, every event recorded."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from aevos import Aevos, DefinitionError, RunStatus, StepContext, WorkflowContext
from aevos.errors import SignatureError, StaleSignatureError
from aevos.events.webhook import Delivery, EventStatus, WebhookSource, sign
from aevos.server import create_app
from aevos.storage.schema import events

SECRET = "whsec_current-7f3a9c1e5b2d4f6a8c0e"
OLD_SECRET = "whsec_previous-1b3d5f7a9c2e4a6c8e0f"
PII = "jane.doe@example.com"
Served = tuple[Aevos, TestClient]


@pytest.fixture
def served(database_url: str) -> Iterator[Served]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.step()
    def route(ctx: StepContext, text: str) -> str:
        return "billing" if "invoice" in text else "general"

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, ticket: dict[str, Any]) -> dict[str, Any]:
        return {"id": ticket["id"], "queue": route(ctx, ticket["text"])}

    @app.workflow(name="intake")
    def intake(ctx: WorkflowContext, event: dict[str, Any]) -> int:
        return len(event)

    def to_ticket(event: dict[str, Any]) -> dict[str, Any]:
        return {"ticket": {"id": event["id"], "text": event["data"]["text"]}}

    app.webhook(
        "crm",
        workflow="triage",
        tenant="acme",
        secret=SECRET,
        previous_secret=OLD_SECRET,
        map=to_ticket,
    )
    app.webhook("forms", workflow="intake", tenant="acme")  # bearer tokens; the whole event
    app.webhook("other", workflow="intake", tenant="globex", secret=SECRET)
    app.webhook("broken", workflow="triage", tenant="acme", secret=SECRET, map=lambda e: e[PII])
    app.webhook("lists", workflow="triage", tenant="acme", secret=SECRET, map=lambda e: [e])
    app.webhook(
        "sets", workflow="triage", tenant="acme", secret=SECRET, map=lambda e: {"ticket": {1}}
    )
    app.webhook("wrong", workflow="triage", tenant="acme", secret=SECRET, map=lambda e: {"x": 1})
    app.webhook("ghost", workflow="not-registered", tenant="acme", secret=SECRET)
    app.webhook("small", workflow="intake", tenant="acme", secret=SECRET, max_body=64)

    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def _event(event_id: str = "evt_1", text: str = "invoice missing") -> bytes:
    body = {"id": event_id, "type": "ticket.created", "data": {"text": text, "email": PII}}
    return json.dumps(body).encode()


def _post(
    client: TestClient,
    source: str,
    body: bytes,
    *,
    secret: str | None = SECRET,
    event_id: str | None = None,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    sent = dict(headers or {})
    if secret is not None:
        sent["X-Aevos-Signature"] = sign(secret, body, timestamp=timestamp, event_id=event_id)
    if event_id is not None:
        sent["X-Aevos-Event-Id"] = event_id
    return client.post(f"/v1/events/{source}", content=body, headers=sent)


def _rows(app: Aevos) -> list[Any]:
    with app.store._tx() as conn:
        return list(conn.execute(sa.select(events).order_by(events.c.id)).all())


def test_a_signed_event_starts_a_run_and_a_redelivery_is_a_duplicate(served: Served) -> None:
    app, client = served
    body = _event()
    first = _post(client, "crm", body, event_id="evt_1")
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["status"] == "ACCEPTED" and accepted["tenant"] == "acme"
    assert accepted["event_id"] == "evt_1" and accepted["size"] == len(body)
    assert accepted["payload_digest"] == hashlib.sha256(body).hexdigest()

    # A retry by the sender, signed anew: the same run, nothing started twice.
    again = _post(client, "crm", body, event_id="evt_1")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "DUPLICATE"
    assert again.json()["run_id"] == accepted["run_id"]

    run = app.get_run(accepted["run_id"])
    assert run.tenant == "acme" and run.idempotency_key == "event:crm:evt_1"
    worker = app.worker().start()
    try:
        result = app.handle(accepted["run_id"]).result(timeout=15)
    finally:
        worker.stop()
    assert result == {"id": "evt_1", "queue": "billing"}
    assert len(app.list_runs(tenant="acme")) == 1

    records = app.audit.query("acme")
    assert [r.action for r in records] == ["run.started", "event.accepted", "event.duplicate"]
    started, accepted_record, duplicate = records
    assert started.actor == "webhook:crm" and started.data["idempotency_key"] == "event:crm:evt_1"
    assert accepted_record.run_id == duplicate.run_id == accepted["run_id"]
    assert accepted_record.data["secret"] == "current"
    assert accepted_record.data["payload_digest"] == accepted["payload_digest"]

    listed = client.get("/v1/events", headers=_token(app, "acme", "operator")).json()
    assert [(e["status"], e["run_id"]) for e in listed] == [
        ("DUPLICATE", accepted["run_id"]),
        ("ACCEPTED", accepted["run_id"]),
    ]


def test_without_an_event_id_the_body_digest_dedupes(served: Served) -> None:
    _, client = served
    one = _post(client, "crm", _event("a")).json()
    same = _post(client, "crm", _event("a")).json()
    other = _post(client, "crm", _event("b")).json()
    assert one["event_id"] == f"sha256:{hashlib.sha256(_event('a')).hexdigest()}"
    assert (one["status"], same["status"], other["status"]) == ("ACCEPTED", "DUPLICATE", "ACCEPTED")
    assert one["run_id"] == same["run_id"] != other["run_id"]


def test_concurrent_deliveries_of_one_event_start_one_run(served: Served) -> None:
    app, _ = served
    body = _event("race")
    signature = sign(SECRET, body, event_id="race")
    delivery = Delivery("crm", body, len(body), signature=signature, event_id="race")
    ingress = app.ingress
    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda _: ingress.receive(delivery), range(8)))
    statuses = sorted(record.status.value for record in records)
    assert statuses == ["ACCEPTED"] + ["DUPLICATE"] * 7
    assert len({record.run_id for record in records}) == 1
    assert len(app.list_runs(tenant="acme")) == 1
    assert app.audit.verify("acme").ok
    assert [r.status for r in _rows(app)].count(EventStatus.ACCEPTED.value) == 1


def test_every_rejection_is_recorded_with_its_reason_and_audited(served: Served) -> None:
    app, client = served
    body = _event()
    now = int(time.time())
    plain = {"X-Aevos-Signature": f"t={now},v1={'0' * 64}"}
    cases: list[tuple[str, Any, int, str]] = [
        ("unknown source", lambda: _post(client, "nobody", body), 404, "unknown_source"),
        ("no signature", lambda: _post(client, "crm", body, secret=None), 401, "invalid_signature"),
        (
            "wrong signature",
            lambda: _post(client, "crm", body, secret=None, headers=plain),
            401,
            "invalid_signature",
        ),
        (
            "malformed header",
            lambda: _post(client, "crm", body, secret=None, headers={"X-Aevos-Signature": SECRET}),
            401,
            "invalid_signature",
        ),
        (
            "other secret",
            lambda: _post(client, "crm", body, secret="whsec_" + "x" * 30),
            401,
            "invalid_signature",
        ),
        (
            "body changed",
            lambda: client.post(
                "/v1/events/crm",
                content=body + b" ",
                headers={"X-Aevos-Signature": sign(SECRET, body)},
            ),
            401,
            "invalid_signature",
        ),
        (
            "replayed",
            lambda: _post(client, "crm", body, timestamp=now - 301),
            401,
            "signature_expired",
        ),
        (
            "from the future",
            lambda: _post(client, "crm", body, timestamp=now + 3600),
            401,
            "signature_expired",
        ),
        (
            "too large",
            lambda: _post(client, "small", b"[" + b"1," * 40 + b"1]"),
            413,
            "payload_too_large",
        ),
        (
            "too large, chunked",
            lambda: client.post(
                "/v1/events/small", content=iter([b"[" + b"1," * 20, b"1," * 20 + b"1]"])
            ),
            413,
            "payload_too_large",
        ),
        (
            "declares an absurd length",
            lambda: client.post(
                "/v1/events/small", content=b"{}", headers={"Content-Length": "9" * 40}
            ),
            413,
            "payload_too_large",
        ),
        ("not JSON", lambda: _post(client, "crm", body[:-1]), 422, "invalid_event"),
        ("not UTF-8", lambda: _post(client, "crm", b'"\xff"'), 422, "invalid_event"),
        ("NaN", lambda: _post(client, "crm", b"NaN"), 422, "invalid_event"),
        ("nested too deeply", lambda: _post(client, "crm", b"[" * 100_000), 422, "invalid_event"),
        (
            "bad event id",
            lambda: _post(client, "crm", body, event_id="has spaces"),
            422,
            "invalid_event",
        ),
        ("mapping raises", lambda: _post(client, "broken", body), 422, "event_mapping_failed"),
        (
            "mapping returns no dict",
            lambda: _post(client, "lists", body),
            422,
            "event_mapping_failed",
        ),
        ("input not JSON", lambda: _post(client, "sets", body), 422, "not_serializable"),
        ("wrong arguments", lambda: _post(client, "wrong", body), 422, "invalid_arguments"),
        ("unknown workflow", lambda: _post(client, "ghost", body), 404, "unknown_workflow"),
    ]
    for name, send, status, code in cases:
        response = send()
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (name, error)
        assert PII not in response.text and SECRET not in response.text, name

    rows = _rows(app)
    assert [(r.status, r.reason.partition(":")[0]) for r in rows] == [
        ("REJECTED", code) for _, _, _, code in cases
    ]
    assert {r.tenant for r in rows[1:]} == {"acme"}
    assert (rows[0].tenant, rows[0].source) == ("default", "nobody")
    by_reason = {r.reason.partition(":")[0]: r for r in rows}
    assert by_reason["unknown_source"].payload_digest == hashlib.sha256(body).hexdigest()
    assert (rows[8].payload_digest, rows[8].size) == (None, 83)
    assert (rows[9].payload_digest, rows[9].size) == (None, 83)
    # The mapping's exception type and line, never its text (here the PII it looked up).
    assert rows[10].size == 2**31 - 1
    mapping = rows[16]
    assert "raised KeyError at test_webhook.py:" in mapping.reason
    # Refusals before authentication keep no sender-supplied event id; later ones do.
    assert rows[6].event_id is None and mapping.event_id == f"sha256:{mapping.payload_digest}"

    audited = app.audit.query("default", action="event.rejected") + app.audit.query(
        "acme", action="event.rejected"
    )
    assert sorted(r.data["reason"].partition(":")[0] for r in audited) == sorted(
        code for _, _, _, code in cases
    )
    unsigned = app.audit.query("acme", action="event.rejected")[0]
    assert unsigned.actor == "anonymous" and unsigned.subject == "webhook:crm"
    # Starts refused by the kernel are also REJECTED runs, as through POST /v1/runs.
    refused = app.list_runs(tenant="acme", status=[RunStatus.REJECTED])
    assert sorted(r.error["code"] for r in refused if r.error) == [
        "invalid_arguments",
        "not_serializable",
        "unknown_workflow",
    ]
    assert len(app.list_runs(tenant="acme")) == 3


def test_a_source_without_a_secret_needs_a_token_that_may_start_runs(served: Served) -> None:
    app, client = served
    body = json.dumps({"form": "claim", "amount": 120}).encode()
    anonymous = _post(client, "forms", body, secret=None)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    bad = _post(client, "forms", body, secret=None, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    reviewer = _post(client, "forms", body, secret=None, headers=_token(app, "acme", "reviewer"))
    assert reviewer.status_code == 403 and reviewer.json()["error"]["code"] == "forbidden"
    stranger = _post(client, "forms", body, secret=None, headers=_token(app, "globex", "service"))
    assert stranger.status_code == 403 and "globex" not in stranger.text
    # A signature does not replace the token on such a source.
    assert _post(client, "forms", body).status_code == 401

    service = _token(app, "acme", "service")
    ok = _post(client, "forms", body, secret=None, event_id="form-1", headers=service)
    assert ok.status_code == 202 and ok.json()["status"] == "ACCEPTED"
    again = _post(client, "forms", body, secret=None, event_id="form-1", headers=service)
    assert again.status_code == 200 and again.json()["run_id"] == ok.json()["run_id"]
    assert app.get_run(ok.json()["run_id"]).input == {
        "args": [],
        "kwargs": {"event": {"form": "claim", "amount": 120}},
    }

    rows = _rows(app)
    assert [(r.status, r.reason and r.reason.partition(":")[0]) for r in rows] == [
        ("REJECTED", "unauthenticated"),
        ("REJECTED", "unauthenticated"),
        ("REJECTED", "forbidden"),
        ("REJECTED", "forbidden"),
        ("REJECTED", "unauthenticated"),
        ("ACCEPTED", None),
        ("DUPLICATE", None),
    ]
    actions = [r.action for r in app.audit.query("acme")]
    assert actions.count("event.rejected") == 5 and "authz.denied" in actions
    accepted = app.audit.query("acme", action="event.accepted")[0]
    assert accepted.actor.startswith("service:service#")
    # The refused principal of the other tenant is audited in its own chain, not acme's.
    assert [r.action for r in app.audit.query("globex")][-1] == "authz.denied"


def test_secret_rotation_accepts_the_previous_secret_until_it_is_removed(
    served: Served,
) -> None:
    app, client = served
    new = _post(client, "crm", _event("n"), event_id="n")
    old = _post(client, "crm", _event("o"), secret=OLD_SECRET, event_id="o")
    assert (new.status_code, old.status_code) == (202, 202)
    # A sender that signs with both secrets during its own rollover.
    body = _event("both")
    t = int(time.time())
    both = ",".join([sign("whsec_" + "z" * 30, body, timestamp=t), sign(SECRET, body, timestamp=t)])
    assert (
        _post(client, "crm", body, secret=None, headers={"X-Aevos-Signature": both}).status_code
        == 202
    )
    used = [r.data["secret"] for r in app.audit.query("acme", action="event.accepted")]
    assert used == ["current", "previous", "current"]

    # Once senders have moved: declared with the new secret alone, the old one is refused.
    rotated = WebhookSource.declare("crm", workflow="triage", tenant="acme", secret=SECRET)
    app.webhooks["crm"] = rotated
    refused = _post(client, "crm", _event("o2"), secret=OLD_SECRET)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_signature"


def test_the_events_list_is_scoped_to_the_tokens_tenant(served: Served) -> None:
    app, client = served
    _post(client, "crm", _event("a"), event_id="a")
    _post(client, "crm", _event("b"), secret=None)  # rejected
    _post(client, "other", _event("g"), event_id="g")
    acme, globex = _token(app, "acme", "auditor"), _token(app, "globex", "service")

    mine = client.get("/v1/events", headers=acme).json()
    assert [(e["source"], e["status"]) for e in mine] == [("crm", "REJECTED"), ("crm", "ACCEPTED")]
    assert mine[0]["code"] == "invalid_signature" and mine[0]["run_id"] is None
    theirs = client.get("/v1/events", headers=globex).json()
    assert [(e["source"], e["tenant"]) for e in theirs] == [("other", "globex")]
    rejected = client.get("/v1/events", params={"status": "REJECTED"}, headers=acme).json()
    assert [e["event_id"] for e in rejected] == [None]
    assert client.get("/v1/events", params={"source": "other"}, headers=acme).json() == []
    assert len(client.get("/v1/events", params={"limit": 1}, headers=acme).json()) == 1
    assert client.get("/v1/events").status_code == 401
    bad = client.get("/v1/events", params={"status": "LOST"}, headers=acme)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_no_secret_or_body_reaches_logs_errors_rows_or_audit(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    app, client = served
    caplog.set_level(logging.DEBUG, logger="aevos")
    responses = [
        _post(client, "crm", _event(), event_id="e1"),
        _post(client, "crm", _event(), secret=OLD_SECRET),
        _post(client, "crm", _event(), secret="whsec_" + "w" * 30),
        _post(client, "crm", _event()[:-3]),
        _post(client, "broken", _event()),
        _post(client, "small", _event()),
        _post(client, "nobody", _event()),
    ]
    assert [r.status_code for r in responses] == [202, 202, 401, 422, 422, 413, 404]
    assert caplog.records, "rejections are logged (by code)"
    texts = [caplog.text, *(r.text for r in responses)]
    texts += [repr(row) for row in _rows(app)]
    texts += [json.dumps(r.to_dict()) for t in ("acme", "default") for r in app.audit.query(t)]
    texts += [repr(source) for source in app.webhooks.values()]
    for text in texts:
        for secret in (PII, SECRET, OLD_SECRET, "invoice missing"):
            assert secret not in text, (secret, text[:300])


def test_sources_are_checked_when_declared(sqlite_url: str) -> None:
    app = Aevos(sqlite_url)
    app.webhook("crm", workflow="triage")
    bad: list[dict[str, Any]] = [
        {"name": "crm", "workflow": "triage"},  # twice
        {"name": "Not A Name", "workflow": "triage"},
        {"name": "x" * 65, "workflow": "triage"},
        {"name": "short", "workflow": "triage", "secret": "too-short"},
        {"name": "prev", "workflow": "triage", "previous_secret": SECRET},
        {"name": "tenant", "workflow": "triage", "tenant": "Acme Corp"},
        {"name": "queue", "workflow": "triage", "queue": "undeclared"},
        {"name": "big", "workflow": "triage", "max_body": 1 << 30},
        {"name": "slack", "workflow": "triage", "tolerance": 0},
        {"name": "map", "workflow": "triage", "map": "not callable"},
        {"name": "flood", "workflow": "triage", "rejections_per_minute": 0},
        {"name": "flood2", "workflow": "triage", "rejections_per_minute": True},
    ]
    for options in bad:
        with pytest.raises(DefinitionError) as raised:
            app.webhook(**options)
        assert "too-short" not in str(raised.value)
    assert list(app.webhooks) == ["crm"]
    app.close()


def test_a_captured_delivery_cannot_be_replayed_under_another_event_id(served: Served) -> None:
    app, client = served
    body = _event("captured")
    header = {"X-Aevos-Signature": sign(SECRET, body, event_id="evt_1")}
    first = _post(client, "crm", body, secret=None, event_id="evt_1", headers=header)
    assert first.status_code == 202, first.text
    again = _post(client, "crm", body, secret=None, event_id="evt_1", headers=header)
    assert again.status_code == 200 and again.json()["status"] == "DUPLICATE"
    for forged in ("attacker-1", None):  # a new id, or none: the signature no longer fits
        replay = _post(client, "crm", body, secret=None, event_id=forged, headers=header)
        assert replay.status_code == 401, replay.text
        assert replay.json()["error"]["code"] == "invalid_signature"
    started = [r for r in app.list_runs() if r.tenant == "acme"]
    assert len(started) == 1


def test_sign_and_verify() -> None:
    source = WebhookSource.declare("s", workflow="w", secret=SECRET, tolerance=60)
    body = b'{"id": 1}'
    assert source.verify(sign(SECRET, body, timestamp=1000), body, now=1030) == 0
    spaced = sign(SECRET, body, timestamp=1000).replace(",", " , ").upper()
    assert source.verify(spaced.replace("T=", "t=").replace("V1=", "v1="), body, now=1000) == 0
    with pytest.raises(StaleSignatureError):
        source.verify(sign(SECRET, body, timestamp=1000), body, now=1061)
    # The signature is checked before the timestamp: a forged old one is just wrong.
    with pytest.raises(SignatureError) as forged:
        source.verify(sign("whsec_" + "f" * 30, body, timestamp=1000), body, now=5000)
    assert type(forged.value) is SignatureError
    for header in [None, "", "t=1000", "v1=" + "0" * 64, "t=abc,v1=" + "0" * 64, "x" * 5000]:
        with pytest.raises(SignatureError):
            source.verify(header, body, now=1000)
    assert SECRET not in repr(source)


def test_the_documented_signature_example_matches(served: Served) -> None:
    """The sender's snippet in docs/api.md, run as written, is accepted."""
    docs = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    snippet = docs.split("<!-- webhook-signature-example -->\n```python\n", 1)[1].split("```")[0]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/api.md", "exec"), namespace)
    body = _event("documented")
    header = namespace["signature_header"](SECRET, body, "evt_doc")
    timestamp = int(header[2:].split(",")[0])
    assert header == sign(SECRET, body, timestamp=timestamp, event_id="evt_doc")
    _, client = served
    response = _post(
        client, "crm", body, secret=None, event_id="evt_doc", headers={"X-Aevos-Signature": header}
    )
    assert response.status_code == 202, response.text


def test_a_flood_of_bad_deliveries_is_counted_not_written_row_by_row(served: Served) -> None:
    """Past a source's budget, rejected deliveries keep their own error but are counted and
    recorded as one summary a minute; signed deliveries are never held back by a flood."""
    app, client = served
    app.webhook("tight", workflow="intake", tenant="acme", secret=SECRET, rejections_per_minute=3)
    refused = [_post(client, "tight", _event(f"bad_{i}"), secret=OLD_SECRET) for i in range(10)]
    assert {r.status_code for r in refused} == {401}
    assert {r.json()["error"]["code"] for r in refused} == {"invalid_signature"}
    good = _post(client, "tight", _event("good_1"), event_id="good_1")
    assert good.status_code == 202, good.text
    # Undeclared names share one budget, however many names a flood makes up.
    unknown = [_post(client, f"made-up-{i}", _event()) for i in range(70)]
    assert {r.status_code for r in unknown} == {404}

    rows = _rows(app)
    tight = [r for r in rows if r.source == "tight"]
    assert [r.status for r in tight] == ["REJECTED"] * 3 + ["ACCEPTED"]
    assert len([r for r in rows if r.source.startswith("made-up")]) == 60
    audited = [r for r in app.audit.query("acme") if r.action == "event.rejected"]
    assert len(audited) == 3

    # The minute ends (a worker's sweep, or close): one summary per flooded source.
    app.ingress.flush_refusals(time.time() + 61)
    summaries = [r for r in _rows(app) if r.reason and r.reason.startswith("too_many")]
    assert sorted((r.tenant, r.source) for r in summaries) == [("acme", "tight"), ("default", "*")]
    tight_summary = next(r for r in summaries if r.source == "tight")
    assert tight_summary.status == "REJECTED" and tight_summary.size == 0
    assert "7 more refusals" in tight_summary.reason
    assert "invalid_signature 7" in tight_summary.reason
    (record,) = [
        r for r in app.audit.query("acme") if r.action == "event.rejected" and "count" in r.data
    ]
    assert record.data["count"] == 7 and record.data["reasons"] == {"invalid_signature": 7}
    unknown_summary = next(r for r in summaries if r.source == "*")
    assert "10 more refusals" in unknown_summary.reason
    listed = client.get("/v1/events", headers=_token(app, "acme", "operator")).json()
    assert any(e["code"] == "too_many_rejections" for e in listed)
    app.ingress.flush_refusals(time.time() + 61)  # nothing counted twice
    assert len([r for r in _rows(app) if r.reason and r.reason.startswith("too_many")]) == 2


def test_counted_rejections_are_recorded_when_the_app_closes(database_url: str) -> None:
    app = Aevos(database_url)
    app.webhook("hook", workflow="w", tenant="acme", secret=SECRET, rejections_per_minute=1)
    for i in range(3):
        with pytest.raises(SignatureError):
            app.ingress.receive(Delivery("hook", _event(f"e{i}"), 10, signature="t=1,v1=00"))
    app.close()
    reopened = Aevos(database_url)
    try:
        reasons = [r.reason for r in _rows(reopened)]
        assert len(reasons) == 2 and "2 more refusals" in reasons[1]
    finally:
        reopened.close()


def test_the_server_writes_counted_rejections_when_it_stops(database_url: str) -> None:
    app = Aevos(database_url)
    app.webhook("hook", workflow="w", tenant="acme", secret=SECRET, rejections_per_minute=1)
    try:
        with TestClient(create_app(app)) as client:
            for i in range(4):
                assert _post(client, "hook", _event(f"e{i}"), secret=OLD_SECRET).status_code == 401
            assert len(_rows(app)) == 1  # one recorded, three counted
        reasons = [r.reason for r in _rows(app)]
        assert len(reasons) == 2 and "3 more refusals" in reasons[1]
    finally:
        app.close()


def test_a_rejection_after_authentication_is_always_recorded(served: Served) -> None:
    """A flood of bad signatures must not hide a signed delivery that fails to map: it is
    the sender's real event, kept with its id."""
    app, client = served
    app.webhook(
        "strict", workflow="triage", tenant="acme", secret=SECRET, rejections_per_minute=2,
        map=lambda e: {"ticket": e["missing"]},
    )  # fmt: skip
    for i in range(5):
        _post(client, "strict", _event(f"bad_{i}"), secret=OLD_SECRET)
    signed = _post(client, "strict", _event("real_1"), event_id="real_1")
    assert signed.status_code == 422, signed.text
    rows = [r for r in _rows(app) if r.source == "strict"]
    assert [r.event_id for r in rows][-1] == "real_1"
    assert len(rows) == 3  # two bad signatures recorded, three counted, the signed one kept


def test_a_summary_that_cannot_be_written_is_kept_for_the_next_try(served: Served) -> None:
    from aevos.errors import StorageUnavailableError

    app, client = served
    app.webhook("blip", workflow="intake", tenant="acme", secret=SECRET, rejections_per_minute=1)
    for i in range(3):
        _post(client, "blip", _event(f"e{i}"), secret=OLD_SECRET)
    ingress = app.ingress
    record = ingress._record_counted

    def unavailable(counted: Any) -> None:
        raise StorageUnavailableError("the database is unavailable")

    ingress._record_counted = unavailable  # type: ignore[method-assign]
    with pytest.raises(StorageUnavailableError):
        ingress.flush_refusals(time.time() + 61)
    ingress._record_counted = record  # type: ignore[method-assign]
    ingress.flush_refusals(time.time() + 61)
    (summary,) = [r for r in _rows(app) if r.reason and r.reason.startswith("too_many")]
    assert "2 more refusals" in summary.reason
