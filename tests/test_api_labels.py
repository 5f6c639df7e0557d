"""``/v1/labels`` and ``/v1/datasets`` over HTTP: permission checked, tenant scoped, bounded."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import Aevos, Field, WorkflowContext
from aevos.server import create_app

FORM = [Field.choice("verdict", ["approve", "deny"])]


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    table = {
        "input": {"amount": "number"},
        "table": [{"id": "small", "when": {"amount": {"lt": 1000}}, "label": "approve"}],
        "default": {"label": "deny", "confidence": 0.5},
    }
    app.models.register(
        "claims", json.dumps(table).encode(), flavor="rules", tenant="acme", aliases=["champion"]
    )

    @app.workflow(name="claim")
    def claim(ctx: WorkflowContext, amount: float) -> dict[str, Any]:
        prediction = ctx.predict("claims", {"amount": amount})
        task_id = ctx.qa_sample(prediction, share=1.0, form=FORM, case={"amount": amount})
        return {"qa": task_id, "call_id": prediction.call_id}

    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str, name: str | None = None) -> dict[str, str]:
    issued = app.identity.create_token(
        tenant=tenant, role=role, name=name or role, created_by="test"
    )
    return {"Authorization": f"Bearer {issued.token}"}


def _case(app: Aevos, tenant: str, verdict: str = "approve") -> str:
    """An automated claim decision of ``tenant``, QA-checked by a reviewer: its case id."""
    out = app.workflow_named("claim").options(tenant=tenant).run(40.0)
    app.tasks.submit(out["qa"], {"verdict": verdict}, actor="reviewer:r#t1", tenant=tenant)
    return str(out["call_id"])


def test_late_ground_truth_by_http_outranks_the_reviewer_and_lists_the_conflict(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    case = _case(app, "acme")
    claims = _token(app, "acme", "service", "claims")
    posted = client.post(
        "/v1/labels",
        json={"labels": [{"case_id": case, "label": "deny", "unbiased": True}]},
        headers=claims,
    )
    assert posted.status_code == 201, posted.text
    (label,) = posted.json()["labels"]
    assert label["source"] == "ground_truth" and label["model"] == "claims"
    assert label["actor"].startswith("service:claims#") and label["unbiased"] is True

    ops = _token(app, "acme", "operator")
    listed = client.get("/v1/labels", params={"case_id": case}, headers=ops).json()["labels"]
    assert [(x["source"], x["label"]) for x in listed] == [
        ("qa", "approve"),
        ("ground_truth", "deny"),
    ]
    (conflict,) = client.get("/v1/labels/conflicts", headers=ops).json()
    assert conflict["winner_id"] == label["id"] and conflict["other"] == "approve"
    # A service reports ground truth; it does not read labels.
    assert client.get("/v1/labels", headers=claims).status_code == 403


def test_labels_are_refused_clearly_and_the_refusal_is_recorded(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    case = _case(app, "acme")
    claims = _token(app, "acme", "service", "claims")
    unknown = client.post(
        "/v1/labels", json={"labels": [{"case_id": "nope", "label": "deny"}]}, headers=claims
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "case_not_found"
    # Another tenant's case is unknown here.
    other = _token(app, "globex", "service", "claims")
    foreign = client.post(
        "/v1/labels", json={"labels": [{"case_id": case, "label": "deny"}]}, headers=other
    )
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "case_not_found"
    rejected = [r for r in app.audit.query(tenant="acme") if r.action == "label.rejected"]
    assert [r.data["reason"] for r in rejected] == ["case_not_found"]
    assert [r.action for r in app.audit.query(tenant="globex")].count("label.rejected") == 1

    for body in (
        {"labels": []},
        {"labels": [{"case_id": case}]},
        {"labels": [{"case_id": case, "label": ["deny"]}]},
        {"labels": [{"case_id": case, "label": "deny", "source": "oracle"}]},
        {"labels": [{"case_id": "a\x00b", "label": "deny"}]},
        {"labels": [{"case_id": case, "label": "deny"}] * 1001},
        {"labels": [{"case_id": case, "label": "deny", "extra": 1}]},
    ):
        response = client.post("/v1/labels", json=body, headers=claims)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_request"
    text = client.post(
        "/v1/labels", json={"labels": [{"case_id": case, "label": "x" * 1001}]}, headers=claims
    )
    assert text.status_code == 422 and text.json()["error"]["code"] == "invalid_label"
    assert text.json()["error"]["field"] == "labels[0].label"

    reviewer = _token(app, "acme", "reviewer")
    denied = client.post(
        "/v1/labels", json={"labels": [{"case_id": case, "label": "deny"}]}, headers=reviewer
    )
    assert denied.status_code == 403
    assert [label.source.value for label in app.labels.list(tenant="acme")] == ["qa"]


def test_datasets_over_http(
    served: tuple[Aevos, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = served
    first, second = _case(app, "acme"), _case(app, "acme", "deny")
    ops = _token(app, "acme", "operator")
    made = client.post("/v1/datasets", json={"model": "claims"}, headers=ops)
    assert made.status_code == 201, made.text
    version = made.json()
    assert version["rows"] == 2 and version["sources"] == {"qa": 2} and version["people"] == 1
    digest = version["digest"]
    assert client.post("/v1/datasets", json={"model": "claims"}, headers=ops).json() == version

    auditor = _token(app, "acme", "auditor")
    assert [d["digest"] for d in client.get("/v1/datasets", headers=auditor).json()] == [digest]
    shown = client.get(f"/v1/datasets/{digest}", params={"limit": 1}, headers=auditor).json()
    assert [r["case_id"] for r in shown["rows_shown"]] == [first]
    exported = client.get(f"/v1/datasets/{digest}/export", headers=auditor)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["case_id"], r["label"]) for r in rows] == [(first, "approve"), (second, "deny")]
    assert any(r.action == "dataset.exported" for r in app.audit.query(tenant="acme"))

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    parquet = client.get(f"/v1/datasets/{digest}/export?format=parquet", headers=auditor)
    assert parquet.status_code == 422
    assert parquet.json()["error"]["code"] == "export_format_unavailable"
    assert "pyarrow" in parquet.json()["error"]["message"]

    # Permissions and tenants.
    reviewer = _token(app, "acme", "reviewer")
    assert client.get("/v1/datasets", headers=reviewer).status_code == 403
    assert client.post("/v1/datasets", json={"model": "claims"}, headers=auditor).status_code == 403
    globex = _token(app, "globex", "admin")
    assert client.get(f"/v1/datasets/{digest}", headers=globex).status_code == 404
    assert client.get("/v1/datasets", headers=globex).json() == []
    # Bad input.
    assert client.get("/v1/datasets/not-a-digest", headers=ops).status_code == 422
    assert client.get(f"/v1/datasets/{digest}/export?format=xlsx", headers=ops).status_code == 422
    empty = client.post("/v1/datasets", json={"model": "nothing"}, headers=ops)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "invalid_dataset"
    assert client.get(f"/v1/datasets/{'0' * 64}", headers=ops).status_code == 404
