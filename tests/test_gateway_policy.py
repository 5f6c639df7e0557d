"""Model calls pass policy on their own: the gateway applies the ``model_call`` policy of
each model to every call (``ctx.predict``, ``gateway.predict``, the HTTP API), records the
decision with the call, redacts what the decision names before the adapter sees it, and
refuses what it denies; ``bypass_policy`` is the audited opt-out.

The policy is the example ``model-access`` policy of ``examples/policies``; the models are a
small flavor that records what it was given, behind the real registry and audit log.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import Aevos, RunStatus, WorkflowContext
from aevos.audit import AuditRecord
from aevos.errors import (
    DefinitionError,
    ModelAccessDeniedError,
    PolicyInputError,
    PolicyNotFoundError,
    RunFailedError,
)
from aevos.models import flavors
from aevos.models.routing import Cascade
from aevos.models.types import Prediction
from aevos.pii import DataPolicy
from aevos.server import create_app

POLICIES = Path(__file__).resolve().parents[1] / "examples" / "policies"
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
TICKET = {
    "ticket": {"text": f"card {CARD} blocked, mail {EMAIL}", "subject": f"from {EMAIL}"},
    "customer": {"email": EMAIL, "tier": "gold"},
}

SEEN: dict[str, list[Any]] = {}
_lock = threading.Lock()


@dataclass
class _Recording:
    config: Mapping[str, Any]
    flavor: str = "pii-seen"

    def predict(self, input: Any) -> Prediction:
        with _lock:
            SEEN.setdefault(str(self.config["name"]), []).append(input)
        confidence = self.config.get("confidence", 0.9)
        return Prediction(label=str(self.config["name"]), confidence=confidence)


flavors.register_flavor("pii-seen", lambda artifact, config, trusted: _Recording(config))


def register(
    app: Aevos, name: str, *, tenant: str = "acme", provider: str | None = None, **config: Any
) -> None:
    config["name"] = name
    app.models.register(
        name,
        json.dumps(config, sort_keys=True).encode(),
        flavor="pii-seen",
        config=config,
        tags={"provider": provider} if provider else None,
        tenant=tenant,
        aliases=["champion"],
    )


@pytest.fixture
def gov(database_url: str) -> Iterator[Aevos]:
    SEEN.clear()
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=POLICIES
    )
    for tenant in ("acme", "bank-eu"):
        register(app, "gpt-triage", tenant=tenant, provider="external")  # an approved LLM
        register(app, "random-llm", tenant=tenant, provider="external")  # not approved
        register(app, "support-intent", tenant=tenant, confidence=0.2)  # local
    yield app
    app.close()


def audit_of(app: Aevos, tenant: str, *actions: str) -> list[AuditRecord]:
    app.gateway.flush()
    return [r for r in app.audit.query(tenant, limit=10_000) if r.action in actions]


def test_predict_is_decided_recorded_and_redacted_before_the_adapter(gov: Aevos) -> None:
    # The workflow keeps its input as sent, so only the gateway stands between the raw
    # ticket and the external model.
    @gov.workflow(name="triage", data_policy="keep")
    def triage(ctx: WorkflowContext, case: dict[str, Any]) -> Any:
        return ctx.predict("gpt-triage", case).label

    assert triage.options(tenant="acme").run(TICKET) == "gpt-triage"
    assert SEEN["gpt-triage"] == [
        {
            "ticket": {
                "text": "card <CREDIT_CARD> blocked, mail <EMAIL>",
                "subject": "from <EMAIL>",
            },
            "customer": {"email": "<EMAIL>", "tier": "gold"},
        }
    ]
    (run,) = gov.list_runs()
    decided, called = audit_of(gov, "acme", "policy.decided", "model.called")
    assert decided.subject == "policy:model-access@1" and decided.run_id == run.run_id
    assert decided.data["result"] == "allow" and decided.data["rule"] == "approved-llms"
    assert decided.data["redact"] == ["ticket.text", "ticket.subject", "customer.email"]
    assert decided.data["call_id"] == called.data["call_id"]  # linked to its call
    assert decided.data["seq"] == 0 and decided.actor == "system:workflow/triage"
    assert called.data["policy"] == {
        "name": "model-access",
        "version": 1,
        "result": "allow",
        "decision_id": decided.data["decision_id"],
    }
    # The recorded call is replayed without a second call or a second decision.
    forked = gov.fork(run.run_id, from_step=1)
    worker = gov.worker().start()
    try:
        assert forked.result(timeout=30) == "gpt-triage"
    finally:
        worker.stop()
    assert len(SEEN["gpt-triage"]) == 1
    assert len(audit_of(gov, "acme", "policy.decided")) == 1


def test_a_denied_call_is_refused_recorded_and_never_reaches_the_model(gov: Aevos) -> None:
    @gov.workflow(name="triage")
    def triage(ctx: WorkflowContext, model: str) -> Any:
        return ctx.predict(model, "text").label

    worker = gov.worker().start()
    try:
        # Data residency: bank-eu's data never goes to an external model.
        denied = gov.workflow_named("triage").options(tenant="bank-eu").start("gpt-triage")
        with pytest.raises(RunFailedError, match="denies this call"):
            denied.result(timeout=30)
    finally:
        worker.stop()
    assert "gpt-triage" not in SEEN
    run = gov.get_run(denied.run_id)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert run.error["code"] == "model_access_denied"
    decided, called = audit_of(gov, "bank-eu", "policy.decided", "model.called")
    assert decided.data["result"] == "deny" and decided.data["rule"] == "data-residency"
    assert called.data["outcome"] == "model_access_denied"
    assert called.data["policy"]["decision_id"] == decided.data["decision_id"]

    # Outside workflows: the same refusal, with the decision in the error.
    with pytest.raises(ModelAccessDeniedError, match="not approved") as refused:
        gov.gateway.predict("random-llm", "text", tenant="acme", actor="system:test")
    assert refused.value.policy == "model-access@1" and refused.value.decision_id
    with pytest.raises(ModelAccessDeniedError) as again:
        gov.gateway.predict("random-llm", "text", tenant="acme", actor="system:test")
    assert "random-llm" not in SEEN
    denials = [r for r in audit_of(gov, "acme", "policy.decided") if r.data["result"] == "deny"]
    # Each call is its own decision, with its own id (the same verdict, on the same input).
    assert [d.data["decision_id"] for d in denials] == [
        refused.value.decision_id,
        again.value.decision_id,
    ]
    assert denials[0].data["decision_id"] != denials[1].data["decision_id"]


def test_the_workflows_data_classification_reaches_the_policy(gov: Aevos) -> None:
    @gov.workflow(name="claims", data_policy=DataPolicy(classification="confidential"))
    def claims(ctx: WorkflowContext) -> Any:
        local = ctx.predict("support-intent", "x").label  # local models take anything
        try:
            ctx.predict("gpt-triage", "x")
        except ModelAccessDeniedError as exc:
            return [local, exc.code]
        return [local, "called"]

    assert claims.options(tenant="acme").run() == ["support-intent", "model_access_denied"]
    rules = [r.data["rule"] for r in audit_of(gov, "acme", "policy.decided")]
    assert rules == ["local-models", "no-confidential-data-to-external-llms"]


def test_the_bypass_is_explicit_and_audited(gov: Aevos) -> None:
    @gov.workflow(name="incident", data_policy="keep")
    def incident(ctx: WorkflowContext, text: str) -> Any:
        return ctx.predict("random-llm", text, bypass_policy="INC-42: vendor outage").label

    assert incident.options(tenant="acme").run(f"mail {EMAIL}") == "random-llm"
    assert SEEN["random-llm"] == [f"mail {EMAIL}"]  # no policy, so no redaction either
    bypassed, called = audit_of(gov, "acme", "policy.bypassed", "model.called")
    assert bypassed.data["bypassed"] == "INC-42: vendor outage"
    assert bypassed.data["call_id"] == called.data["call_id"]
    assert bypassed.actor == "system:workflow/incident"
    assert called.data["policy"] == {"bypassed": True}
    assert not audit_of(gov, "acme", "policy.decided")
    with pytest.raises(DefinitionError, match="bypass_policy"):
        gov.gateway.predict("random-llm", "x", tenant="acme", bypass_policy="")


def test_http_callers_are_decided_by_their_role_and_cannot_bypass(gov: Aevos) -> None:
    def headers(role: str) -> dict[str, str]:
        issued = gov.identity.create_token(tenant="acme", role=role, name=role, created_by="t")
        return {"Authorization": f"Bearer {issued.token}"}

    with TestClient(create_app(gov), raise_server_exceptions=False) as client:
        ok = client.post(
            "/v1/models/gpt-triage/predict", json={"input": TICKET}, headers=headers("operator")
        )
        assert ok.status_code == 200, ok.text
        refused = client.post(
            "/v1/models/random-llm/predict", json={"input": "x"}, headers=headers("operator")
        )
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "model_access_denied" and error["policy"] == "model-access@1"
    assert SEEN["gpt-triage"][0]["customer"]["email"] == "<EMAIL>"
    assert "random-llm" not in SEEN
    roles = {
        r.data["result"]: r.actor.split(":")[0] for r in audit_of(gov, "acme", "policy.decided")
    }
    assert roles == {"allow": "operator", "deny": "operator"}


def test_a_denied_cascade_stage_keeps_the_answer_below_it(gov: Aevos) -> None:
    gov.gateway.route("support-intent", cascade=[Cascade("random-llm", below_confidence=0.8)])
    result = gov.gateway.predict("support-intent", "x", tenant="acme", actor="system:test")
    assert (result.label, result.route) == ("support-intent", "primary")
    assert "random-llm" not in SEEN
    outcomes = {(r.data["route"], r.data["outcome"]) for r in audit_of(gov, "acme", "model.called")}
    assert outcomes == {("primary", "ok"), ("cascade:1", "model_access_denied")}


def test_without_policies_calls_go_through_undecided(app: Aevos) -> None:
    SEEN.clear()
    register(app, "gpt-triage", tenant="default", provider="external")
    assert app.gateway.predict("gpt-triage", f"mail {EMAIL}").label == "gpt-triage"
    assert SEEN["gpt-triage"] == [f"mail {EMAIL}"]
    app.gateway.flush()
    actions = [r.action for r in app.audit.query("default")]
    assert "model.called" in actions and "policy.decided" not in actions
    # Naming a policy for a model in an app without policies is an error, not a free pass.
    app.gateway.set_policy("gpt-triage", "llm-access")
    with pytest.raises(PolicyNotFoundError, match="no policies configured"):
        app.gateway.predict("gpt-triage", "x")
    assert len(SEEN["gpt-triage"]) == 1


def test_a_named_policy_must_be_a_model_call_policy_that_can_decide(
    database_url: str, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    (policies / "strict.yaml").write_text(
        "policy: strict\nversion: 1\nkind: model_call\n"
        "input: {model.name: string, purpose: string}\n"
        "default: {decision: allow, reason: ok}\n"
    )
    app = Aevos(database_url, policies=policies)
    try:
        SEEN.clear()
        register(app, "support-intent", tenant="default")
        app.gateway.set_policy("support-intent", "claims-auto-approve")
        with pytest.raises(DefinitionError, match="kind: model_call"):
            app.gateway.predict("support-intent", "x")
        # A policy reading a field the gateway does not provide refuses every call.
        app.gateway.set_policy("support-intent", "strict")
        with pytest.raises(PolicyInputError, match="purpose"):
            app.gateway.predict("support-intent", "x")
        assert "support-intent" not in SEEN
    finally:
        app.close()


def test_every_call_gets_its_own_decision_and_python_policies_decide_each_time(
    database_url: str,
) -> None:
    from aevos.policy import PolicySet, Verdict, python_policy

    asked: list[str] = []

    @python_policy("office-hours", version=1, kind="model_call", input={"model.name": "string"})
    def office_hours(input: Mapping[str, Any]) -> Verdict:
        asked.append(input["model.name"])  # stands in for a clock: not a function of input
        return Verdict("allow" if len(asked) < 3 else "deny", f"call {len(asked)}")

    app = Aevos(database_url, policies=PolicySet([office_hours]))
    try:
        SEEN.clear()
        register(app, "gpt-triage", tenant="default", provider="external")
        register(app, "support-intent", tenant="default")
        app.gateway.set_policy("gpt-triage", "office-hours")
        app.gateway.predict("gpt-triage", "a")
        app.gateway.predict("gpt-triage", "b")
        with pytest.raises(ModelAccessDeniedError, match="call 3"):
            app.gateway.predict("gpt-triage", "c")
        assert asked == ["gpt-triage"] * 3
        # No model-access policy in this app: other models are called undecided.
        app.gateway.predict("support-intent", "d")
        decided = audit_of(app, "default", "policy.decided")
        assert [d.data["result"] for d in decided] == ["allow", "allow", "deny"]
        assert len({d.data["decision_id"] for d in decided}) == 3
    finally:
        app.close()
