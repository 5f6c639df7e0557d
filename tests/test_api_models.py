"""The model registry over HTTP: register, inspect, alias, roll back, promote through the gate.

Every test runs on SQLite and PostgreSQL; every write is checked against the audit records
it must leave (exactly once: the registry records its own changes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import Aevos
from aevos.server import create_app

POLICIES = Path(__file__).resolve().parents[1] / "examples" / "policies"


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=POLICIES
    )
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str, name: str | None = None) -> dict[str, str]:
    issued = app.identity.create_token(
        tenant=tenant, role=role, name=name or role, created_by="test"
    )
    return {"Authorization": f"Bearer {issued.token}"}


def _table(threshold: float) -> bytes:
    """A rules artifact: a decision table that routes claims by amount."""
    table = {
        "input": {"amount": "number"},
        "table": [
            {"id": "small", "when": {"amount": {"lt": threshold}}, "label": "auto"},
        ],
        "default": {"label": "review", "confidence": 0.5},
    }
    return json.dumps(table).encode()


def _register(artifact: bytes, **fields: Any) -> dict[str, Any]:
    return {"artifact": base64.b64encode(artifact).decode(), "flavor": "rules", **fields}


def _actions(app: Aevos, tenant: str, prefix: str = "model.") -> list[str]:
    return [r.action for r in app.audit.query(tenant) if r.action.startswith(prefix)]


def test_register_list_and_inspect(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    card = {
        "intended_use": "route claims",
        "owner": "claims-team",
        "metrics": {"accuracy": 0.91, "samples": 1200},
        "training_data": "claims-2025@sha256:ab12",
    }
    body = _register(_table(1000), card=card, tags={"stage": "dev"}, aliases=["challenger"])
    first = client.post("/v1/models/claims-router/versions", json=body, headers=ops)
    assert first.status_code == 201, first.text
    registered = first.json()
    assert registered["created"] is True
    v1 = registered["version"]
    assert (v1["name"], v1["version"], v1["ref"]) == ("claims-router", 1, "claims-router@1")
    assert v1["digest"] == hashlib.sha256(_table(1000)).hexdigest()
    assert v1["card"]["owner"] == "claims-team" and v1["card"]["metrics"]["samples"] == 1200
    assert v1["tags"] == {"stage": "dev"} and v1["created_by"].startswith("operator:ops#")

    # The same artifact, flavor and config: the existing version, 200, nothing recorded.
    again = client.post("/v1/models/claims-router/versions", json=body, headers=ops)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["version"]["version"] == 1
    second = client.post(
        "/v1/models/claims-router/versions", json=_register(_table(2000)), headers=ops
    )
    assert second.status_code == 201 and second.json()["version"]["version"] == 2

    listed = client.get("/v1/models", headers=ops).json()
    assert listed == [
        {"name": "claims-router", "latest_version": 2, "versions": 2, "aliases": {"challenger": 1}}
    ]
    model = client.get("/v1/models/claims-router", headers=ops).json()
    assert [v["version"] for v in model["versions"]] == [1, 2]
    assert model["latest_version"] == 2
    (alias,) = model["aliases"]
    assert (alias["alias"], alias["version"], alias["previous_version"]) == ("challenger", 1, None)
    version = client.get("/v1/models/claims-router/versions/2", headers=ops).json()
    assert version["digest"] == hashlib.sha256(_table(2000)).hexdigest()
    assert (
        client.get("/v1/models/claims-router/aliases/challenger", headers=ops).json()["version"]
        == 1
    )
    missing = client.get("/v1/models/claims-router/versions/3", headers=ops)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    nothing = client.get("/v1/models/nope", headers=ops)
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "model_not_found"

    # Each change recorded once, by the registry, with the principal as its actor.
    assert _actions(app, "acme") == ["model.registered", "model.alias_moved", "model.registered"]
    actors = {r.actor for r in app.audit.query("acme") if r.action.startswith("model.")}
    assert actors == {v1["created_by"]}


def test_a_registered_version_serves_predictions(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    client.post("/v1/models/claims-router/versions", json=_register(_table(1000)), headers=ops)
    client.put("/v1/models/claims-router/aliases/canary", json={"version": 1}, headers=ops)
    app.gateway.route("claims-router", alias="canary")
    answer = client.post(
        "/v1/models/claims-router/predict", json={"input": {"amount": 10}}, headers=ops
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "auto" and answer.json()["version"] == "claims-router@1"


def test_sklearn_skops_registers_and_pickles_never_do(served: tuple[Aevos, TestClient]) -> None:
    from sklearn.linear_model import LogisticRegression

    from aevos.models.artifact import dump_sklearn

    app, client = served
    ops = _token(app, "acme", "operator")
    estimator = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    skops = dump_sklearn(estimator)
    body = {**_register(skops), "flavor": "sklearn"}
    created = client.post("/v1/models/risk/versions", json=body, headers=ops)
    assert created.status_code == 201, created.text
    assert created.json()["version"]["digest"] == hashlib.sha256(skops).hexdigest()

    pickled = {**_register(pickle.dumps(estimator)), "flavor": "sklearn"}
    refused = client.post("/v1/models/risk/versions", json=pickled, headers=ops)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unsafe_artifact"
    # A pickle is refused whatever flavor it claims to be.
    as_rules = client.post(
        "/v1/models/risk/versions", json=_register(pickle.dumps({"a": 1})), headers=ops
    )
    assert as_rules.status_code == 422 and as_rules.json()["error"]["code"] == "unsafe_artifact"
    rejected = [r for r in app.audit.query("acme") if r.action == "model.rejected"]
    assert [r.data["reason"] for r in rejected] == ["pickle", "pickle"]
    assert rejected[0].data["sha256"] == hashlib.sha256(pickle.dumps(estimator)).hexdigest()

    trusting = {**body, "config": {"trusted_types": ["builtins.eval"]}}
    forbidden = client.post("/v1/models/risk/versions", json=trusting, headers=ops)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    llm = {**_register(b"{}"), "flavor": "openai", "config": {"base_url": "http://x/v1"}}
    assert client.post("/v1/models/llm/versions", json=llm, headers=ops).status_code == 403
    broken = client.post(
        "/v1/models/risk/versions",
        json={**_register(b"PK\x03\x04junk"), "flavor": "sklearn"},
        headers=ops,
    )
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_artifact"
    bad_table = client.post(
        "/v1/models/risk/versions",
        json=_register(b'{"table": [{"when": {"x": {"zz": 1}}}]}'),
        headers=ops,
    )
    assert bad_table.status_code == 422
    # Nothing refused was stored.
    versions = client.get("/v1/models/risk", headers=ops).json()["versions"]
    assert [v["version"] for v in versions] == [1]
    assert client.get("/v1/models/llm", headers=ops).status_code == 404


def test_aliases_move_and_roll_back(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    for threshold in (1000, 2000, 3000):
        client.post("/v1/models/m/versions", json=_register(_table(threshold)), headers=ops)
    moved = client.put("/v1/models/m/aliases/challenger", json={"version": 2}, headers=ops)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["version"], moved.json()["previous_version"]) == (2, None)
    moved = client.put("/v1/models/m/aliases/challenger", json={"version": 3}, headers=ops)
    assert (moved.json()["version"], moved.json()["previous_version"]) == (3, 2)
    same = client.put("/v1/models/m/aliases/challenger", json={"version": 3}, headers=ops)
    assert same.status_code == 200 and same.json()["version"] == 3
    assert _actions(app, "acme").count("model.alias_moved") == 2  # the no-op left none

    rolled = client.post("/v1/models/m/aliases/challenger/rollback", headers=ops)
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["version"], rolled.json()["previous_version"]) == (2, None)
    twice = client.post("/v1/models/m/aliases/challenger/rollback", headers=ops)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "no_previous_version"
    assert _actions(app, "acme").count("model.rolled_back") == 1
    unknown_alias = client.post("/v1/models/m/aliases/nope/rollback", headers=ops)
    assert unknown_alias.status_code == 404
    no_version = client.put("/v1/models/m/aliases/challenger", json={"version": 9}, headers=ops)
    assert no_version.status_code == 404
    bad_alias = client.put("/v1/models/m/aliases/Bad!", json={"version": 1}, headers=ops)
    assert bad_alias.status_code == 422 and bad_alias.json()["error"]["code"] == "definition_error"

    # The champion moves only through the promotion gate; the refusal is audited.
    champion = client.put("/v1/models/m/aliases/champion", json={"version": 1}, headers=ops)
    assert champion.status_code == 403 and "promot" in champion.json()["error"]["message"]
    sneaky = client.post(
        "/v1/models/m/versions", json=_register(_table(9), aliases=["champion"]), headers=ops
    )
    assert sneaky.status_code == 403
    denied = [r for r in app.audit.query("acme") if r.action == "authz.denied"]
    assert len(denied) == 2 and "promotion gate" in denied[0].data["reason"]
    assert client.get("/v1/models/m/aliases/champion", headers=ops).status_code == 404
    assert len(client.get("/v1/models/m", headers=ops).json()["versions"]) == 3


def _evidence(candidate: float, samples: int) -> dict[str, Any]:
    return {
        "candidate": {"accuracy": candidate, "calibration_error": 0.05, "samples": samples},
        "champion": {"accuracy": 0.80, "calibration_error": 0.05},
    }


def test_promotion_passes_the_policy_gate(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    for threshold in (1000, 2000):
        client.post("/v1/models/m/versions", json=_register(_table(threshold)), headers=ops)

    def promote(candidate: float, samples: int) -> dict[str, Any]:
        body = {"version": 2, "evidence": _evidence(candidate, samples)}
        response = client.post("/v1/models/m/promote", json=body, headers=ops)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    worse = promote(0.70, 5000)
    assert (
        worse["decision"]["result"] == "deny" and worse["decision"]["rule"] == "worse-than-champion"
    )
    assert worse["needs_approval"] is False and worse["promoted"] is None
    unsure = promote(0.81, 600)
    assert unsure["decision"]["result"] == "approve" and unsure["needs_approval"] is True
    assert unsure["promoted"] is None
    assert client.get("/v1/models/m/aliases/champion", headers=ops).status_code == 404
    clear = promote(0.85, 5000)
    assert clear["decision"]["result"] == "allow" and clear["decision"]["allowed"] is True
    assert clear["promoted"]["version"] == 2
    assert clear["decision"]["policy"] == "promotion-gate" and clear["decision"]["version"] == 2
    assert client.get("/v1/models/m/aliases/champion", headers=ops).json()["version"] == 2

    decided = [r for r in app.audit.query("acme") if r.action == "policy.decided"]
    assert [r.data["result"] for r in decided] == ["deny", "approve", "allow"]
    assert all(r.data["model"] == "m@2" for r in decided)
    assert _actions(app, "acme").count("model.promoted") == 1
    # Rolling back the champion needs no gate: it returns to where it was (here: nowhere).
    assert client.post("/v1/models/m/aliases/champion/rollback", headers=ops).status_code == 409

    missing = client.post(
        "/v1/models/m/promote", json={"version": 7, "evidence": _evidence(0.9, 5000)}, headers=ops
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    short = client.post(
        "/v1/models/m/promote", json={"version": 2, "evidence": {"candidate": {}}}, headers=ops
    )
    assert short.status_code == 422 and short.json()["error"]["code"] == "policy_input_invalid"


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        (
            "/v1/models/m/versions",
            "post",
            {"artifact": "not base64!", "flavor": "rules"},
            "artifact",
        ),
        ("/v1/models/m/versions", "post", {"artifact": "", "flavor": "Rules"}, "flavor"),
        ("/v1/models/m/versions", "post", {"flavor": "rules"}, "artifact"),
        (
            "/v1/models/m/versions",
            "post",
            {"artifact": "", "flavor": "rules", "card": {"metrics": {"acc": "high"}}},
            "card.metrics.acc",
        ),
        (
            "/v1/models/m/versions",
            "post",
            {"artifact": "", "flavor": "rules", "card": {"colour": "red"}},
            "card.colour",
        ),
        ("/v1/models/m/versions", "post", {"artifact": "", "flavor": "rules", "who": 1}, "who"),
        (
            "/v1/models/m/versions",
            "post",
            {"artifact": "", "flavor": "rules", "tags": {"a": 1}},
            "tags.a",
        ),
        ("/v1/models/m/aliases/challenger", "put", {"version": 0}, "version"),
        ("/v1/models/m/aliases/challenger", "put", {}, "version"),
        ("/v1/models/m/promote", "post", {"evidence": {}}, "version"),
        ("/v1/models/m/promote", "post", {"version": 1, "evidence": []}, "evidence"),
        (
            "/v1/models/m/promote",
            "post",
            {"version": 1, "evidence": {"model": {"name": "other"}}},
            "evidence",
        ),
    ],
)
def test_malformed_bodies_name_the_field(
    served: tuple[Aevos, TestClient], path: str, method: str, body: dict[str, Any], field: str
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    response = client.request(method, path, json=body, headers=ops)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [f["field"] for f in error["fields"]]


ENDPOINTS = [
    ("get", "/v1/models", None),
    ("get", "/v1/models/m", None),
    ("get", "/v1/models/m/versions/1", None),
    ("get", "/v1/models/m/aliases/challenger", None),
    ("post", "/v1/models/m/versions", _register(_table(5))),
    ("put", "/v1/models/m/aliases/challenger", {"version": 1}),
    ("post", "/v1/models/m/aliases/challenger/rollback", None),
    ("post", "/v1/models/m/promote", {"version": 1, "evidence": _evidence(0.9, 5000)}),
]


def test_every_endpoint_needs_a_token(served: tuple[Aevos, TestClient]) -> None:
    _, client = served
    for method, path, body in ENDPOINTS:
        response = client.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthenticated"


def test_writes_need_their_permission(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    reviewer = _token(app, "acme", "reviewer")  # models:read only
    client.post("/v1/models/m/versions", json=_register(_table(5)), headers=ops)
    client.put("/v1/models/m/aliases/challenger", json={"version": 1}, headers=ops)
    for method, path, body in ENDPOINTS:
        response = client.request(method, path, json=body, headers=reviewer)
        if method == "get":
            assert response.status_code == 200, (method, path, response.text)
        else:
            assert response.status_code == 403, (method, path)
            assert response.json()["error"]["code"] == "forbidden"
    denied = [r.data["attempted"] for r in app.audit.query("acme") if r.action == "authz.denied"]
    assert denied == [
        "register models",
        "move model aliases",
        "roll back model aliases",
        "promote models",
    ]


def test_tenants_never_see_each_others_models(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    a_ops, b_ops = _token(app, "tenant-a", "operator"), _token(app, "tenant-b", "operator")
    client.post(
        "/v1/models/m/versions", json=_register(_table(5), aliases=["challenger"]), headers=a_ops
    )
    assert client.get("/v1/models", headers=b_ops).json() == []
    for method, path, body in ENDPOINTS[1:4] + ENDPOINTS[5:]:
        response = client.request(method, path, json=body, headers=b_ops)
        assert response.status_code == 404, (method, path, response.text)
        assert "tenant-a" not in response.text
    # The same name in tenant B is B's own model, numbered from 1, with A's untouched.
    own = client.post("/v1/models/m/versions", json=_register(_table(7)), headers=b_ops)
    assert own.status_code == 201 and own.json()["version"]["version"] == 1
    a_model = client.get("/v1/models/m", headers=a_ops).json()
    assert a_model["versions"][0]["digest"] == hashlib.sha256(_table(5)).hexdigest()
    assert len(a_model["versions"]) == 1
    assert _actions(app, "tenant-b") == ["model.registered"]
