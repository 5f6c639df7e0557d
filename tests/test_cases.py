"""Kept cases (aevos.cases) on both backends: what a model or a person saw, kept after the
data policy, encrypted per tenant, matched to its audit digest, retained and forgotten."""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aevos import Aevos, StepContext, WorkflowContext
from aevos.cases import KeptCase
from aevos.errors import CaseInputError, CaseNotFoundError, CorruptDatabaseError
from aevos.pii import Vault
from aevos.pii.datapolicy import tokens_in
from aevos.public_data import data_file
from aevos.records.task import Field

EMAIL = "jane.roe@example.com"
TEXT = f"My new card has still not arrived, write to {EMAIL}"
INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked")
DAY = 86_400.0


@pytest.fixture(scope="module")
def intent_model() -> bytes:
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    seen: dict[str, int] = {}
    texts, labels = [], []
    with (data_file("banking77") / "train.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in INTENTS and seen.get(row["category"], 0) < 25:
                seen[row["category"]] = seen.get(row["category"], 0) + 1
                texts.append(row["text"])
                labels.append(row["category"])
    return dump_sklearn(train_text_classifier(texts, labels))


def make_app(url: str, model: bytes, **options: Any) -> Aevos:
    app = Aevos(url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, **options)
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    for tenant in ("acme", "beta"):
        app.models.register(
            "intent",
            model,
            flavor="sklearn",
            signature={"type": "string"},
            tenant=tenant,
            aliases=["champion"],
        )
    return app


@pytest.fixture
def kept(database_url: str, intent_model: bytes) -> Iterator[Aevos]:
    app = make_app(database_url, intent_model)
    yield app
    app.close()


def triage(app: Aevos, fail_once: list[bool] | None = None) -> Any:
    @app.step()
    def route(ctx: StepContext, label: str) -> str:
        if fail_once:
            fail_once.pop()
            raise RuntimeError("the ticket system is down")
        return label

    @app.workflow(name="triage")
    def flow(ctx: WorkflowContext, text: str) -> dict[str, Any]:
        prediction = ctx.predict("intent", text)
        return {"queue": route(ctx, prediction.label), "call_id": prediction.call_id}

    return flow


def model_called(app: Aevos, tenant: str, **filters: Any) -> list[dict[str, Any]]:
    return [r.data for r in app.audit.query(tenant, action="model.called", **filters)]


def test_ctx_predict_keeps_the_tokenised_input_with_its_audit_digest(kept: Aevos) -> None:
    app = kept
    result = triage(app).options(tenant="acme").run(TEXT)
    (case,) = app.cases.find(tenant="acme")
    assert case.case_id == result["call_id"] and case.call_id == result["call_id"]
    assert case.kind == "model_call" and case.model == "intent" and case.version == 1
    # What the workflow (and so the model) saw is the run's stored input: tokenised.
    assert EMAIL not in case.input and "<EMAIL:tok_" in case.input
    (record,) = model_called(app, "acme")
    assert record["call_id"] == case.case_id
    assert record["input_sha256"] == case.input_digest == case.model_input_digest
    assert "case_sha256" not in record
    assert case.run_id is not None and case.seq == 0
    assert case.expires_at == pytest.approx(case.created_at + 90 * DAY)
    assert app.cases.get(case.case_id, tenant="acme") == case
    assert app.cases.open_many("acme", [case.case_id, "nope"]) == {case.case_id: case}


def test_a_resumed_run_replays_the_call_and_keeps_no_second_case(kept: Aevos) -> None:
    app = kept
    flow = triage(app, fail_once=[True])
    handle = flow.options(tenant="acme").start(TEXT)
    worker = app.worker().start()
    try:
        with pytest.raises(Exception, match="ticket system is down"):
            handle.result(timeout=30)
        app.resume(handle.run_id).result(timeout=30)
    finally:
        worker.stop()
    assert len(app.cases.find(tenant="acme", run_id=handle.run_id)) == 1
    assert len(model_called(app, "acme", run_id=handle.run_id)) == 1


def test_kept_input_is_encrypted_at_rest_and_bound_to_its_tenant(kept: Aevos) -> None:
    app = kept
    triage(app).options(tenant="acme").run("I lost my card yesterday evening in Berlin")
    (case,) = app.cases.find(tenant="acme")
    with app.store.reading() as uow:
        row = uow.cases.get("acme", case.case_id)
    assert row is not None
    for plain in (b"Berlin", b"lost my card", b"yesterday"):
        assert plain not in row.ciphertext
    with pytest.raises(CaseNotFoundError) as missing:
        app.cases.get(case.case_id, tenant="beta")
    assert missing.value.code == "case_not_found"
    assert app.cases.find(tenant="beta") == []
    # A row copied into another tenant (or under another id) does not decrypt there.
    with app.store.transaction() as uow:
        uow.cases.add([dataclasses.replace(row, tenant="beta")])
        uow.cases.add([dataclasses.replace(row, case_id="moved")])
    with pytest.raises(CorruptDatabaseError):
        app.cases.get(case.case_id, tenant="beta")
    with pytest.raises(CorruptDatabaseError):
        app.cases.get("moved", tenant="acme")


def test_gateway_calls_outside_workflows_are_kept_by_the_background_recorder(
    kept: Aevos,
) -> None:
    app = kept
    plain = app.gateway.predict("intent", "What is the exchange rate today?", tenant="acme")
    raw = app.gateway.predict("intent", TEXT, tenant="acme")
    app.gateway.flush()
    cases = app.cases.open_many("acme", [plain.call_id, raw.call_id])
    records = {r["call_id"]: r for r in model_called(app, "acme")}
    assert cases[plain.call_id].input == "What is the exchange rate today?"
    assert records[plain.call_id]["input_sha256"] == cases[plain.call_id].input_digest
    # The caller handed the model raw PII: the case keeps it tokenised (the app's data
    # policy) and the audit record names both digests.
    kept_raw = cases[raw.call_id]
    assert EMAIL not in kept_raw.input and "<EMAIL:tok_" in kept_raw.input
    assert records[raw.call_id]["input_sha256"] == raw.input_digest
    assert kept_raw.model_input_digest == raw.input_digest
    assert records[raw.call_id]["case_sha256"] == kept_raw.input_digest != raw.input_digest
    assert kept_raw.run_id is None and kept_raw.seq is None


def _policies(tmp_path: Path, cases: str) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "model-access.yaml").write_text(
        "policy: model-access\nversion: 1\nkind: model_call\n"
        "default: {decision: allow, reason: every caller may}\n" + cases
    )
    return folder


@pytest.mark.parametrize(
    ("declared", "expected_days"),
    [("cases: {keep: false}\n", None), ("cases: {retention_days: 7}\n", 7)],
)
def test_the_model_call_policy_decides_keeping_and_retention(
    database_url: str, intent_model: bytes, tmp_path: Path, declared: str, expected_days: int | None
) -> None:
    app = make_app(database_url, intent_model, policies=_policies(tmp_path, declared))
    try:
        result = triage(app).options(tenant="acme").run(TEXT)
        found = app.cases.find(tenant="acme")
        assert len(model_called(app, "acme")) == 1  # the call is recorded either way
        if expected_days is None:
            assert found == []
            with pytest.raises(CaseNotFoundError):
                app.cases.get(result["call_id"], tenant="acme")
        else:
            (case,) = found
            assert case.expires_at == pytest.approx(case.created_at + expected_days * DAY)
    finally:
        app.close()


def test_a_bad_cases_declaration_is_a_load_error_at_its_line(tmp_path: Path) -> None:
    from aevos.errors import PolicyLoadError
    from aevos.policy import PolicySet

    folder = _policies(tmp_path, "cases: {keep: false, retention_days: -3}\n")
    with pytest.raises(PolicyLoadError, match="retention_days"):
        PolicySet.load(folder)


def test_expired_cases_are_swept_and_the_sweep_is_audited(kept: Aevos) -> None:
    app = kept
    triage(app).options(tenant="acme").run(TEXT)
    app.gateway.predict("intent", "my pin is blocked", tenant="beta")
    app.gateway.flush()
    assert app.cases.sweep_expired(now=time.time() + DAY) == 0
    assert app.cases.sweep_expired(now=time.time() + 91 * DAY, batch=1) == 1
    assert app.cases.sweep_expired(now=time.time() + 91 * DAY, batch=1) == 1
    assert app.cases.sweep_expired(now=time.time() + 91 * DAY) == 0
    assert app.cases.find(tenant="acme") == [] and app.cases.find(tenant="beta") == []
    expired = [r.data for t in ("acme", "beta") for r in app.audit.query(t, action="case.expired")]
    assert [e["deleted"] for e in expired] == [1, 1]


def test_a_worker_sweeps_expired_cases_between_claims(kept: Aevos) -> None:
    app = kept
    app.gateway.predict("intent", "my pin is blocked", tenant="acme")
    app.gateway.flush()
    (case,) = app.cases.find(tenant="acme")
    with app.store.transaction() as uow:  # its retention ended a moment ago
        row = uow.cases.get("acme", case.case_id)
        assert row is not None
        uow.cases.delete("acme", [case.case_id])
        uow.cases.add([dataclasses.replace(row, expires_at=time.time() - 1.0)])
    worker = app.worker().start()
    try:
        _wait(lambda: not app.cases.find(tenant="acme"))
    finally:
        worker.stop()
    (expired,) = app.audit.query("acme", action="case.expired")
    assert expired.data["deleted"] == 1


def _ask(app: Aevos) -> Callable[[str], str]:
    @app.workflow(name="review")
    def review(ctx: WorkflowContext, text: str) -> str:
        prediction = ctx.predict("intent", text)
        decision = ctx.ask_human(
            "Which intent?",
            form=[Field.choice("intent", list(INTENTS))],
            case={"text": text, "customer": EMAIL},
            prediction=prediction,
        )
        return str(decision["intent"])

    def start(text: str) -> str:
        return review.options(tenant="acme").start(text).run_id

    return start


def _wait(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15.0
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_a_task_keeps_its_case_linked_to_the_suggesting_call(kept: Aevos) -> None:
    app = kept
    run_id = _ask(app)(TEXT)
    worker = app.worker().start()
    try:
        _wait(lambda: bool(app.tasks.list(run_id=run_id, tenant="acme")))
    finally:
        worker.stop()
    (task,) = app.tasks.list(run_id=run_id, tenant="acme")
    case = app.cases.get("task:" + task.task_id, tenant="acme")
    assert case.kind == "task" and case.task_id == task.task_id
    assert case.call_id == task.call_id and case.model == "intent" and case.version == 1
    assert app.cases.get(task.call_id or "", tenant="acme").kind == "model_call"
    assert EMAIL not in str(case.input) and case.input["customer"].startswith("<EMAIL:tok_")


def test_cases_are_forgotten_by_run_and_by_data_subject_audited(kept: Aevos) -> None:
    app = kept
    flow = triage(app)
    first = flow.options(tenant="acme").run(TEXT)
    flow.options(tenant="acme").run(f"Please block my card, {EMAIL} here")
    flow.options(tenant="acme").run("What is the exchange rate?")
    by_call = {c.case_id: c for c in app.cases.find(tenant="acme")}
    (token,) = tokens_in(by_call[first["call_id"]].input)
    other_run = next(c.run_id for c in by_call.values() if not tokens_in(c.input))
    assert app.cases.forget_subject(token, tenant="acme", actor="admin:dpo") == 2
    assert app.cases.forget_subject(f"<EMAIL:{token}>", tenant="acme") == 0
    assert app.cases.forget_run(str(other_run), tenant="acme") == 1
    assert app.cases.find(tenant="acme") == []
    events = [r.to_dict() for r in app.audit.query("acme", action="case.forgotten")]
    assert [e["data"]["deleted"] for e in events] == [2, 0, 1]
    assert events[0]["actor"] == "admin:dpo" and events[0]["data"]["subject"] == token
    assert "arrived" not in str(events)
    for bad in ("jane.roe@example.com", "tok_123", ""):
        with pytest.raises(CaseInputError):
            app.cases.forget_subject(bad, tenant="acme")


def test_bad_reads_are_refused_with_a_code(kept: Aevos) -> None:
    for limit in (0, 1001, True):
        with pytest.raises(CaseInputError) as refused:
            kept.cases.find(tenant="acme", limit=limit)
        assert refused.value.code == "case_input_invalid"
    with pytest.raises(CaseInputError):
        kept.cases.get("x" * 300, tenant="acme")


def test_without_a_vault_key_nothing_is_kept_and_one_warning_says_why(
    database_url: str,
    intent_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("AEVOS_VAULT_KEY", raising=False)
    app = Aevos(database_url, lease_seconds=2.0, poll_interval=0.02)
    try:
        app.models.register(
            "intent",
            intent_model,
            flavor="sklearn",
            signature={"type": "string"},
            aliases=["champion"],
        )
        flow = triage(app)
        with caplog.at_level(logging.WARNING, logger="aevos.cases"):
            flow.run("my card has not arrived")
            flow.run("my pin is blocked")
        assert app.cases.not_kept == 2
        warnings = [r for r in caplog.records if r.name == "aevos.cases"]
        assert len(warnings) == 1 and "AEVOS_VAULT_KEY" in warnings[0].getMessage()
        assert len(model_called(app, "default")) == 2
        with app.store.reading() as uow:
            assert uow.cases.find("default") == []
    finally:
        app.close()


def test_a_kept_case_serialises_without_its_input_on_request() -> None:
    case = KeptCase(
        "c", "acme", "task", None, None, None, None, None, "t", {"a": 1}, "d", 1.0, None
    )
    assert "input" not in case.to_dict(include_input=False)
    assert case.to_dict()["input"] == {"a": 1}


# -- HTTP and CLI ----------------------------------------------------------------------------


@pytest.fixture
def served(
    database_url: str, intent_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Aevos, Any]]:
    from fastapi.testclient import TestClient

    from aevos.server import create_app

    # The key from the environment, as a server (and the CLI) would have it.
    monkeypatch.setenv("AEVOS_VAULT_KEY", Vault.generate_key())
    app = Aevos(database_url, lease_seconds=2.0, poll_interval=0.02)
    for tenant in ("acme", "beta"):
        app.models.register(
            "intent",
            intent_model,
            flavor="sklearn",
            signature={"type": "string"},
            tenant=tenant,
            aliases=["champion"],
        )
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _bearer(app: Aevos, role: str, tenant: str = "acme") -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def test_http_lists_reads_reveals_and_forgets_cases_by_permission(
    served: tuple[Aevos, Any],
) -> None:
    app, client = served
    result = triage(app).options(tenant="acme").run(TEXT)
    call_id = result["call_id"]
    operator, auditor = _bearer(app, "operator"), _bearer(app, "auditor")
    admin, reviewer = _bearer(app, "admin"), _bearer(app, "reviewer")

    listed = client.get("/v1/cases", params={"model": "intent"}, headers=operator)
    assert listed.status_code == 200
    (row,) = listed.json()
    assert row["case_id"] == call_id and "input" not in row
    assert client.get("/v1/cases", params={"since": 1e10}, headers=operator).json() == []
    shown = client.get(f"/v1/cases/{call_id}", headers=operator).json()
    assert shown["input_encoding"] == "json" and "<EMAIL:tok_" in shown["input"]
    assert EMAIL not in shown["input"]

    refused = client.get(f"/v1/cases/{call_id}", params={"reveal": "true"}, headers=operator)
    assert refused.status_code == 403
    revealed = client.get(f"/v1/cases/{call_id}", params={"reveal": "true"}, headers=auditor)
    assert revealed.status_code == 200 and EMAIL in revealed.json()["input"]
    (audited,) = app.audit.query("acme", action="pii.revealed")
    assert audited.subject == f"case:{call_id}" and audited.data["tokens"] == 1
    assert client.get("/v1/cases", headers=reviewer).status_code == 403

    missing = client.get("/v1/cases/nope", headers=operator)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "case_not_found"
    beta = client.get(f"/v1/cases/{call_id}", headers=_bearer(app, "admin", "beta"))
    assert beta.status_code == 404  # another tenant's case is not named, let alone shown
    for limit in (0, 5000):
        bad = client.get("/v1/cases", params={"limit": limit}, headers=operator)
        assert bad.status_code == 422

    (token,) = tokens_in(shown["input"])
    assert (
        client.delete("/v1/cases", params={"subject": token}, headers=operator).status_code == 403
    )
    both = client.delete("/v1/cases", params={"subject": token, "run_id": "r"}, headers=admin)
    assert both.status_code == 422 and both.json()["error"]["code"] == "case_input_invalid"
    not_token = client.delete("/v1/cases", params={"subject": EMAIL}, headers=admin)
    assert not_token.status_code == 422
    gone = client.delete("/v1/cases", params={"subject": token}, headers=admin)
    assert gone.status_code == 200 and gone.json() == {"deleted": 1}
    assert client.get(f"/v1/cases/{call_id}", headers=operator).status_code == 404
    (forgotten,) = app.audit.query("acme", action="case.forgotten")
    assert forgotten.actor.startswith("admin:") and forgotten.data["deleted"] == 1


def test_cli_lists_shows_and_forgets_cases_with_permissions(
    served: tuple[Aevos, Any], database_url: str
) -> None:
    import json

    from typer.testing import CliRunner

    from aevos.cli import cli

    app, _ = served
    result = triage(app).options(tenant="acme").run(TEXT)
    run_id = app.cases.get(result["call_id"], tenant="acme").run_id
    runner = CliRunner()

    def aevos(*args: str) -> Any:
        return runner.invoke(cli, ["--database-url", database_url, *args])

    listed = aevos("cases", "list", "--tenant", "acme", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["case_id"] == result["call_id"]
    shown = aevos("cases", "show", result["call_id"], "--tenant", "acme")
    assert shown.exit_code == 0 and "<EMAIL:tok_" in json.loads(shown.stdout)["input"]
    reviewer = app.identity.create_token(
        tenant="acme", role="reviewer", name="r", created_by="test"
    ).token
    denied = aevos("cases", "show", result["call_id"], "--token", reviewer)
    assert denied.exit_code == 2 and "[forbidden]" in denied.stderr
    missing = aevos("cases", "show", "nope", "--tenant", "acme")
    assert missing.exit_code == 2 and "[case_not_found]" in missing.stderr
    bad = aevos("cases", "list", "--tenant", "acme", "--limit", "0")
    assert bad.exit_code == 2 and "[case_input_invalid]" in bad.stderr
    forgot = aevos("cases", "forget", "--tenant", "acme", "--run", str(run_id))
    assert forgot.exit_code == 0 and "1 case(s) forgotten" in forgot.stdout
    (event,) = app.audit.query("acme", action="case.forgotten")
    assert ":cli:" in event.actor and event.data == {"run_id": run_id, "deleted": 1}


def test_the_cases_package_exports_a_small_pinned_api() -> None:
    import aevos.cases

    assert sorted(aevos.cases.__all__) == sorted(
        ["DEFAULT_LIMIT", "MAX_LIMIT", "KeptCase", "KeptCases", "NewCase"]
    )
