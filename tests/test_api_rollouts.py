"""Rollouts over HTTP and on the console's model page, on both backends.

A real model (banking77, 4 intents, TF-IDF) has a champion and a candidate; rollouts are
started, listed, shown with their history, paused, resumed, aborted and promoted through
the API, behind authentication, permissions and tenants; bad input is refused with 422,
conflicts with 409, and refused actions are audited. The model page's rollout panel is
driven in Chromium.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from tests import test_console
from tests.rollout_support import policies
from tests.test_console import Console, serving, sign_in

from aevos import Aevos
from aevos.public_data import data_file
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODEL = "intent"
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked"]
browser = test_console.browser
open_page = test_console.open_page


@pytest.fixture(scope="module")
def intent_models() -> tuple[bytes, bytes]:
    """A champion and a candidate: the same recipe on 15 and on 25 tickets per intent."""
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    rows: list[tuple[str, str]] = []
    with (data_file("banking77") / "train.csv").open(newline="") as handle:
        rows = [
            (r["text"], r["category"]) for r in csv.DictReader(handle) if r["category"] in INTENTS
        ]
    out = []
    for per in (15, 25):
        seen: dict[str, int] = {}
        texts, labels = [], []
        for text, category in rows:
            if seen.get(category, 0) < per:
                seen[category] = seen.get(category, 0) + 1
                texts.append(text)
                labels.append(category)
        out.append(dump_sklearn(train_text_classifier(texts, labels)))
    return out[0], out[1]


@pytest.fixture
def served(
    database_url: str, intent_models: tuple[bytes, bytes], tmp_path: Path
) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(
        database_url,
        lease_seconds=2.0,
        park_after=0.3,
        poll_interval=0.02,
        policies=policies(tmp_path, "allow"),
    )
    for tenant in ("acme", "globex"):
        champion, candidate = intent_models
        app.models.register(MODEL, champion, flavor="sklearn", tenant=tenant, aliases=["champion"])
        app.models.register(MODEL, candidate, flavor="sklearn", tenant=tenant)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def _audited(app: Aevos, tenant: str, action: str) -> list[Any]:
    return [r for r in app.audit.query(tenant, limit=10_000) if r.action == action]


def test_start_list_show_pause_resume_and_abort(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops, reviewer = _token(app, "acme", "operator"), _token(app, "acme", "reviewer")
    started = client.post(
        f"/v1/models/{MODEL}/rollouts",
        headers=ops,
        json={
            "version": 2,
            "steps": [0, 50, 100],
            "criteria": {
                "min_calls": 10,
                "min_precision": 0.9,
                "max_cost_ratio": None,
                "latency_p_value": 0.05,
                "precision_p_value": 0.1,
            },
            "step_minutes": 5,
        },
    )
    assert started.status_code == 201, started.text
    body = started.json()
    rollout_id = body["rollout_id"]
    assert body["model"] == MODEL and body["version"] == 2 and body["champion"] == 1
    assert body["steps"] == [0, 50, 100] and body["step"] == 0
    assert body["state"] == "progressing"
    assert body["criteria"]["min_calls"] == 10 and body["criteria"]["max_error_rate"] == 0.05
    # A null ratio is "not judged"; fields not given keep their defaults.
    assert body["criteria"]["min_precision"] == 0.9 and body["criteria"]["max_cost_ratio"] is None
    assert body["criteria"]["max_latency_p95_ratio"] == 2.0
    assert body["criteria"]["latency_p_value"] == 0.05
    assert body["criteria"]["precision_p_value"] == 0.1
    assert body["created_by"].startswith("operator:")
    assert body["deadline"] == pytest.approx(body["step_started_at"] + 300)

    listed = client.get("/v1/rollouts", headers=reviewer)
    assert listed.status_code == 200
    assert [r["rollout_id"] for r in listed.json()] == [rollout_id]
    assert [
        r["rollout_id"]
        for r in client.get(
            "/v1/rollouts", params={"model": MODEL, "active": "true"}, headers=reviewer
        ).json()
    ] == [rollout_id]
    assert client.get("/v1/rollouts", params={"active": "false"}, headers=reviewer).json() == []

    paused = client.post(f"/v1/rollouts/{rollout_id}/pause", headers=ops, json={"reason": "look"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    resumed = client.post(f"/v1/rollouts/{rollout_id}/resume", headers=ops)
    assert resumed.status_code == 200 and resumed.json()["state"] == "progressing"
    aborted = client.post(f"/v1/rollouts/{rollout_id}/abort", headers=ops, json={"reason": "no"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "aborted"

    shown = client.get(f"/v1/rollouts/{rollout_id}", headers=reviewer)
    assert shown.status_code == 200
    detail = shown.json()
    assert detail["state"] == "aborted" and len(detail["history"]) >= 4
    actions = [r.action for r in app.audit.query("acme", limit=10_000)]
    for action in ("rollout.started", "rollout.paused", "rollout.resumed", "rollout.aborted"):
        assert action in actions

    # A finished rollout takes no more actions: 409, audited.
    again = client.post(f"/v1/rollouts/{rollout_id}/resume", headers=ops)
    assert again.status_code == 409, again.text
    (rejected,) = _audited(app, "acme", "rollout.rejected")
    assert rejected.data["attempted"] == "resume" and rejected.data["rollout_id"] == rollout_id
    assert rejected.data["reason"] == again.json()["error"]["code"] == "rollout_conflict"
    assert "aborted" in rejected.data["detail"]


def test_one_active_rollout_per_model_and_promotion(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    first = client.post(f"/v1/models/{MODEL}/rollouts", headers=ops, json={"version": 2})
    assert first.status_code == 201, first.text
    assert first.json()["steps"] == [0, 5, 25, 50, 100]
    second = client.post(f"/v1/models/{MODEL}/rollouts", headers=ops, json={"version": 2})
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "rollout_conflict"
    (rejected,) = _audited(app, "acme", "rollout.rejected")
    assert rejected.data["model"] == MODEL and rejected.data["version"] == 2
    assert rejected.data["reason"] == "rollout_conflict"

    promoted = client.post(f"/v1/rollouts/{first.json()['rollout_id']}/promote", headers=ops)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["state"] == "promoted"
    assert app.models.get(MODEL, "champion", tenant="acme").version == 2
    # Promoted: the model may have a new rollout.
    third = client.post(f"/v1/models/{MODEL}/rollouts", headers=ops, json={"version": 1})
    assert third.status_code == 201, third.text


def test_auth_permissions_and_tenants(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops, reviewer = _token(app, "acme", "operator"), _token(app, "acme", "reviewer")
    body = client.post(f"/v1/models/{MODEL}/rollouts", headers=ops, json={"version": 2}).json()
    rollout_id = body["rollout_id"]

    # Unauthenticated: 401 everywhere.
    assert client.get("/v1/rollouts").status_code == 401
    assert client.get(f"/v1/rollouts/{rollout_id}").status_code == 401
    assert client.post(f"/v1/rollouts/{rollout_id}/pause").status_code == 401
    assert client.post(f"/v1/models/{MODEL}/rollouts", json={"version": 2}).status_code == 401

    # A reviewer reads but may not act; the refusal is audited.
    assert client.get(f"/v1/rollouts/{rollout_id}", headers=reviewer).status_code == 200
    refused = client.post(f"/v1/rollouts/{rollout_id}/abort", headers=reviewer)
    assert refused.status_code == 403
    denied = _audited(app, "acme", "authz.denied")
    assert denied and denied[-1].data["attempted"] == "abort rollouts"
    assert (
        client.post(
            f"/v1/models/{MODEL}/rollouts", headers=reviewer, json={"version": 2}
        ).status_code
        == 403
    )

    # Another tenant neither sees nor steers it; its own model is its own.
    other = _token(app, "globex", "operator")
    assert client.get("/v1/rollouts", headers=other).json() == []
    assert client.get(f"/v1/rollouts/{rollout_id}", headers=other).status_code == 404
    steer = client.post(f"/v1/rollouts/{rollout_id}/abort", headers=other)
    assert steer.status_code == 404
    (rejected,) = _audited(app, "globex", "rollout.rejected")
    assert rejected.data["attempted"] == "abort"
    assert app.rollouts.get(rollout_id, tenant="acme").state == "progressing"
    own = client.post(f"/v1/models/{MODEL}/rollouts", headers=other, json={"version": 2})
    assert own.status_code == 201 and own.json()["rollout_id"] != rollout_id


def test_bad_input_is_refused_naming_the_field(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    url = f"/v1/models/{MODEL}/rollouts"
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "version"),
        ({"version": 0}, "version"),
        ({"version": 2, "steps": []}, "steps"),
        ({"version": 2, "steps": [0, 150]}, "steps.1"),
        ({"version": 2, "steps": list(range(21))}, "steps"),
        ({"version": 2, "criteria": {"min_calls": 0}}, "criteria.min_calls"),
        ({"version": 2, "criteria": {"min_agreement": 1.5}}, "criteria.min_agreement"),
        ({"version": 2, "criteria": {"latency_p_value": -0.1}}, "criteria.latency_p_value"),
        ({"version": 2, "criteria": {"bogus": 1}}, "criteria.bogus"),
        ({"version": 2, "step_minutes": 0}, "step_minutes"),
        ({"version": 2, "policy": ""}, "policy"),
        ({"version": 2, "surprise": True}, "surprise"),
    ]
    for payload, field in bad:
        answer = client.post(url, headers=ops, json=payload)
        assert answer.status_code == 422, (payload, answer.text)
        assert field in [f["field"] for f in answer.json()["error"]["fields"]], answer.text
    assert (
        client.post(
            f"/v1/models/{'x' * 201}/rollouts", headers=ops, json={"version": 2}
        ).status_code
        == 422
    )
    assert client.get("/v1/rollouts", params={"limit": 0}, headers=ops).status_code == 422
    assert client.get(f"/v1/rollouts/{'x' * 201}", headers=ops).status_code == 422
    # A version the model does not have: 404, audited.
    missing = client.post(url, headers=ops, json={"version": 99})
    assert missing.status_code == 404, missing.text
    (rejected,) = _audited(app, "acme", "rollout.rejected")
    assert rejected.data["version"] == 99
    assert rejected.data["reason"] == missing.json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/rollouts/nope", headers=ops).status_code == 404
    started = client.post(url, headers=ops, json={"version": 2}).json()
    long = client.post(
        f"/v1/rollouts/{started['rollout_id']}/pause", headers=ops, json={"reason": "x" * 2001}
    )
    assert long.status_code == 422
    assert app.rollouts.get(started["rollout_id"], tenant="acme").state == "progressing"


# -- the console's rollout panel ------------------------------------------------------------


def test_the_model_pages_rollout_panel_shows_and_steers_the_rollout(
    database_url: str, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    model = "claims-risk"  # the console fixture's model: v1 champion, v2 challenger, tenant acme
    with serving(database_url) as served:
        app = served.app
        page = open_page(served)
        sign_in(page, served.token("acme", "operator"))
        page.wait_for_url("**/console/runs")
        page.goto(f"/console/models/{model}")
        panel = page.locator("#rollout-panel")
        expect(panel).to_contain_text("No rollout of this model yet")

        rollout = app.rollouts.start(model, 2, tenant="acme", actor="test", steps=(0, 25, 100))
        # The step's deadline passes with no calls: inconclusive, paused, with figures.
        app.rollouts.tick(now=rollout.deadline + 1)
        page.reload()
        expect(page.locator("#rollout-state")).to_have_attribute("data-state", "paused")
        expect(panel).to_contain_text("shadow (step 1 of 3")
        expect(page.locator("#rollout-verdict")).to_contain_text("inconclusive")
        expect(page.locator("#rollout-reasons")).to_contain_text("too few calls: 0 < 50")
        expect(page.locator("#rollout-figures tbody tr").first).to_contain_text("calls")

        # Without the session's CSRF secret a post is refused and nothing changes.
        forged = page.request.post(
            f"/console/rollouts/{rollout.rollout_id}/resume", form={"csrf_token": "x"}
        )
        assert forged.status == 403
        assert app.rollouts.get(rollout.rollout_id, tenant="acme").state == "paused"

        page.click(".rollout-resume button")  # htmx swaps the panel in place
        expect(page.locator("#rollout-state")).to_have_attribute("data-state", "progressing")
        page.click(".rollout-pause button")
        expect(page.locator("#rollout-state")).to_have_attribute("data-state", "paused")
        page.click(".rollout-abort button")
        expect(page.locator("#rollout-state")).to_have_attribute("data-state", "aborted")
        expect(page.locator(".rollout-actions")).to_have_count(0)
        assert app.rollouts.get(rollout.rollout_id, tenant="acme").state == "aborted"
        steered = [
            (r.action, r.actor.split(":")[0])
            for r in app.audit.query("acme", limit=10_000)
            if r.action.startswith("rollout.")
        ]
        # The controller paused it at the deadline; the operator did the rest.
        assert steered == [
            ("rollout.started", "test"),
            ("rollout.paused", "system"),
            ("rollout.resumed", "operator"),
            ("rollout.paused", "operator"),
            ("rollout.aborted", "operator"),
        ]

        # A reviewer sees the panel, not the buttons.
        app.rollouts.start(model, 2, tenant="acme", actor="test")
        viewer = open_page(served)
        sign_in(viewer, served.token("acme", "reviewer"))
        viewer.wait_for_url("**/console/**")
        viewer.goto(f"/console/models/{model}")
        expect(viewer.locator("#rollout-state")).to_have_attribute("data-state", "progressing")
        expect(viewer.locator(".rollout-actions")).to_have_count(0)
