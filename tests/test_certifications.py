"""Certification records: kept, audited, served with every answer, read over HTTP and the CLI.

Every test runs on SQLite and PostgreSQL. The model is a real rules version whose answers
have known confidences (0.99 for small amounts, 0.5 otherwise), so that an answer above,
below or without its version's certified threshold is exact; the certifications are real
outcomes of :func:`aevos.evolution.certify` on labelled cases.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from tests import test_console
from tests.test_console import Console, serving, sign_in
from typer.testing import CliRunner

from aevos import Aevos, CallResult, DefinitionError, ModelNotFoundError, WorkflowContext
from aevos.cli import cli
from aevos.evolution import Certification, certify
from aevos.models.gateway import Gateway
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODEL = "claims-risk"
# The console tests' real browser (chromium through Playwright), shared with this module.
browser = test_console.browser
open_page = test_console.open_page


def _table(limit: float) -> bytes:
    return json.dumps(
        {
            "input": {"amount": "number"},
            "table": [
                {
                    "id": "small",
                    "when": {"amount": {"lt": limit}},
                    "label": "auto",
                    "confidence": 0.99,
                }
            ],
            "default": {"label": "review", "confidence": 0.5},
        }
    ).encode()


def _register(app: Aevos, *, tenant: str = "default", limit: float = 1000) -> int:
    version = app.models.register(
        MODEL, _table(limit), flavor="rules", tenant=tenant, aliases=["champion"]
    )
    return version.version


def _certified() -> Certification:
    """400 right answers at 0.99, 100 wrong at 0.5: certified at a threshold of 0.9."""
    confidences = [0.99] * 400 + [0.5] * 100
    correct = [True] * 400 + [False] * 100
    return certify(confidences, correct, grid=[0.99, 0.9, 0.5])


def _too_few() -> Certification:
    return certify([0.99] * 20, [True] * 20)


# -- records -----------------------------------------------------------------------------------


def test_record_latest_and_history_with_an_audit_record(app: Aevos) -> None:
    version = _register(app)
    assert app.certifications.latest(MODEL, version) is None
    first = app.certifications.record(
        MODEL, version, _too_few(), dataset="sha256:" + "a" * 64, actor="system:retraining"
    )
    assert first.threshold is None and not first.certified and first.n == 20
    assert first.reason is not None and "too few labelled cases" in first.reason
    second = app.certifications.record(
        MODEL, version, _certified(), dataset="sha256:" + "b" * 64, actor="system:retraining"
    )
    assert second.id > first.id
    assert (second.threshold, second.target, second.delta, second.method) == (
        0.9,
        0.97,
        0.1,
        "binomial",
    )
    assert (second.n, second.n_above, second.errors) == (500, 400, 0)
    assert second.p_value == pytest.approx(0.97**400)
    assert second.automates(0.95) and not second.automates(0.5) and not second.automates(None)

    assert app.certifications.latest(MODEL, version) == second
    assert app.certifications.history(MODEL) == [second, first]
    assert app.certifications.history(MODEL, version=version, limit=1) == [second]
    assert app.certifications.latest_by_version(MODEL) == {version: second}

    records = [r for r in app.audit.query("default") if r.action == "model.certified"]
    assert [r.data["id"] for r in records] == [first.id, second.id]
    audited = records[1]
    assert audited.actor == "system:retraining" and audited.subject == f"{MODEL}@{version}".join(
        ("model:", "")
    )
    assert audited.data["threshold"] == 0.9 and audited.data["n"] == 500
    assert audited.data["dataset"] == "sha256:" + "b" * 64
    # Figures only: no confidences, no labels, no cases.
    assert set(audited.data) == {
        "id", "model", "version", "certified", "threshold", "target", "delta", "method",
        "n", "errors", "p_value", "dataset", "evidence",
    }  # fmt: skip
    assert app.audit.verify("default").ok


def test_the_repository_serves_the_latest_threshold_of_each_version(app: Aevos) -> None:
    version = _register(app)
    _register(app, limit=2000)
    with app.store.reading() as uow:
        assert uow.certifications.threshold("default", MODEL, version) == (False, None)
        assert uow.certifications.latest_by_version("default", MODEL) == {}
    first = app.certifications.record(MODEL, version, _certified())
    with app.store.reading() as uow:
        assert uow.certifications.threshold("default", MODEL, version) == (True, 0.9)
    uncertified = app.certifications.record(MODEL, version, _too_few())
    second = app.certifications.record(MODEL, 2, _certified())
    with app.store.reading() as uow:
        assert uow.certifications.threshold("default", MODEL, version) == (True, None)
        assert uow.certifications.threshold("other", MODEL, version) == (False, None)
        assert uow.certifications.latest_by_version("default", MODEL) == {1: uncertified, 2: second}
        assert uow.certifications.history("default", MODEL) == [second, uncertified, first]
        assert uow.certifications.history("default", MODEL, version=1, limit=5) == [
            uncertified,
            first,
        ]


def test_certify_a_version_from_labelled_pairs(app: Aevos) -> None:
    version = _register(app)
    record = app.certifications.certify(
        MODEL, version, [0.99] * 400 + [0.5] * 100, [True] * 400 + [False] * 100, dataset="d1"
    )
    assert record.certified and record.threshold is not None and 0.5 < record.threshold <= 0.99
    assert record.dataset == "d1" and record.created_by == "system"
    # The calibration curve fitted on the same cases is kept (and read back) beside the
    # threshold: right 80% at 0.5 and always at 0.99.
    kept = app.certifications.latest(MODEL, version)
    assert kept is not None and kept.calibration == ([0.5, 0.99], [0.0, 1.0])


def test_bad_records_are_refused_with_the_reason(app: Aevos) -> None:
    version = _register(app)
    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        app.certifications.record("nope", 1, _certified())
    with pytest.raises(ModelNotFoundError, match="has no version 7"):
        app.certifications.record(MODEL, 7, _certified())
    with pytest.raises(ModelNotFoundError):
        app.certifications.latest(MODEL, 1, tenant="other")
    with pytest.raises(DefinitionError, match="takes a Certification"):
        app.certifications.record(MODEL, version, {"threshold": 0.5})  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="dataset version's digest"):
        app.certifications.record(MODEL, version, _certified(), dataset="../../etc/passwd")
    with pytest.raises(DefinitionError, match="a version is a number"):
        app.certifications.latest(MODEL, 0)
    forged = Certification(
        certified=True, threshold=0.1, n=10, n_above=50, errors=0, p_value=0.01,
        target=0.97, delta=0.1, method="binomial", min_count=0, start=0.9,
    )  # fmt: skip
    with pytest.raises(DefinitionError, match="errors <= n_above <= n"):
        app.certifications.record(MODEL, version, forged)
    for curve in [((0.9, 0.5), (0.2, 0.8)), ((0.5,), (0.5,)), ((0.1, 0.9), (0.2, 1.5))]:
        bent = dataclasses.replace(_certified(), calibration=curve)
        with pytest.raises(DefinitionError, match="calibration curve"):
            app.certifications.record(MODEL, version, bent)
    with pytest.raises(DefinitionError, match="limit"):
        app.certifications.history(MODEL, limit=0)
    assert app.certifications.history(MODEL) == []
    assert not [r for r in app.audit.query("default") if r.action == "model.certified"]


# -- serving -----------------------------------------------------------------------------------


def test_a_prediction_carries_its_versions_certified_threshold(app: Aevos) -> None:
    version = _register(app)
    gateway = app.gateway
    uncertified = gateway.predict(MODEL, {"amount": 10})
    assert uncertified.confidence == 0.99
    assert uncertified.certified_threshold is None and not uncertified.certified

    # Recorded through this app: this process serves it at once.
    app.certifications.record(MODEL, version, _certified())
    above = gateway.predict(MODEL, {"amount": 10})
    below = gateway.predict(MODEL, {"amount": 5000})
    assert (above.certified_threshold, above.certified) == (0.9, True)
    assert (below.confidence, below.certified_threshold, below.certified) == (0.5, 0.9, False)

    # A later certification that certifies nothing takes the threshold away.
    app.certifications.record(MODEL, version, _too_few())
    again = gateway.predict(MODEL, {"amount": 10})
    assert again.certified_threshold is None and not again.certified

    # The threshold is the answering version's: version 2 has none.
    _register(app, limit=2000)
    app.certifications.record(MODEL, version, _certified())
    gateway.invalidate(MODEL)  # champion moved to v2: resolve it now, not in a second
    newer = gateway.predict(MODEL, {"amount": 10})
    assert (newer.version, newer.certified_threshold, newer.certified) == (2, None, False)
    assert gateway.certified_threshold(MODEL, version) == 0.9


def test_a_certification_recorded_elsewhere_is_served_after_the_ttl(
    app: Aevos, make_app: Callable[..., Aevos]
) -> None:
    version = _register(app)
    other = make_app()  # another process's view of the same database
    patient = Gateway(other.store, other.models, other.audit, certification_ttl=3600)
    eager = Gateway(other.store, other.models, other.audit, certification_ttl=0.02)
    try:
        for gateway in (patient, eager):
            assert gateway.predict(MODEL, {"amount": 10}).certified_threshold is None
        app.certifications.record(MODEL, version, _certified())
        # Cached until its ttl ends: an hour here...
        assert patient.predict(MODEL, {"amount": 10}).certified_threshold is None
        time.sleep(0.05)  # ...and 20 ms here
        served = eager.predict(MODEL, {"amount": 10})
        assert (served.certified_threshold, served.certified) == (0.9, True)
        patient.invalidate(MODEL)
        assert patient.predict(MODEL, {"amount": 10}).certified
    finally:
        patient.close()
        eager.close()
    with pytest.raises(DefinitionError, match="certification_ttl"):
        Gateway(other.store, other.models, other.audit, certification_ttl=-1)


def test_old_recorded_results_decode_without_a_threshold(app: Aevos) -> None:
    _register(app)
    result = app.gateway.predict(MODEL, {"amount": 10})
    record = result.to_record()
    assert record["certified_threshold"] is None
    del record["certified_threshold"]  # as recorded before certifications existed
    old = CallResult.from_record(record)
    assert old.certified_threshold is None and not old.certified
    stamped = CallResult.from_record({**record, "certified_threshold": 0.9})
    assert stamped.certified and stamped == CallResult.from_record(stamped.to_record())


ROUTING_POLICY = """\
policy: auto-route
version: 1
kind: action
description: Route automatically only what the answering version is certified to automate.
input:
  prediction.label: string
  prediction.certified: boolean
  prediction.certified_threshold?: number
rules:
  - name: certified
    when: prediction.certified == True
    decision: allow
    reason: the answer reaches its version's certified threshold
default:
  decision: review
  reason: not certified; a person decides
"""


@pytest.fixture
def governed(database_url: str, tmp_path: Path) -> Iterator[Aevos]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "auto-route.yaml").write_text(ROUTING_POLICY)
    application = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=policies
    )
    yield application
    application.close()


def test_a_policy_automates_only_certified_answers_and_replays_them(governed: Aevos) -> None:
    app = governed
    version = _register(app)

    @app.workflow()
    def route(ctx: WorkflowContext, amount: float) -> dict[str, Any]:
        prediction = ctx.predict(MODEL, {"amount": amount})
        decision = ctx.decide("auto-route", prediction=prediction)
        return {
            "decision": decision.result,
            "threshold": prediction.certified_threshold,
            "certified": prediction.certified,
        }

    assert route.run(10) == {"decision": "review", "threshold": None, "certified": False}
    app.certifications.record(MODEL, version, _certified())
    assert route.run(10) == {"decision": "allow", "threshold": 0.9, "certified": True}
    assert route.run(5000) == {"decision": "review", "threshold": 0.9, "certified": False}

    # A replay returns the recorded answer, threshold included, whatever is certified now.
    run = next(r for r in app.list_runs(workflow=route.name) if r.output["decision"] == "allow")
    app.certifications.record(MODEL, version, _too_few())
    predicted = app.list_steps(run.run_id)[0]
    assert predicted.output["certified_threshold"] == 0.9
    forked = app.fork(run.run_id, from_step=2)
    worker = app.worker().start()
    try:
        replayed = forked.result(timeout=30)
    finally:
        worker.stop()
    assert replayed == {"decision": "allow", "threshold": 0.9, "certified": True}


# -- HTTP, CLI ---------------------------------------------------------------------------------


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def test_certifications_over_http(app: Aevos) -> None:
    version = _register(app, tenant="acme")
    _register(app, tenant="globex")
    base = f"/v1/models/{MODEL}/versions/{version}"
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        reviewer = _token(app, "acme", "reviewer")
        none = client.get(f"{base}/certification", headers=reviewer)
        assert none.status_code == 200, none.text
        assert none.json() == {
            "model": MODEL,
            "version": version,
            "certified": False,
            "threshold": None,
            "certification": None,
        }
        assert client.get(f"{base}/certifications", headers=reviewer).json() == []

        first = app.certifications.record(MODEL, version, _too_few(), tenant="acme")
        second = app.certifications.record(
            MODEL, version, _certified(), tenant="acme", dataset="sha256:abc"
        )
        latest = client.get(f"{base}/certification", headers=reviewer).json()
        assert latest["certified"] is True and latest["threshold"] == 0.9
        shown = latest["certification"]
        assert shown["id"] == second.id and shown["dataset"] == "sha256:abc"
        assert (shown["n"], shown["n_above"], shown["errors"]) == (500, 400, 0)
        # The fixed sequence starts at half the 500 cases (start_count: 176 to 308).
        assert shown["reason"] is None and shown["evidence"]["min_count"] == 250
        history = client.get(f"{base}/certifications", headers=reviewer).json()
        assert [c["id"] for c in history] == [second.id, first.id]
        assert history[1]["certified"] is False and "too few" in history[1]["reason"]
        one = client.get(f"{base}/certifications?limit=1", headers=reviewer).json()
        assert [c["id"] for c in one] == [second.id]
        assert client.get(f"{base}/certifications?limit=0", headers=reviewer).status_code == 422

        # A prediction over HTTP says whether it may be automated.
        ops = _token(app, "acme", "operator")
        answer = client.post(
            f"/v1/models/{MODEL}/predict", json={"input": {"amount": 1}}, headers=ops
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["certified_threshold"], answer.json()["certified"]) == (0.9, True)

        # Unknown models and versions, other tenants, no token.
        for path in (
            "/v1/models/nope/versions/1/certification",
            f"/v1/models/{MODEL}/versions/9/certification",
            "/v1/models/nope/versions/1/certifications",
        ):
            missing = client.get(path, headers=reviewer)
            assert missing.status_code == 404, path
            assert missing.json()["error"]["code"] == "model_not_found"
        # globex has its own claims-risk@1, never certified; acme's is not visible to it.
        theirs = client.get(f"{base}/certification", headers=_token(app, "globex", "admin"))
        assert theirs.status_code == 200 and theirs.json()["certification"] is None
        assert client.get(f"{base}/certification").status_code == 401
        bad = client.get(f"/v1/models/{MODEL}/versions/0/certification", headers=reviewer)
        assert bad.status_code == 422


def test_certification_in_the_cli(database_url: str) -> None:
    with Aevos(database_url) as app:
        version = _register(app)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, ["--database-url", database_url, "models", *args])
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    assert "not certified - nothing automated" in run("certification", MODEL, "1").stdout
    assert json.loads(run("certification", MODEL, "1", "--json").stdout) is None
    with Aevos(database_url) as app:
        app.certifications.record(MODEL, version, _too_few())
        record = app.certifications.record(MODEL, version, _certified(), dataset="sha256:abc")
    shown = run("certification", MODEL, "1").stdout
    assert f"{MODEL}@1: threshold 0.900" in shown
    assert "500 labelled cases, 400 at or above the threshold, 0 error(s)" in shown
    assert "dataset: sha256:abc" in shown
    assert json.loads(run("certification", MODEL, "1", "--json").stdout) == record.to_json()
    history = json.loads(run("certification", MODEL, "1", "--history", "--json").stdout)
    assert [h["certified"] for h in history] == [True, False]
    assert "too few labelled cases" in run("certification", MODEL, "1", "--history").stdout
    missing = run("certification", "nope", "1", code=2)
    assert "error [model_not_found]: no model 'nope'" in missing.stderr
    assert "Invalid value for 'VERSION'" in run("certification", MODEL, "0", code=2).stderr


# -- the console -------------------------------------------------------------------------------


def test_the_model_page_shows_each_versions_certification(
    database_url: str, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    with serving(database_url) as served:
        # claims-risk (tenant acme) has two versions: v1 certified, v2 never.
        served.app.certifications.record(
            MODEL, 1, _certified(), tenant="acme", dataset="sha256:" + "c" * 64, actor="retrainer"
        )
        page = open_page(served)
        sign_in(page, served.token("acme", "operator"))
        page.wait_for_url("**/console/runs")
        page.goto(f"/console/models/{MODEL}")
        rows = page.locator("#certifications tbody tr")
        expect(rows).to_have_count(2)
        newest, oldest = (
            page.locator("#certifications tbody tr[data-version='2']"),
            page.locator("#certifications tbody tr[data-version='1']"),
        )
        expect(newest).to_contain_text("not certified — nothing automated")
        for shown in ("0.900", "0.97", "0.1", "500 (400 above)", "5.11e-06", "sha256:ccccccccccc"):
            expect(oldest).to_contain_text(shown)
        expect(oldest).to_contain_text("by retrainer")
        # A later certification that certifies nothing is shown with its reason.
        served.app.certifications.record(MODEL, 1, _too_few(), tenant="acme")
        page.reload()
        expect(oldest).to_contain_text("not certified — nothing automated")
        expect(oldest).to_contain_text("too few labelled cases to certify: 20")
