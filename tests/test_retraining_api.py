"""Starting and reading retrainings over HTTP, the CLI and the console, on both backends.

The API only enqueues (202 with the run id): nothing trains in the serving process, and the
run stays queued until a worker takes it. Permissions, tenants and bad input are checked,
and a refused start is audited with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from tests import test_console
from tests.apps.retrain_app import CERTIFY_FAST, POLICIES, BankingLabels
from tests.test_console import Console, serving, sign_in
from typer.testing import CliRunner

from aevos import Aevos, RunStatus
from aevos.cli import cli
from aevos.retraining import WORKFLOW
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODEL = "intents"
browser = test_console.browser
open_page = test_console.open_page


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=POLICIES
    )
    app.retraining.data = BankingLabels()
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def test_post_retrain_enqueues_for_a_worker_and_answers_202(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    app.retraining.configure(MODEL, recipe="tfidf-logreg", tenant="acme", **CERTIFY_FAST)
    ops, reviewer = _token(app, "acme", "operator"), _token(app, "acme", "reviewer")

    started = client.post(f"/v1/models/{MODEL}/retrain", headers=ops)
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "queued" and body["trigger"] == "manual"
    assert body["requested_by"].startswith("operator:operator#")
    run = app.get_run(body["run_id"])
    # Enqueued on the retraining queue, not run: no worker is running in this test.
    assert run.workflow == WORKFLOW and run.tenant == "acme" and run.queue == "retraining"
    assert run.status is RunStatus.ENQUEUED and app.list_steps(body["run_id"]) == []

    shown = client.get(f"/v1/models/{MODEL}/retraining", headers=reviewer)
    assert shown.status_code == 200
    overview = shown.json()
    assert overview["config"]["recipe"] == "tfidf-logreg" and overview["config"]["version"] == 1
    assert [r["run_id"] for r in overview["runs"]] == [body["run_id"]]
    one = client.get(f"/v1/retrainings/{body['run_id']}", headers=reviewer)
    assert one.status_code == 200 and one.json()["model"] == MODEL

    # A reviewer reads but may not retrain; the refusal is audited.
    refused = client.post(f"/v1/models/{MODEL}/retrain", headers=reviewer)
    assert refused.status_code == 403
    denied = [r for r in app.audit.query("acme") if r.action == "authz.denied"]
    assert denied and denied[-1].data["attempted"] == "retrain models"

    # Another tenant sees neither the configuration nor the retraining.
    other = _token(app, "globex", "operator")
    missing = client.post(f"/v1/models/{MODEL}/retrain", headers=other)
    assert (
        missing.status_code == 404
        and missing.json()["error"]["code"] == "retraining_not_configured"
    )
    assert client.get(f"/v1/retrainings/{body['run_id']}", headers=other).status_code == 404
    rejected = [r for r in app.audit.query("globex") if r.action == "retraining.rejected"]
    assert rejected[0].data["code"] == "retraining_not_configured"
    assert "no retraining configuration" in rejected[0].data["reason"]
    assert len(app.list_runs(workflow=WORKFLOW)) == 1

    # Bad input: a name too long, an unauthenticated request.
    assert client.post(f"/v1/models/{'x' * 201}/retrain", headers=ops).status_code == 422
    assert client.post(f"/v1/models/{MODEL}/retrain").status_code == 401


def test_retraining_in_the_cli(database_url: str) -> None:
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, ["--database-url", database_url, "models", *args])
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    missing = run("retrain", MODEL, code=2)
    assert "error [retraining_not_configured]" in missing.stderr
    unknown = run("retrain-config", MODEL, "--recipe", "nope", code=2)
    assert "error [recipe_not_found]: no recipe is called 'nope'" in unknown.stderr
    bad = run("retrain-config", MODEL, "--recipe", "tfidf-logreg", "--holdout", "3", code=2)
    assert "error [invalid_retraining_config]: holdout must be" in bad.stderr
    configured = run(
        "retrain-config",
        MODEL,
        "--recipe",
        "tfidf-logreg",
        "--params",
        '{"C": 5}',
        "--every-labels",
        "200",
        "--json",
    )
    config = json.loads(configured.stdout)
    assert config["version"] == 1 and config["params"]["C"] == 5.0
    assert config["every_labels"] == 200 and config["updated_by"].startswith("cli:")
    run_id = run("retrain", MODEL).stdout.strip()
    with Aevos(database_url) as app:
        assert app.get_run(run_id).workflow == WORKFLOW
        assert app.retraining.run(run_id).requested_by.startswith("cli:")
    shown = run("retraining", MODEL).stdout
    assert "tfidf-logreg (configuration 1); triggers: every 200 labels" in shown
    assert run_id in shown and "queued" in shown
    listed = json.loads(run("retraining", MODEL, "--json").stdout)
    assert [r["run_id"] for r in listed["runs"]] == [run_id]


def test_the_model_pages_retrain_button_enqueues_a_retraining(
    database_url: str, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    model = "claims-risk"  # the console fixture's model, tenant acme
    with serving(database_url) as served:
        page = open_page(served)
        sign_in(page, served.token("acme", "operator"))
        page.wait_for_url("**/console/runs")
        page.goto(f"/console/models/{model}")
        expect(page.locator("#retraining + p")).to_contain_text("No retraining configuration")
        served.app.retraining.configure(model, recipe="tfidf-logreg", tenant="acme")
        page.reload()
        expect(page.locator("#retrainings")).to_have_count(0)
        # Without the session's CSRF secret the post is refused and nothing starts.
        forged = page.request.post(f"/console/models/{model}/retrain", form={"csrf_token": "x"})
        assert forged.status == 403
        page.click("#retrain-form button")
        page.wait_for_url(f"**/console/models/{model}#retraining")
        rows = page.locator("#retrainings tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("manual")
        expect(rows.first).to_contain_text("queued")
        [record] = served.app.retraining.runs(model, tenant="acme")
        assert record.requested_by.startswith("operator:")
        # A reviewer sees the retrainings but no button.
        viewer = open_page(served)
        sign_in(viewer, served.token("acme", "reviewer"))
        viewer.wait_for_url("**/console/**")
        viewer.goto(f"/console/models/{model}")
        expect(viewer.locator("#retrainings tbody tr")).to_have_count(1)
        expect(viewer.locator("#retrain-form")).to_have_count(0)
