"""Monitors over HTTP and the CLI, on both backends: configuration with bad input named by
field (and the refusal audited), permissions and tenants, a check, the alerts of a real
drift on banking77 traffic, acknowledged over HTTP and from the CLI.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from tests import test_console
from tests.test_console import Console, serving, sign_in
from tests.test_monitors import _banking, banking_model
from typer.testing import CliRunner

from aevos import Aevos
from aevos.cli import cli
from aevos.monitoring import MONITORS
from aevos.pii import Vault
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODEL = "intent"
__all__ = ["banking_model"]
browser = test_console.browser
open_page = test_console.open_page


@pytest.fixture
def served(
    database_url: str, banking_model: tuple[bytes, list[str]]
) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    app.vault = Vault(app.store, Vault.decode_key(Vault.generate_key()))
    for tenant in ("acme", "beta"):
        app.models.register(
            MODEL,
            banking_model[0],
            flavor="sklearn",
            signature={"type": "string"},
            aliases=["champion"],
            tenant=tenant,
        )
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def test_configure_check_and_acknowledge_over_http(
    served: tuple[Aevos, TestClient], banking_model: tuple[bytes, list[str]]
) -> None:
    app, client = served
    ops, reviewer = _token(app, "acme", "operator"), _token(app, "acme", "reviewer")
    other = _token(app, "beta", "operator")
    url = f"/v1/models/{MODEL}/monitor"

    assert client.get(url).status_code == 401
    assert client.get(url, headers=ops).status_code == 404  # not configured yet
    body = {"window_cases": 120, "reference_cases": 150, "thresholds": {"min_window": 50}}
    assert client.put(url, json=body, headers=reviewer).status_code == 403
    bad = client.put(url, json={**body, "thresholds": {"pvalue": 0.1}}, headers=ops)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "thresholds.pvalue"
    rejected = app.audit.query("acme", action="monitor.rejected")
    assert rejected and rejected[-1].data["code"] == "invalid_monitor_config"
    assert client.put(url, json={**body, "window_cases": 5}, headers=ops).status_code == 422
    assert client.put(url, json={**body, "page": True}, headers=ops).status_code == 422
    put = client.put(url, json=body, headers=ops)
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1 and put.json()["thresholds"]["min_window"] == 50
    assert client.get(url, headers=other).status_code == 404  # another tenant's

    # A check asked over HTTP is scheduled, not computed by the server: 202, no result
    # until a worker's sweep claims it.
    checked = client.post(f"{url}/check", headers=ops)
    assert checked.status_code == 202, checked.text
    scheduled = checked.json()
    assert (scheduled["model"], scheduled["config_version"]) == (MODEL, 1)
    assert scheduled["last_checked_at"] is None and scheduled["requested_by"]
    assert client.get(url, headers=ops).json()["latest"] == []
    assert app.monitors.results(MODEL, tenant="acme") == []
    requested = app.audit.query("acme", action="monitor.check_requested")
    assert [r.data["model"] for r in requested] == [MODEL]
    assert client.post(f"{url}/check", headers=reviewer).status_code == 403
    missing = client.post("/v1/models/nobody/monitor/check", headers=ops)
    assert missing.status_code == 404
    assert app.audit.query("acme", action="monitor.rejected")[-1].data["model"] == "nobody"
    # No traffic yet: the worker's check answers no_data for every monitor.
    assert app.monitors.sweep() == [f"acme/{MODEL}"]
    assert {r["status"] for r in client.get(url, headers=ops).json()["latest"]} == {"no_data"}
    # Checked just now, so not due again until asked: asking makes it due at once.
    assert app.monitors.sweep() == []
    again = client.post(f"{url}/check", headers=ops).json()
    assert again["last_checked_at"] is not None and again["due_at"] >= again["last_checked_at"]

    held = set(banking_model[1])
    rows = _banking("test")
    random.Random(3).shuffle(rows)
    old = [t for t, label in rows if label not in held]
    new = [t for t, label in rows if label in held]
    for text in [*old[:150], *new[:120]]:
        app.gateway.predict(MODEL, text, tenant="acme")
    app.gateway.flush()
    assert client.post(f"{url}/check", headers=ops).status_code == 202
    assert app.monitors.sweep() == [f"acme/{MODEL}"]  # what a worker does between claims
    latest = client.get(url, headers=ops).json()["latest"]
    drift = next(r for r in latest if r["monitor"] == "prediction_drift")
    assert drift["alert"] and drift["figures"]["new_classes"]

    shown = client.get(url, headers=reviewer).json()
    assert {r["monitor"] for r in shown["latest"]} >= {"prediction_drift", "input_drift"}
    open_alerts = client.get("/v1/alerts", params={"status": "open"}, headers=reviewer).json()
    assert open_alerts and {a["alert_id"] for a in open_alerts} == {
        a["alert_id"] for a in shown["open_alerts"]
    }
    assert client.get("/v1/alerts", headers=other).json() == []
    alert_id = next(a["alert_id"] for a in open_alerts if a["monitor"] == "prediction_drift")
    ack = f"/v1/alerts/{alert_id}/ack"
    assert client.post(ack, headers=other).status_code == 404
    assert client.post(ack, headers=reviewer).status_code == 403
    done = client.post(ack, json={"reason": "seen"}, headers=ops)
    assert done.status_code == 200 and done.json()["status"] == "acknowledged"
    assert done.json()["reason"] == "seen"
    assert client.post("/v1/alerts/zz/ack", headers=ops).status_code == 422
    assert client.get("/v1/alerts", params={"limit": 5000}, headers=ops).status_code == 422


def test_the_cli_configures_checks_and_acknowledges(database_url: str) -> None:
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, ["--database-url", database_url, "monitors", *args])
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    bad = run("configure", MODEL, "--thresholds", '{"nope": 1}', code=2)
    assert "thresholds.nope" in bad.stderr
    assert "version 1" in run("configure", MODEL, "--window-cases", "100", "--task").stdout
    shown = json.loads(run("show", MODEL, "--json").stdout)
    assert shown["config"]["on_alert"] == {"retrain": False, "task": True}
    checked = json.loads(run("check", MODEL, "--json").stdout)
    assert len(checked) == len(MONITORS) and {r["status"] for r in checked} == {"no_data"}
    scheduled = json.loads(run("check", MODEL, "--schedule", "--json").stdout)
    # A check run in the CLI's process does not move the workers' schedule.
    assert scheduled["config_version"] == 1 and scheduled["last_checked_at"] is None
    assert "next worker sweep" in run("check", MODEL, "--schedule").stdout
    assert "no monitor configuration" in run("check", "nobody", "--schedule", code=2).stderr
    assert "no data" in run("results", MODEL).stdout
    assert json.loads(run("alerts", "--json").stdout) == []
    missing = run("ack", "abc123", code=2)
    assert "abc123" in missing.stderr


def test_the_model_page_shows_open_alerts_and_the_latest_results(
    database_url: str, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    model = "claims-risk"  # the console fixture's rules model: auto below 1,000, else review
    with serving(database_url) as served:
        app = served.app
        page = open_page(served)
        sign_in(page, served.token("acme", "reviewer"))
        page.wait_for_url("**/console/**")
        page.goto(f"/console/models/{model}")
        expect(page.locator("#monitors + p")).to_contain_text("Not monitored")
        app.monitors.configure(
            model, tenant="acme", window_cases=60, reference_cases=60, thresholds={"min_window": 30}
        )
        for amount in [500] * 80 + [5000] * 80:
            app.gateway.predict(model, {"amount": amount}, tenant="acme")
        app.gateway.flush()
        found = {r.monitor: r for r in app.monitors.check(model, tenant="acme")}
        assert found["prediction_drift"].alert
        assert found["prediction_drift"].figures["new_classes"] == {
            "review": found["prediction_drift"].n
        }
        page.reload()
        rows = page.locator("#alerts tbody tr")
        expect(rows.filter(has_text="prediction_drift")).to_have_count(1)
        expect(rows.filter(has_text="prediction_drift")).to_contain_text("review")
        expect(page.locator("#monitor-results")).to_contain_text("prediction_drift")
        for alert in app.monitors.alerts(tenant="acme", status="open"):
            app.monitors.acknowledge(alert.alert_id, tenant="acme", actor="ops")
        page.reload()
        expect(page.locator("#no-alerts")).to_be_visible()
        # Showing the page never ran a check: only the test's one check is stored.
        assert len(app.monitors.results(model, tenant="acme", limit=1000)) == len(found)
