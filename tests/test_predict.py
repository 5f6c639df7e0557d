"""A real model end to end: registered, routed by the gateway, called from a workflow
(durable, audited, in the lineage) and over HTTP (authorised, tenant-scoped)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import Aevos, AuthorizationError, ModelCard, StepContext, WorkflowContext
from aevos.public_data import data_file
from aevos.server import create_app

DATA = data_file("banking77")
INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked")


def _rows(name: str, per_intent: int) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    rows = []
    with (DATA / name).open(newline="") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if label in INTENTS and seen.get(label, 0) < per_intent:
                seen[label] = seen.get(label, 0) + 1
                rows.append((row["text"], label))
    return rows


@pytest.fixture
def served(database_url: str) -> Iterator[Aevos]:
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    train = _rows("train.csv", 40)
    pipeline = train_text_classifier([t for t, _ in train], [lbl for _, lbl in train])
    app = Aevos(database_url, lease_seconds=2.0, poll_interval=0.02)
    version = app.models.register(
        "support-intent",
        dump_sklearn(pipeline),
        flavor="sklearn",
        card=ModelCard(intended_use="route support tickets", training_data="banking77/4 intents"),
        signature={"type": "string"},
        tenant="acme",
        aliases=["champion"],
    )
    assert version.version == 1
    yield app
    app.close()


def test_ctx_predict_is_durable_audited_and_in_the_lineage(served: Aevos) -> None:
    app = served
    calls: list[str] = []

    @app.step()
    def route(ctx: StepContext, queue: str) -> str:
        calls.append(queue)
        return queue

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, text: str) -> dict[str, Any]:
        prediction = ctx.predict("support-intent", text)
        return {"queue": route(ctx, prediction.label), "confidence": prediction.confidence}

    handle = triage.options(tenant="acme").start("I still have not received my new card")
    worker = app.worker().start()
    try:
        result = handle.result(timeout=30)
    finally:
        worker.stop()
    assert result["queue"] == "card_arrival" and 0 < result["confidence"] <= 1
    (call,) = app.audit.query("acme", run_id=handle.run_id, action="model.called")
    assert call.action == "model.called"
    assert call.subject is not None and "support-intent@1" in call.subject
    assert "received my new card" not in str(call.to_dict())  # only the input's digest
    auditor = app.identity.create_token(tenant="acme", role="auditor", name="a", created_by="t")
    lineage = app.access.runs.lineage(auditor.principal, handle.run_id)
    assert len(lineage.model_calls) == 1 and lineage.steps[0].name.endswith("support-intent")


def test_predict_over_http_is_authorised_and_tenant_scoped(served: Aevos) -> None:
    app = served
    svc = app.identity.create_token(tenant="acme", role="service", name="svc", created_by="t")
    other = app.identity.create_token(tenant="globex", role="service", name="g", created_by="t")
    reviewer = app.identity.create_token(tenant="acme", role="reviewer", name="r", created_by="t")
    test = _rows("test.csv", 10)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        correct = 0
        for text, label in test:
            response = client.post(
                "/v1/models/support-intent/predict",
                json={"input": text},
                headers={"Authorization": f"Bearer {svc.token}"},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["version"] == "support-intent@1" and body["route"] == "primary"
            correct += body["label"] == label
        assert correct / len(test) >= 0.7
        missing = client.post(
            "/v1/models/support-intent/predict",
            json={"input": "hello"},
            headers={"Authorization": f"Bearer {other.token}"},
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        denied = client.post(
            "/v1/models/support-intent/predict",
            json={"input": "hello"},
            headers={"Authorization": f"Bearer {reviewer.token}"},
        )
        assert denied.status_code == 403
        bad = client.post(
            "/v1/models/support-intent/predict",
            json={"input": {"not": "a string"}},
            headers={"Authorization": f"Bearer {svc.token}"},
        )
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "model_input_invalid"


def _evidence(candidate: float, samples: int) -> dict[str, Any]:
    return {
        "candidate": {"accuracy": candidate, "calibration_error": 0.05, "samples": samples},
        "champion": {"accuracy": 0.80, "calibration_error": 0.05},
    }


def test_promotion_passes_the_policy_gate(served: Aevos) -> None:
    from aevos import PolicySet

    app = served
    app._policies = PolicySet.load(Path(__file__).resolve().parents[1] / "examples" / "policies")
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    train = _rows("train.csv", 20)
    candidate = app.models.register(
        "support-intent",
        dump_sklearn(train_text_classifier([t for t, _ in train], [lbl for _, lbl in train])),
        flavor="sklearn",
        tenant="acme",
    )
    ident, access = app.identity, app.access
    ops = ident.create_token(tenant="acme", role="operator", name="ops", created_by="t").principal
    lead = ident.create_token(tenant="acme", role="admin", name="lead", created_by="t").principal
    reviewer = ident.create_token(tenant="acme", role="reviewer", name="r", created_by="t")

    worse = access.models.promote(
        ops, "support-intent", candidate.version, evidence=_evidence(0.70, 5000)
    )
    assert worse.decision.result == "deny" and worse.promoted is None
    unsure = access.models.promote(
        ops, "support-intent", candidate.version, evidence=_evidence(0.81, 600)
    )
    assert unsure.needs_approval
    assert app.models.aliases("support-intent", tenant="acme")["champion"] == 1
    with pytest.raises(AuthorizationError):
        access.models.promote(
            ops,
            "support-intent",
            candidate.version,
            evidence=_evidence(0.81, 600),
            approved_by=ops,  # no approving oneself
        )
    with pytest.raises(AuthorizationError):
        access.models.promote(
            reviewer.principal, "support-intent", 1, evidence=_evidence(0.9, 5000)
        )
    approved = access.models.promote(
        ops, "support-intent", candidate.version, evidence=_evidence(0.81, 600), approved_by=lead
    )
    assert approved.promoted is not None and approved.promoted.version == candidate.version
    rolled = app.models.rollback("support-intent", tenant="acme", by=ops.actor)
    assert rolled.version == 1
    clear = access.models.promote(
        ops, "support-intent", candidate.version, evidence=_evidence(0.85, 5000)
    )
    assert clear.decision.result == "allow" and clear.promoted is not None
    actions = [
        r.action for r in app.audit.query("acme") if r.action.startswith(("policy", "model"))
    ]
    # Six decisions: the approved promotion is judged again when it is approved.
    assert actions.count("policy.decided") == 6 and actions.count("model.promoted") == 2
    assert "model.rolled_back" in actions
