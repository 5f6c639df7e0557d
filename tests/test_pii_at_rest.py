"""Personal data at rest: run inputs are stored under a data policy, on both backends.

A reviewer reads no raw PII through the run resource, listings, steps, lineage, the CLI or
the database itself; an admin with ``pii:reveal`` reads the originals over the API, and the
reveal is audited; webhook sources carry their own policy; the workflow receives the stored
form on its first execution and on replay alike, and reveals originals only when its
policy allows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aevos import Aevos, RunStatus, StepContext, WorkflowContext
from aevos.cli.main import cli
from aevos.errors import (
    DefinitionError,
    PiiAccessDeniedError,
    PiiTokenNotFoundError,
    RunFailedError,
    VaultKeyError,
)
from aevos.events.webhook import sign
from aevos.pii import DataPolicy, Vault
from aevos.server import create_app
from aevos.storage.schema import audit, events, runs, steps

EMAIL = "john.doe@example.com"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
PHONE = "+44 20 7946 0958"
# Every spelling of them that could be stored: as sent, and canonical (as the vault keeps).
RAW = (EMAIL, "john.doe", CARD, "4111111111111111", IBAN, "DE89370400", "7946 0958", "79460958")
TICKET = {
    "id": "T-4711",
    "text": f"Refund to my card {CARD} or {IBAN}, call me on {PHONE}",
    "customer": {"email": EMAIL, "tier": "gold"},
}
SECRET = "whsec_current-7f3a9c1e5b2d4f6a8c0e"


def assert_no_raw(text: str, where: str) -> None:
    leaked = [value for value in RAW if value in text]
    assert not leaked, f"{where} holds raw PII: {leaked}"


def database_text(app: Aevos) -> str:
    """Everything the runs, steps, audit and events tables hold, as text."""
    with app.store._read() as conn:
        return "\n".join(
            repr(row)
            for table in (runs, steps, audit, events)
            for row in conn.execute(sa.select(table))
        )


def build(app: Aevos) -> None:
    @app.step(name="route")
    def route(ctx: StepContext, text: str) -> str:
        return "billing" if "Refund" in text else "general"

    @app.workflow(name="support.triage")
    def triage(ctx: WorkflowContext, ticket: dict[str, Any]) -> dict[str, Any]:
        return {"queue": route(ctx, ticket["text"]), "ticket": ticket}


@pytest.fixture(params=["vault", "no-vault"])
def vault_key(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """With a vault key inputs are tokenised, without one redacted."""
    if request.param == "vault":
        monkeypatch.setenv("AEVOS_VAULT_KEY", Vault.generate_key())
        return True
    monkeypatch.delenv("AEVOS_VAULT_KEY", raising=False)
    return False


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    build(app)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _headers(app: Aevos, tenant: str, role: str, name: str | None = None) -> dict[str, str]:
    issued = app.identity.create_token(
        tenant=tenant, role=role, name=name or role, created_by="test"
    )
    return {"Authorization": f"Bearer {issued.token}"}


def _finish(app: Aevos, run_id: str) -> Any:
    worker = app.worker().start()
    try:
        return app.handle(run_id).result(timeout=30)
    finally:
        worker.stop()


def test_a_reviewer_reads_no_raw_pii_anywhere(
    served: tuple[Aevos, TestClient], vault_key: bool, database_url: str
) -> None:
    app, client = served
    service = _headers(app, "acme", "service")
    reviewer = _headers(app, "acme", "reviewer")
    created = client.post(
        "/v1/runs", json={"workflow": "support.triage", "args": [TICKET]}, headers=service
    )
    assert created.status_code == 201, created.text
    assert_no_raw(created.text, "the start's response")
    run_id = created.json()["run_id"]
    result = _finish(app, run_id)
    assert result["queue"] == "billing"  # the workflow ran on the protected text
    assert_no_raw(json.dumps(result), "the run's result")

    for path in (
        f"/v1/runs/{run_id}",
        "/v1/runs",
        f"/v1/runs/{run_id}/steps",
        f"/v1/runs/{run_id}/lineage",
    ):
        response = client.get(path, headers=reviewer)
        assert response.status_code == 200, (path, response.text)
        assert_no_raw(response.text, path)
    stored = client.get(f"/v1/runs/{run_id}", headers=reviewer).json()["input"]["args"][0]
    email = stored["customer"]["email"]
    assert email.startswith("<EMAIL:tok_") if vault_key else email == "<EMAIL>"
    assert stored["id"] == "T-4711" and stored["customer"]["tier"] == "gold"
    # Asking for the originals without pii:reveal is refused, and the refusal audited.
    refused = client.get(f"/v1/runs/{run_id}", params={"reveal": "true"}, headers=reviewer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert_no_raw(refused.text, "the refusal")
    assert app.audit.query("acme", action="authz.denied")

    # The CLI reads the database directly, as a local admin: it holds no raw PII either.
    runner = CliRunner()
    for argv in (
        ["runs", "show", run_id, "--json"],
        ["runs", "list", "--json"],
        ["runs", "show", run_id],
    ):
        shown = runner.invoke(cli, ["--database-url", database_url, *argv])
        assert shown.exit_code == 0, shown.output
        assert_no_raw(shown.stdout, f"aevos {' '.join(argv)}")
    assert_no_raw(database_text(app), "the database")
    (started,) = app.audit.query("acme", action="run.started")
    assert started.data["pii"] == {
        "action": "tokenize" if vault_key else "redact",
        "found": {"CREDIT_CARD": 1, "EMAIL": 1, "IBAN": 1, "PHONE": 1},
    }


def test_an_admin_with_pii_reveal_reads_the_originals_audited(
    served: tuple[Aevos, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVOS_VAULT_KEY", Vault.generate_key())
    app, client = served
    created = client.post(
        "/v1/runs",
        json={"workflow": "support.triage", "args": [TICKET]},
        headers=_headers(app, "acme", "service"),
    )
    run_id = created.json()["run_id"]
    _finish(app, run_id)
    admin = _headers(app, "acme", "admin", "ann")
    plain = client.get(f"/v1/runs/{run_id}", headers=admin)
    assert_no_raw(plain.text, "an admin's plain read")  # revealing is asked for, never implied
    revealed = client.get(f"/v1/runs/{run_id}", params={"reveal": "true"}, headers=admin)
    assert revealed.status_code == 200, revealed.text
    ticket = revealed.json()["input"]["args"][0]
    assert ticket["customer"]["email"] == EMAIL
    # Canonical spellings come back (the vault keeps one form of each value).
    assert "4111111111111111" in ticket["text"] and "DE89370400440532013000" in ticket["text"]
    assert revealed.json()["output"]["ticket"]["customer"]["email"] == EMAIL
    (record,) = app.audit.query("acme", action="pii.revealed")
    assert record.run_id == run_id and record.subject == f"run:{run_id}"
    assert record.actor.startswith("admin:ann#") and record.data == {"tokens": 4}
    # Still nothing raw at rest: revealing wrote only its audit record.
    assert_no_raw(database_text(app), "the database after a reveal")

    # Another tenant's admin cannot reveal (nor read) the run.
    other = client.get(
        f"/v1/runs/{run_id}", params={"reveal": "true"}, headers=_headers(app, "globex", "admin")
    )
    assert other.status_code == 403
    assert_no_raw(other.text, "another tenant's refusal")
    assert len(app.audit.query("acme", action="pii.revealed")) == 1


def test_a_webhook_source_applies_its_own_data_policy(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVOS_VAULT_KEY", Vault.generate_key())
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    build(app)
    # The workflow's default would tokenise everything; this source redacts the customer
    # block only (its sender already masks the ticket text upstream).
    app.webhook(
        "crm",
        workflow="support.triage",
        tenant="acme",
        secret=SECRET,
        map=lambda event: {"ticket": event["ticket"]},
        data_policy=DataPolicy("redact", fields=["ticket.customer"]),
    )
    app.webhook(
        "helpdesk",
        workflow="support.triage",
        tenant="acme",
        secret=SECRET,
        map=lambda event: {"ticket": event["ticket"]},
    )
    try:
        with TestClient(create_app(app), raise_server_exceptions=False) as client:
            ids = {}
            for source in ("crm", "helpdesk"):
                body = json.dumps({"ticket": TICKET}).encode()
                sent = client.post(
                    f"/v1/events/{source}",
                    content=body,
                    headers={
                        "X-Aevos-Signature": sign(SECRET, body, event_id=f"e-{source}"),
                        "X-Aevos-Event-Id": f"e-{source}",
                    },
                )
                assert sent.status_code == 202, sent.text
                ids[source] = sent.json()["run_id"]
        crm = app.get_run(ids["crm"]).input["kwargs"]["ticket"]
        assert crm["customer"] == {"email": "<EMAIL>", "tier": "gold"}
        assert crm["text"] == TICKET["text"]  # outside the source's fields
        helpdesk = app.get_run(ids["helpdesk"]).input["kwargs"]["ticket"]
        assert helpdesk["customer"]["email"].startswith("<EMAIL:tok_")
        assert_no_raw(json.dumps(helpdesk), "the helpdesk run's input")
        actions = {
            r.run_id: r.data["pii"]["action"] for r in app.audit.query("acme", action="run.started")
        }
        assert actions == {ids["crm"]: "redact", ids["helpdesk"]: "tokenize"}
    finally:
        app.close()


class Crash(BaseException):
    pass


def test_the_workflow_sees_the_stored_form_on_first_run_and_on_replay(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVOS_VAULT_KEY", Vault.generate_key())
    seen: list[Any] = []
    crash = {"on": True}

    def make() -> Aevos:
        app = Aevos(database_url, lease_seconds=0.3, poll_interval=0.02, code_version="v")

        @app.step(name="note")
        def note(ctx: StepContext, ticket: dict[str, Any]) -> str:
            if crash["on"]:
                raise Crash()
            return "noted"

        @app.workflow(name="intake")
        def intake(ctx: WorkflowContext, ticket: dict[str, Any], *extra: str) -> str:
            seen.append((ticket, extra))
            return note(ctx, ticket)

        return app

    first = make()
    with pytest.raises(Crash):
        first.workflows["intake"].run(TICKET, f"cc {EMAIL}")
    crash["on"] = False
    second = make()
    (run,) = second.list_runs()
    worker = second.worker().start()
    try:
        assert second.handle(run.run_id).result(timeout=30) == "noted"
    finally:
        worker.stop()
        first.close()
        second.close()
    assert len(seen) == 2 and seen[0][0] == seen[1][0]  # the first execution and the replay
    assert list(seen[0][1]) == list(seen[1][1]) and seen[1][1][0].startswith("cc <EMAIL:tok_")
    assert seen[1][0] == run.input["args"][0]
    assert_no_raw(repr(seen), "what the workflow received")


def test_ctx_reveal_needs_the_policy_is_audited_and_not_recorded(
    app: Aevos, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVOS_VAULT_KEY", Vault.generate_key())
    sent: list[str] = []

    @app.step(name="send-mail")
    def send_mail(ctx: StepContext, to: str) -> str:
        sent.append(to)
        return "sent"

    @app.workflow(name="reply", data_policy=DataPolicy(reveal=True))
    def reply(ctx: WorkflowContext, customer: dict[str, str]) -> str:
        return send_mail(ctx, ctx.reveal(customer["email"]))

    @app.workflow(name="nosy")
    def nosy(ctx: WorkflowContext, customer: dict[str, str]) -> str:
        return str(ctx.reveal(customer["email"]))

    assert reply.options(tenant="acme").run({"email": EMAIL}) == "sent"
    assert sent == [EMAIL]
    (run,) = app.list_runs(workflow="reply")
    assert [(s.name, s.output) for s in app.list_steps(run.run_id)] == [
        ("aevos.reveal", {"tokens": 1}),
        ("send-mail", "sent"),
    ]
    (record,) = app.audit.query("acme", action="pii.revealed")
    assert record.run_id == run.run_id and record.actor == "system:workflow/reply"
    assert record.data == {"tokens": 1, "seq": 0}
    with pytest.raises(PiiAccessDeniedError, match="may not reveal"):
        nosy.run({"email": EMAIL})
    assert_no_raw(database_text(app), "the database")

    # An erased value cannot come back through a replay: it fails instead.
    app.vault.erase("acme")
    forked = app.fork(run.run_id, from_step=1)  # replays the recorded reveal
    worker = app.worker().start()
    try:
        with pytest.raises(RunFailedError, match="not in tenant"):
            forked.result(timeout=30)
    finally:
        worker.stop()
    assert sent == [EMAIL]
    assert PiiTokenNotFoundError.code in json.dumps(app.get_run(forked.run_id).error)


def test_keep_opts_out_and_the_opt_out_is_recorded(app: Aevos) -> None:
    @app.workflow(name="raw", data_policy="keep")
    def raw(ctx: WorkflowContext, text: str) -> str:
        return text

    assert raw.run(f"mail {EMAIL}") == f"mail {EMAIL}"
    assert app.list_runs()[0].input["args"] == [f"mail {EMAIL}"]
    app.close()  # writes the buffered audit record of the inline start
    (started,) = app.audit.query("default", action="run.started")
    assert started.data["pii"] == {"action": "keep", "found": {}}


def test_field_paths_ignore_and_kinds(app: Aevos, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AEVOS_VAULT_KEY", raising=False)
    policy = DataPolicy(fields=["ticket", "notes.*.body"], ignore=["ticket.id"], kinds=["EMAIL"])

    @app.workflow(name="paths", data_policy=policy)
    def paths(
        ctx: WorkflowContext, ticket: dict[str, Any], notes: list[dict[str, str]], other: str
    ) -> None:
        return None

    paths.run(
        {"id": "call 020 7946 0958", "from": EMAIL, "card": CARD},
        [{"body": f"cc {EMAIL}", "by": EMAIL}],
        other=EMAIL,
    )
    stored = app.list_runs()[0].input
    assert stored["args"][0] == {"id": "call 020 7946 0958", "from": "<EMAIL>", "card": CARD}
    assert stored["args"][1] == [{"body": "cc <EMAIL>", "by": EMAIL}]
    assert stored["kwargs"] == {"other": EMAIL}


def test_a_policy_that_cannot_be_applied_rejects_the_start(
    app: Aevos, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEVOS_VAULT_KEY", raising=False)

    @app.workflow(name="strict", data_policy="tokenize")
    def strict(ctx: WorkflowContext, text: str) -> str:
        return text

    with pytest.raises(VaultKeyError, match="AEVOS_VAULT_KEY is not set"):
        strict.start("no PII here, still refused: the key is missing")
    (rejected,) = app.list_runs()
    assert rejected.status is RunStatus.REJECTED and rejected.input is None
    assert rejected.error is not None and rejected.error["code"] == "vault_key_invalid"
    with pytest.raises(DefinitionError, match="data_policy"):
        app.workflow(name="typo", data_policy="tokenise")
    with pytest.raises(DefinitionError, match="data_policy"):
        Aevos("sqlite://", data_policy="none")


def test_child_runs_store_their_input_under_their_own_policy(
    app: Aevos, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEVOS_VAULT_KEY", raising=False)

    @app.workflow(name="child")
    def child(ctx: WorkflowContext, address: str) -> str:
        return address

    @app.workflow(name="parent")
    def parent(ctx: WorkflowContext, address: str) -> list[str]:
        queued = ctx.wait_child(ctx.start_child(child, EMAIL), timeout=30)
        return [child(ctx, f"to {EMAIL}"), queued]

    worker = app.worker().start()
    try:
        assert parent.run("nothing personal") == ["to <EMAIL>", "<EMAIL>"]
    finally:
        worker.stop()
    children = [r for r in app.list_runs() if r.workflow == "child"]
    assert sorted(r.input["args"][0] for r in children) == ["<EMAIL>", "to <EMAIL>"]


def test_the_scan_cache_remembers_only_clean_strings() -> None:
    import inspect

    from aevos.pii import Redactor
    from aevos.pii.datapolicy import _clean, protect_input

    redactor = Redactor()

    def wf(ctx: Any, ticket: dict[str, Any]) -> None: ...

    for _ in range(2):
        protected = protect_input(
            (TICKET,),
            {},
            inspect.signature(wf),
            DataPolicy("redact"),
            redactor=redactor,
            tenant="acme",
            vault=lambda: None,
        )
        assert protected.args[0]["customer"]["email"] == "<EMAIL>"  # found again, not skipped
    remembered = [text for _, text in _clean[redactor]]
    assert "gold" in remembered and "customer" in remembered
    assert_no_raw(repr(remembered), "the scan cache")
