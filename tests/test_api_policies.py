"""Policies over HTTP: list, show, and evaluate with an explanation (``aevos policy explain``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import Aevos, PolicySet
from aevos.server import create_app

POLICIES = Path(__file__).resolve().parents[1] / "examples" / "policies"


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, policies=POLICIES)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def _claim(**changes: Any) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "prediction": {"label": "approve", "confidence": 0.99},
        "claim": {"amount": 1200, "currency": "EUR", "prior_claims": 0},
    }
    claim.update(changes)
    return claim


def test_list_and_show_policies(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    reviewer = _token(app, "acme", "reviewer")
    loaded = PolicySet.load(POLICIES)
    listed = client.get("/v1/policies", headers=reviewer)
    assert listed.status_code == 200, listed.text
    assert [(p["name"], p["version"], p["kind"]) for p in listed.json()] == [
        (p.name, p.version, p.kind) for p in loaded
    ]
    by_name = {p["name"]: p for p in listed.json()}
    assert by_name["promotion-gate"]["rules"] == 3 and by_name["promotion-gate"]["inputs"] == 7
    assert by_name["refund-limit"]["rules"] is None  # a Python policy

    gate = client.get("/v1/policies/promotion-gate", headers=reviewer).json()
    assert (gate["version"], gate["kind"], gate["language"]) == (2, "promotion", "yaml")
    assert [r["name"] for r in gate["rules"]] == [
        "worse-than-champion",
        "too-few-samples",
        "clear-improvement",
    ]
    assert gate["rules"][0] == {
        "name": "worse-than-champion",
        "line": loaded.get("promotion-gate").rules[0].line,
        "when": "candidate.accuracy < champion.accuracy - 0.01",
        "decision": "deny",
        "reason": "the candidate is less accurate than the champion",
    }
    assert gate["default"]["decision"] == "approve"
    assert {"path": "champion.accuracy_stderr", "type": "number", "required": False} in gate[
        "inputs"
    ]
    assert gate["source"] == (POLICIES / "promotion-gate.yaml").read_text()
    assert gate["defined_at"] == f"promotion-gate.yaml:{loaded.get('promotion-gate').line}"
    assert str(POLICIES) not in gate["defined_at"]  # no server paths

    refund = client.get("/v1/policies/refund-limit", headers=reviewer).json()
    assert refund["language"] == "python" and refund["rules"] is None
    assert "def refund_limit" in refund["source"]
    pinned = client.get("/v1/policies/promotion-gate", params={"version": 2}, headers=reviewer)
    assert pinned.status_code == 200
    for path, params in [
        ("/v1/policies/nope", {}),
        ("/v1/policies/promotion-gate", {"version": 9}),
    ]:
        missing = client.get(path, params=params, headers=reviewer)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "policy_not_found"


def test_a_changed_file_is_not_shown_as_the_loaded_source(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "gate.yaml").write_text(
        "policy: gate\nversion: 1\nkind: action\ndefault: {decision: allow, reason: ok}\n"
    )
    app = Aevos(database_url, policies=tmp_path)
    with TestClient(create_app(app)) as client:
        auditor = _token(app, "acme", "auditor")
        assert (
            client.get("/v1/policies/gate", headers=auditor)
            .json()["source"]
            .startswith("policy: gate")
        )
        (tmp_path / "gate.yaml").write_text("policy: gate\nversion: 1\n# edited\n")
        assert client.get("/v1/policies/gate", headers=auditor).json()["source"] is None
    app.close()


def test_evaluate_explains_the_decision(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    response = client.post(
        "/v1/policies/claims-auto-approve/evaluate", json={"input": _claim()}, headers=ops
    )
    assert response.status_code == 200, response.text
    result = response.json()
    expected = PolicySet.load(POLICIES).explain("claims-auto-approve", _claim())
    decision = result["decision"]
    assert (decision["result"], decision["rule"], decision["allowed"]) == (
        "allow",
        "confident-and-small",
        True,
    )
    assert decision["input_digest"] == expected.decision.input_digest
    assert decision["policy_digest"] == expected.decision.policy_digest
    assert result["values"]["claim.amount"] == 1200 and result["values"]["customer.flagged"] is None
    assert [(r["rule"], r["matched"]) for r in result["rules"]] == [
        ("flagged-customer", False),
        ("too-large", False),
        ("confident-and-small", True),
    ]
    steps = {s["text"]: s["value"] for s in result["rules"][2]["steps"]}
    assert steps["prediction.confidence >= 0.97"] is True
    assert "MATCHED, decides" in result["explanation"]
    assert result["explanation"] == expected.render()

    large = client.post(
        "/v1/policies/claims-auto-approve/evaluate",
        json={"input": _claim(claim={"amount": 90000, "currency": "EUR", "prior_claims": 0})},
        headers=ops,
    ).json()
    assert (large["decision"]["result"], large["decision"]["rule"]) == ("review", "too-large")
    python = client.post(
        "/v1/policies/refund-limit/evaluate",
        json={
            "input": {
                "refund": {"amount": 20.0, "reason_code": "late"},
                "customer": {"tier": "gold", "chargebacks": 0},
            },
            "version": 1,
        },
        headers=ops,
    ).json()
    assert python["decision"]["result"] == "allow" and python["note"]
    # What-if evaluations enforce nothing and record nothing.
    assert not [r for r in app.audit.query("acme") if r.action == "policy.decided"]


@pytest.mark.parametrize(
    ("input", "field", "mentioned"),
    [
        (
            _claim(claim={"currency": "EUR", "prior_claims": 0}),
            "input.claim.amount",
            "claim.amount",
        ),
        (
            _claim(claim={"amount": "1200", "currency": "EUR", "prior_claims": 0}),
            "input.claim.amount",
            "claim.amount",
        ),
        (
            _claim(claim={"amount": 1, "currency": "EUR", "prior_claims": 0.5}),
            "input.claim.prior_claims",
            "claim.prior_claims",
        ),
        (_claim(prediction="high"), "input.prediction.label", "prediction"),
        (_claim(customer={"flagged": "yes"}), "input.customer.flagged", "customer.flagged"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    served: tuple[Aevos, TestClient], input: dict[str, Any], field: str, mentioned: str
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    response = client.post(
        "/v1/policies/claims-auto-approve/evaluate", json={"input": input}, headers=ops
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "policy_input_invalid"
    assert [f["field"] for f in error["fields"]] == [field]
    # The message names the field (for a value where an object belongs: where it was).
    assert re.search(rf"\b{re.escape(mentioned)}\b(?!\.)", error["message"])
    assert "1200" not in error["message"]  # names the field, never the value


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "input"),
        ({"input": [1, 2]}, "input"),
        ({"input": {}, "version": 0}, "version"),
        ({"input": {}, "extra": True}, "extra"),
    ],
)
def test_malformed_bodies_name_the_field(
    served: tuple[Aevos, TestClient], body: dict[str, Any], field: str
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    response = client.post("/v1/policies/claims-auto-approve/evaluate", json=body, headers=ops)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and [f["field"] for f in error["fields"]] == [field]


def test_unknown_policy_and_version_are_404(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    for name, version in [("nope", None), ("claims-auto-approve", 7)]:
        response = client.post(
            f"/v1/policies/{name}/evaluate", json={"input": {}, "version": version}, headers=ops
        )
        assert (
            response.status_code == 404 and response.json()["error"]["code"] == "policy_not_found"
        )


def test_tokens_and_permissions(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    service = _token(app, "acme", "service")  # no policies:read
    requests = [
        ("get", "/v1/policies", None),
        ("get", "/v1/policies/promotion-gate", None),
        ("post", "/v1/policies/claims-auto-approve/evaluate", {"input": _claim()}),
    ]
    for method, path, body in requests:
        anonymous = client.request(method, path, json=body)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
        refused = client.request(method, path, json=body, headers=service)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    denied = [r for r in app.audit.query("acme") if r.action == "authz.denied"]
    assert len(denied) == 3 and {r.data["reason"] for r in denied} == {
        "role service lacks policies:read"
    }
    # Policies are the application's code: every tenant that may read them sees the same.
    a, b = _token(app, "tenant-a", "auditor"), _token(app, "tenant-b", "auditor")
    assert (
        client.get("/v1/policies", headers=a).json() == client.get("/v1/policies", headers=b).json()
    )


def test_an_app_without_policies_has_none(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEVOS_POLICY_DIR", raising=False)
    app = Aevos(database_url)
    with TestClient(create_app(app)) as client:
        reviewer = _token(app, "acme", "reviewer")
        assert client.get("/v1/policies", headers=reviewer).json() == []
        missing = client.get("/v1/policies/promotion-gate", headers=reviewer)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "policy_not_found"
    app.close()
