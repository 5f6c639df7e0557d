"""Replays over HTTP and the CLI, on both backends: start (202, enqueued for a worker), read
one, list a model's; permissions, tenants and bad input checked, refusals audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.test_replay import MODEL, REPLAY_GATE, queries, run_to_end
from typer.testing import CliRunner

from aevos import Aevos
from aevos.cli import cli
from aevos.pii import Vault
from aevos.server import create_app


@pytest.fixture
def served(
    database_url: str, models: dict[str, bytes], tmp_path: Path
) -> Iterator[tuple[Aevos, TestClient]]:
    # The HTTP API's promotions are judged by the policy named promotion-gate: here, one
    # that requires a passing replay.
    (tmp_path / "promotion-gate.yaml").write_text(
        REPLAY_GATE.replace("policy: replay-gate", "policy: promotion-gate")
    )
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=tmp_path
    )
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    for tenant in ("acme", "beta"):
        app.models.register(
            MODEL,
            models["champion"],
            flavor="sklearn",
            signature={"type": "string"},
            aliases=["champion"],
            tenant=tenant,
        )
    for text, _ in queries(30):
        app.gateway.predict(MODEL, text, tenant="acme")
    app.gateway.flush()
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    from tests.test_replay import artifact

    return {"champion": artifact(20), "candidate": artifact(22)}


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def test_post_enqueues_a_replay_that_a_worker_finishes_and_get_reads_it(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops, reviewer = _token(app, "acme", "operator"), _token(app, "acme", "reviewer")
    body = {"limit": 25, "rate": 1000, "criteria": {"min_cases": 20}}
    started = client.post(f"/v1/models/{MODEL}/versions/1/replays", json=body, headers=ops)
    assert started.status_code == 202, started.text
    replay = started.json()
    assert replay["status"] == "running" and replay["passed"] is None
    assert replay["model"] == MODEL and replay["version"] == 1 and replay["champion"] == 1
    assert replay["criteria"]["min_cases"] == 20 and replay["criteria"]["min_agreement"] == 0.8
    assert replay["requested_by"].startswith("operator:")
    assert app.get_run(replay["replay_id"]).workflow == "aevos.replay"

    run_to_end(app, replay["replay_id"])
    shown = client.get(f"/v1/replays/{replay['replay_id']}", headers=reviewer)
    assert shown.status_code == 200, shown.text
    done = shown.json()
    assert done["status"] == "passed" and done["passed"] is True
    assert done["figures"]["cases"] == 25 and done["figures"]["agreement"] == 1.0
    listed = client.get(f"/v1/models/{MODEL}/replays", headers=reviewer).json()["replays"]
    assert [r["replay_id"] for r in listed] == [replay["replay_id"]]
    assert client.get(f"/v1/models/{MODEL}/replays?version=1", headers=ops).json()["replays"]
    none = client.get(f"/v1/models/{MODEL}/replays", headers=_token(app, "beta", "operator"))
    assert none.status_code == 200 and none.json()["replays"] == []


def test_permissions_tenants_and_bad_input_are_refused_and_recorded(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops, reviewer = _token(app, "acme", "operator"), _token(app, "acme", "reviewer")
    url = f"/v1/models/{MODEL}/versions/1/replays"
    assert client.post(url, json={}).status_code == 401
    refused = client.post(url, json={}, headers=reviewer)
    assert refused.status_code == 403, refused.text
    denied = app.audit.query("acme", action="authz.denied")
    assert denied and denied[-1].data["attempted"] == "replay model versions"

    missing = client.post("/v1/models/nope/versions/1/replays", json={}, headers=ops)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    gone = client.post(f"/v1/models/{MODEL}/versions/7/replays", json={}, headers=ops)
    assert gone.status_code == 404 and "7" in gone.json()["error"]["message"]
    rejected = app.audit.query("acme", action="replay.rejected")
    assert [r.data["code"] for r in rejected] == ["model_not_found", "model_not_found"]
    assert rejected[0].actor.startswith("operator:")

    for body in (
        {"limit": 10_001},
        {"limit": 0},
        {"rate": 0},
        {"rate": 1000.5},
        {"criteria": {"min_agreement": 1.5}},
        {"criteria": {"bogus": 1}},
        {"surprise": True},
    ):
        answer = client.post(url, json=body, headers=ops)
        assert answer.status_code == 422, (body, answer.text)
    assert app.replays.list(MODEL, tenant="acme") == []

    started = client.post(url, json={"rate": 1000}, headers=ops).json()
    other = client.get(f"/v1/replays/{started['replay_id']}", headers=_token(app, "beta", "admin"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "replay_not_found"
    unknown = client.get("/v1/models/nope/replays", headers=ops)
    assert unknown.status_code == 404


def test_the_cli_starts_shows_and_lists_replays(
    served: tuple[Aevos, TestClient], database_url: str
) -> None:
    app, _ = served
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, ["--database-url", database_url, "replays", *args])
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    replay_id = run(
        "start",
        MODEL,
        "1",
        "--tenant",
        "acme",
        "--rate",
        "1000",
        "--criteria",
        '{"min_cases": 10}',
    ).stdout.strip()
    assert app.replays.get(replay_id, tenant="acme").requested_by.startswith("cli:")
    run_to_end(app, replay_id)
    shown = run("show", replay_id, "--tenant", "acme").stdout
    assert "passed" in shown and "agreement: 1.000" in shown
    assert '"status": "passed"' in run("show", replay_id, "--tenant", "acme", "--json").stdout
    assert replay_id in run("list", MODEL, "--tenant", "acme", "--version", "1").stdout

    bad = run("start", MODEL, "1", "--tenant", "acme", "--rate", "0", code=2)
    assert "rate" in bad.stderr
    assert "model_not_found" in run("start", "nope", "1", "--tenant", "acme", code=2).stderr
    assert "replay_not_found" in run("show", "nope", "--tenant", "acme", code=2).stderr
    assert "bad_json" in run("start", MODEL, "1", "--criteria", "{", code=2).stderr


def test_a_promotion_over_http_needs_the_versions_passing_replay(
    served: tuple[Aevos, TestClient], models: dict[str, bytes]
) -> None:
    app, client = served
    candidate = app.models.register(
        MODEL, models["candidate"], flavor="sklearn", signature={"type": "string"}, tenant="acme"
    ).version
    ops = _token(app, "acme", "operator")
    promote = {"version": candidate, "evidence": {"replay": {"passed": True}}}
    # Never replayed: the evidence typed in is not the gate's evidence.
    refused = client.post(f"/v1/models/{MODEL}/promote", json=promote, headers=ops)
    assert refused.status_code == 200, refused.text
    assert refused.json()["decision"]["result"] == "deny"
    assert refused.json()["decision"]["rule"] == "no-passing-replay"

    criteria = {"min_cases": 20, "min_agreement": 0.5, "max_accuracy_drop": 1.0}
    body = {"rate": 1000, "criteria": criteria}
    started = client.post(
        f"/v1/models/{MODEL}/versions/{candidate}/replays", json=body, headers=ops
    ).json()
    run_to_end(app, started["replay_id"])
    assert app.replays.get(started["replay_id"], tenant="acme").status == "passed"
    allowed = client.post(f"/v1/models/{MODEL}/promote", json=promote, headers=ops)
    assert allowed.json()["decision"]["result"] == "allow", allowed.text
    assert app.models.aliases(MODEL, tenant="acme")["champion"] == candidate
    decided = app.audit.query("acme", action="policy.decided")
    assert [r.data["result"] for r in decided] == ["deny", "allow"]
