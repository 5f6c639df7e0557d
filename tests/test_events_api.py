"""Signals over HTTP and dead letters over the API and the CLI, on SQLite and PostgreSQL:
permission checked, tenant scoped, audited."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aevos import Aevos, RunStatus, WorkflowContext
from aevos.cli.main import cli
from aevos.events.webhook import sign
from aevos.server import create_app

SECRET = "whsec_events-api-0123456789abcdef"
Served = tuple[Aevos, TestClient]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def served(database_url: str) -> Iterator[Served]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.workflow(name="approval")
    def approval(ctx: WorkflowContext) -> Any:
        return ctx.wait_signal("approved", timeout=60)

    @app.workflow(name="intake")
    def intake(ctx: WorkflowContext, ticket: str) -> str:
        return ticket

    app.webhook(
        "crm",
        workflow="intake",
        tenant="acme",
        secret=SECRET,
        map=lambda e: {"ticket": e["ticket"]},
    )
    worker = app.worker(concurrency=4).start()
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    worker.stop()
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def _start(client: TestClient, headers: dict[str, str]) -> str:
    started = client.post("/v1/runs", json={"workflow": "approval"}, headers=headers)
    assert started.status_code == 201, started.text
    return str(started.json()["run_id"])


def test_a_signal_over_http_resumes_the_run_and_is_audited(served: Served) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    run_id = _start(client, ops)
    url = f"/v1/runs/{run_id}/signals/approved"
    sent = client.post(
        url, json={"payload": {"by": "ana"}}, headers={**ops, "Idempotency-Key": "s-1"}
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "SIGNALLED" and sent.json()["signal_id"] == "s-1"
    # The same key again: answered, nothing queued twice.
    again = client.post(
        url, json={"payload": {"by": "ana"}}, headers={**ops, "Idempotency-Key": "s-1"}
    )
    assert again.status_code == 200 and again.json()["status"] == "DUPLICATE"
    assert app.handle(run_id).result(timeout=30) == {"by": "ana"}
    records = app.audit.query("acme", action="event.signalled")
    assert len(records) == 1 and records[0].run_id == run_id
    assert "operator" in records[0].actor and records[0].data["source"] == "approved"
    listed = client.get(
        "/v1/events", params={"status": "SIGNALLED", "channel": "signal"}, headers=ops
    ).json()
    assert [(e["channel"], e["source"], e["run_id"]) for e in listed] == [
        ("signal", "approved", run_id)
    ]
    assert client.get("/v1/events", params={"channel": "nats"}, headers=ops).json() == []
    # The run has ended: it takes no more signals.
    late = client.post(url, json={"payload": 1}, headers=ops)
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_run_state"


def test_signals_need_runs_control_in_the_runs_tenant(served: Served) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    run_id = _start(client, ops)
    url = f"/v1/runs/{run_id}/signals/approved"
    reviewer = client.post(url, json={"payload": 1}, headers=_token(app, "acme", "reviewer"))
    assert reviewer.status_code == 403
    other = client.post(url, json={"payload": 1}, headers=_token(app, "globex", "operator"))
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "forbidden"
    anonymous = client.post(url, json={"payload": 1})
    assert anonymous.status_code == 401
    assert client.post(f"/v1/runs/{run_id}/signals/bad name!", headers=ops).status_code in (
        404,
        422,
    )
    assert client.post("/v1/runs/nope/signals/approved", headers=ops).status_code == 404
    # Refusals are audited; nothing reached the run.
    assert app.audit.query("acme", action="authz.denied")
    assert app.audit.query("globex", action="authz.denied")
    assert app.get_run(run_id).status in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.ENQUEUED)
    app.cancel(run_id)


def _deliver(client: TestClient, event_id: str, body: bytes) -> Any:
    headers = {
        "X-Aevos-Signature": sign(SECRET, body, event_id=event_id),
        "X-Aevos-Event-Id": event_id,
    }
    return client.post("/v1/events/crm", content=body, headers=headers)


def test_dead_letters_are_listed_inspected_and_replayed_over_the_api(served: Served) -> None:
    app, client = served
    refused = _deliver(client, "e-1", json.dumps({"subject": "no ticket field"}).encode())
    assert refused.status_code == 422
    assert _deliver(client, "e-2", b"{broken").status_code == 422
    ops = _token(app, "acme", "operator")
    letters = client.get("/v1/events/dead-letters", headers=ops)
    assert letters.status_code == 200, letters.text
    by_event = {letter["event_id"]: letter for letter in letters.json()}
    assert by_event["e-1"]["code"] == "event_mapping_failed"
    assert by_event["e-2"]["code"] == "invalid_event"
    assert all(letter["payload"] is None for letter in letters.json())
    first = by_event["e-1"]["id"]
    # The body needs pii:reveal: an operator may not, an auditor may (audited).
    assert (
        client.get(f"/v1/events/dead-letters/{first}?payload=true", headers=ops).status_code == 403
    )
    auditor = _token(app, "acme", "auditor")
    shown = client.get(f"/v1/events/dead-letters/{first}?payload=true", headers=auditor)
    assert shown.status_code == 200 and json.loads(shown.json()["payload"]) == {
        "subject": "no ticket field"
    }
    assert app.audit.query("acme", action="event.dead_letter_read")
    # Another tenant sees none of them, and cannot replay them.
    globex = _token(app, "globex", "operator")
    assert client.get("/v1/events/dead-letters", headers=globex).json() == []
    assert client.get(f"/v1/events/dead-letters/{first}", headers=globex).status_code == 404
    assert client.post(f"/v1/events/dead-letters/{first}/replay", headers=globex).status_code == 404
    # A reviewer may read runs but not replay.
    reviewer = _token(app, "acme", "reviewer")
    assert (
        client.post(f"/v1/events/dead-letters/{first}/replay", headers=reviewer).status_code == 403
    )
    # Replayed before the fix: still dead, with its reason.
    failed = client.post("/v1/events/dead-letters/replay", json={"ids": [first]}, headers=ops)
    assert failed.status_code == 200 and failed.json()[0]["replayed"] is False
    # The fix: the source's mapping accepts the sender's field.
    app.webhooks["crm"] = app.webhooks["crm"].__class__.declare(
        "crm",
        workflow="intake",
        tenant="acme",
        secret=SECRET,
        map=lambda e: {"ticket": e.get("ticket") or e["subject"]},
    )
    done = client.post(
        "/v1/events/dead-letters/replay", json={"ids": [first, by_event["e-2"]["id"]]}, headers=ops
    )
    outcomes = {o["id"]: o for o in done.json()}
    assert outcomes[first]["replayed"] is True
    assert outcomes[by_event["e-2"]["id"]]["replayed"] is False  # still not JSON
    run_id = outcomes[first]["run_id"]
    assert app.handle(run_id).result(timeout=30) == "no ticket field"
    assert (
        client.get(f"/v1/events/dead-letters/{first}", headers=ops).json()["status"] == "REPLAYED"
    )
    # The sender's redelivery after the replay starts nothing new.
    again = _deliver(client, "e-1", json.dumps({"subject": "no ticket field"}).encode())
    assert again.status_code == 200 and again.json()["run_id"] == run_id


def test_the_cli_lists_shows_and_replays_dead_letters(served: Served, monkeypatch: Any) -> None:
    app, client = served
    _deliver(client, "e-9", json.dumps({"subject": "x"}).encode())
    runner = CliRunner()
    monkeypatch.setenv("AEVOS_DATABASE_URL", app.database_url)
    listed = runner.invoke(cli, ["events", "dead-letters", "list", "--tenant", "acme", "--json"])
    assert listed.exit_code == 0, listed.output
    (letter,) = json.loads(listed.output)
    assert letter["code"] == "event_mapping_failed" and letter["source"] == "crm"
    shown = runner.invoke(
        cli, ["events", "dead-letters", "show", str(letter["id"]), "--tenant", "acme"]
    )
    assert shown.exit_code == 0 and "event_mapping_failed" in shown.output
    # A bare app (no --app) declares no sources: the replay says so and fails.
    bare = runner.invoke(
        cli, ["events", "dead-letters", "replay", str(letter["id"]), "--tenant", "acme"]
    )
    assert bare.exit_code == 1 and "not declared" in bare.output
