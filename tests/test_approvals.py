"""Four-eyes promotions: a promotion the policy sends for approval waits for a second person.

Every test runs on SQLite and PostgreSQL, over HTTP where the API is the point and through
``app.approvals`` where timing is (expiry, races). Each transition is checked against the
registry (did the alias move?) and the audit log (was it recorded, once?).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.test_api_models import _register, _table, _token

from aevos import (
    Aevos,
    ApprovalConflictError,
    ApprovalStatus,
    AuthorizationError,
    DefinitionError,
    PolicySet,
)
from aevos.identity import Principal
from aevos.server import create_app
from aevos.storage.approvals import ApprovalRepository

POLICIES = Path(__file__).resolve().parents[1] / "examples" / "policies"
UNSURE = {  # a clear gain on too few samples: the example promotion-gate asks a person
    "candidate": {"accuracy": 0.90, "calibration_error": 0.05, "samples": 120},
    "champion": {"accuracy": 0.80, "calibration_error": 0.05},
}
CLEAR = {
    "candidate": {"accuracy": 0.90, "calibration_error": 0.05, "samples": 5000},
    "champion": {"accuracy": 0.80, "calibration_error": 0.05},
}


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, poll_interval=0.02, policies=POLICIES)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _versions(app: Aevos, client: TestClient, headers: dict[str, str], count: int = 3) -> None:
    for threshold in range(1, count + 1):
        response = client.post(
            "/v1/models/m/versions", json=_register(_table(threshold * 1000)), headers=headers
        )
        assert response.status_code == 201, response.text


def _promote(
    client: TestClient, headers: dict[str, str], version: int, evidence: dict[str, Any]
) -> dict[str, Any]:
    response = client.post(
        "/v1/models/m/promote", json={"version": version, "evidence": evidence}, headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _champion(app: Aevos, tenant: str = "acme") -> int | None:
    return app.models.aliases("m", tenant=tenant).get("champion")


def _actions(app: Aevos, prefix: str, tenant: str = "acme") -> list[str]:
    return [r.action for r in app.audit.query(tenant) if r.action.startswith(prefix)]


def _principal(app: Aevos, role: str, name: str, tenant: str = "acme") -> Principal:
    issued = app.identity.create_token(tenant=tenant, role=role, name=name, created_by="test")
    return issued.principal


def test_a_second_person_approves_and_the_alias_moves(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    lead = _token(app, "acme", "admin", "lead")
    _versions(app, client, ops)

    asked = _promote(client, ops, 2, UNSURE)
    assert asked["needs_approval"] is True and asked["promoted"] is None
    approval_id = asked["approval_id"]
    assert approval_id and _champion(app) is None
    # Asking again while it waits gives the same approval, not a second one.
    assert _promote(client, ops, 2, UNSURE)["approval_id"] == approval_id

    pending = client.get("/v1/approvals", params={"status": "PENDING"}, headers=lead).json()
    assert [a["approval_id"] for a in pending] == [approval_id]
    (shown,) = pending
    assert shown["model"] == "m" and shown["version"] == 2 and shown["alias"] == "champion"
    assert shown["alias_was"] is None and shown["evidence"] == UNSURE
    assert shown["decision"]["result"] == "approve" and shown["requested_by"].startswith(
        "operator:ops#"
    )

    approved = client.post(
        f"/v1/approvals/{approval_id}/approve", json={"reason": "checked the samples"}, headers=lead
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["promoted"]["version"] == 2 and body["approval"]["status"] == "APPROVED"
    assert body["approval"]["decided_by"].startswith("admin:lead#")
    assert body["approval"]["reason"] == "checked the samples"
    assert _champion(app) == 2

    again = client.post(f"/v1/approvals/{approval_id}/approve", json={}, headers=lead)
    assert again.status_code == 409
    assert again.json()["error"] == {
        "code": "approval_conflict",
        "message": f"approval {approval_id} is APPROVED: it was already decided",
        "approval_id": approval_id,
        "status": "APPROVED",
    }
    records = [r for r in app.audit.query("acme") if r.action.startswith(("approval.", "model.p"))]
    assert [r.action for r in records] == [
        "approval.requested",
        "approval.approved",
        "model.promoted",
    ]
    # The approver moved the alias; the approval record beside it names who asked.
    assert records[2].actor.startswith("admin:lead#")
    assert records[1].data["requested_by"].startswith("operator:ops#")
    # The reason is kept on the approval; the audit record holds only its digest.
    assert "checked the samples" not in str(records[1].data)


def test_the_requester_cannot_approve_their_own_promotion(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    ops_again = _token(app, "acme", "admin", "ops")  # another token, the same person's name
    reviewer = _token(app, "acme", "reviewer", "rita")
    other_tenant = _token(app, "globex", "admin", "gabe")
    _versions(app, client, ops)
    approval_id = _promote(client, ops, 2, UNSURE)["approval_id"]

    for headers in (ops, ops_again, reviewer, other_tenant):
        refused = client.post(f"/v1/approvals/{approval_id}/approve", json={}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
    assert client.get(f"/v1/approvals/{approval_id}", headers=other_tenant).status_code == 403
    assert client.get("/v1/approvals", headers=other_tenant).json() == []
    assert _champion(app) is None
    assert client.get(f"/v1/approvals/{approval_id}", headers=ops).json()["status"] == "PENDING"
    denied = [r for r in app.audit.query("acme") if r.action == "authz.denied"]
    assert len(denied) == 3  # self, the same name, the reviewer's role
    # The other tenant's attempts (approve, read) are in its own log, naming only the id.
    foreign = [r for r in app.audit.query("globex") if r.action == "authz.denied"]
    assert [r.data["object"] for r in foreign] == [f"approval:{approval_id}"] * 2


def test_rejecting_or_withdrawing_closes_it_for_good(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    lead = _token(app, "acme", "admin", "lead")
    _versions(app, client, ops)

    first = _promote(client, ops, 2, UNSURE)["approval_id"]
    rejected = client.post(
        f"/v1/approvals/{first}/reject", json={"reason": "wait for more data"}, headers=lead
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "REJECTED"
    late = client.post(f"/v1/approvals/{first}/approve", json={}, headers=lead)
    assert late.status_code == 409 and late.json()["error"]["status"] == "REJECTED"

    # A rejected request does not block asking again: it is a new approval.
    second = _promote(client, ops, 2, UNSURE)["approval_id"]
    assert second != first
    withdrawn = client.post(f"/v1/approvals/{second}/reject", json={}, headers=ops)
    assert withdrawn.status_code == 200 and withdrawn.json()["decided_by"].startswith("operator:")
    assert _champion(app) is None
    assert _actions(app, "approval.") == [
        "approval.requested",
        "approval.rejected",
        "approval.requested",
        "approval.rejected",
    ]


def test_an_approval_whose_alias_moved_is_superseded(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    lead = _token(app, "acme", "admin", "lead")
    _versions(app, client, ops)

    stale = _promote(client, ops, 2, UNSURE)["approval_id"]
    assert _promote(client, ops, 3, CLEAR)["promoted"]["version"] == 3  # allowed at once

    refused = client.post(f"/v1/approvals/{stale}/approve", json={}, headers=lead)
    assert refused.status_code == 409
    assert refused.json()["error"]["status"] == "SUPERSEDED"
    assert "moved from nothing to version 3" in refused.json()["error"]["message"]
    assert _champion(app) == 3  # approving the stale request did not undo the promotion
    shown = client.get(f"/v1/approvals/{stale}", headers=ops).json()
    assert shown["status"] == "SUPERSEDED" and shown["decided_by"].startswith("system:")
    assert _actions(app, "approval.") == ["approval.requested", "approval.superseded"]


def test_an_approval_the_policy_now_denies_is_rejected(
    served: tuple[Aevos, TestClient], tmp_path: Path
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    lead = _token(app, "acme", "admin", "lead")
    _versions(app, client, ops)
    approval_id = _promote(client, ops, 2, UNSURE)["approval_id"]

    # The gate is tightened while the request waits: a person cannot approve past it.
    (tmp_path / "promotion-gate.yaml").write_text(
        "policy: promotion-gate\nversion: 3\nkind: promotion\n"
        "input:\n  model.name: string\n  candidate.samples: integer\n"
        "rules:\n  - name: enough-samples\n    when: candidate.samples < 1000\n"
        "    decision: deny\n    reason: fewer than 1000 labelled cases\n"
        "default:\n  decision: approve\n  reason: a person decides\n"
    )
    app._policies = PolicySet.load(tmp_path)
    refused = client.post(f"/v1/approvals/{approval_id}/approve", json={}, headers=lead)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["status"] == "REJECTED"
    shown = client.get(f"/v1/approvals/{approval_id}", headers=ops).json()
    assert shown["status"] == "REJECTED" and shown["decided_by"] == "policy:promotion-gate@3"
    assert "fewer than 1000 labelled cases" in shown["reason"]
    assert _champion(app) is None
    decided = [r.data for r in app.audit.query("acme") if r.action == "policy.decided"]
    assert [(d["version"], d["result"]) for d in decided] == [(2, "approve"), (3, "deny")]


def test_approvals_expire_and_workers_sweep_them(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops_headers = _token(app, "acme", "operator", "ops")
    _versions(app, client, ops_headers)
    ops, lead = _principal(app, "operator", "ops2"), _principal(app, "admin", "lead")

    soon = app.access.promote_model(ops, "m", 2, evidence=UNSURE, expires_in=0.05)
    assert soon.approval is not None and soon.approval.status is ApprovalStatus.PENDING
    threading.Event().wait(0.1)
    with pytest.raises(ApprovalConflictError, match="EXPIRED"):
        app.access.approve(lead, soon.approval.approval_id)
    assert app.approvals.get(soon.approval.approval_id).status is ApprovalStatus.EXPIRED

    # Nobody looks at this one: a worker's sweep expires it, once.
    swept = app.access.promote_model(ops, "m", 3, evidence=UNSURE, expires_in=0.05)
    assert swept.approval is not None
    worker = app.worker()
    worker.escalation_interval = 0.02
    worker.start()
    try:
        for _ in range(200):
            if app.approvals.get(swept.approval.approval_id).status.closed:
                break
            threading.Event().wait(0.02)
    finally:
        worker.stop()
    assert app.approvals.get(swept.approval.approval_id).status is ApprovalStatus.EXPIRED
    assert app.approvals.expire_overdue() == []  # nothing left to expire
    assert _actions(app, "approval.") == [
        "approval.requested",
        "approval.expired",
        "approval.requested",
        "approval.expired",
    ]
    assert _champion(app) is None


def test_two_approvers_racing_promote_once(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    _versions(app, client, _token(app, "acme", "operator", "ops"))
    ops = _principal(app, "operator", "ops2")
    approvers = [_principal(app, "admin", f"lead{i}") for i in range(4)]
    promotion = app.access.promote_model(ops, "m", 2, evidence=UNSURE)
    assert promotion.approval is not None
    approval_id = promotion.approval.approval_id

    barrier = threading.Barrier(len(approvers))
    outcomes: list[str] = []

    def approve(who: Principal) -> None:
        barrier.wait()
        try:
            app.access.approve(who, approval_id)
            outcomes.append("won")
        except ApprovalConflictError as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=approve, args=(who,)) for who in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One wins; the others find it approved (by the winner) and change nothing.
    assert sorted(outcomes) == ["APPROVED", "APPROVED", "APPROVED", "won"]
    assert _actions(app, "model.promoted") == ["model.promoted"]
    assert _actions(app, "approval.") == ["approval.requested", "approval.approved"]
    assert _champion(app) == 2


def test_bad_requests_name_the_cause(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    lead = _token(app, "acme", "admin", "lead")
    missing = client.post("/v1/approvals/0123abcd/approve", json={}, headers=lead)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "approval_not_found"
    long = client.post("/v1/approvals/0123abcd/reject", json={"reason": "x" * 2001}, headers=lead)
    assert long.status_code == 422 and "reason" in long.text
    bad_status = client.get("/v1/approvals", params={"status": "maybe"}, headers=lead)
    assert bad_status.status_code == 422 and "status" in bad_status.text
    assert client.get("/v1/approvals").status_code == 401
    with pytest.raises(AuthorizationError, match="reject promotions"):
        app.access.reject(_principal(app, "reviewer", "rita"), "0123abcd")


def test_asking_again_reuses_the_pending_approval_only_while_nothing_changed(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "ops")
    _versions(app, client, ops)
    first = _promote(client, ops, 3, UNSURE)["approval_id"]
    assert _promote(client, ops, 3, UNSURE)["approval_id"] == first

    fresher = {**UNSURE, "candidate": {**UNSURE["candidate"], "samples": 300}}
    second = _promote(client, ops, 3, fresher)["approval_id"]
    assert second != first
    assert client.get(f"/v1/approvals/{first}", headers=ops).json()["status"] == "SUPERSEDED"

    assert _promote(client, ops, 2, CLEAR)["promoted"]["version"] == 2  # the alias moves
    third = _promote(client, ops, 3, fresher)["approval_id"]
    assert third != second
    shown = client.get(f"/v1/approvals/{third}", headers=ops).json()
    assert shown["alias_was"] == 2 and shown["evidence"] == fresher
    assert client.get(f"/v1/approvals/{second}", headers=ops).json()["status"] == "SUPERSEDED"
    pending = client.get("/v1/approvals", params={"status": "PENDING"}, headers=ops).json()
    assert [a["approval_id"] for a in pending] == [third]


def test_long_names_fit_and_a_bare_post_approves(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    asker, approver = "a" * 100, "b" * 100  # the longest names a token may have
    ops = _token(app, "acme", "operator", asker)
    lead = _token(app, "acme", "admin", approver)
    _versions(app, client, ops)
    approval_id = _promote(client, ops, 2, UNSURE)["approval_id"]
    approved = client.post(f"/v1/approvals/{approval_id}/approve", headers=lead)  # no body
    assert approved.status_code == 200, approved.text
    assert approved.json()["promoted"]["version"] == 2 and _champion(app) == 2
    # A longer name would make an actor too long for the audit log: refused when issued.
    with pytest.raises(DefinitionError, match="1-100 characters"):
        app.identity.create_token(tenant="acme", role="admin", name="c" * 101, created_by="t")


def test_both_people_present_promote_in_one_call_under_the_same_checks(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    _versions(app, client, _token(app, "acme", "operator", "ops"))
    ops, lead = _principal(app, "operator", "ops2"), _principal(app, "admin", "lead")
    ops_again = _principal(app, "admin", "ops2")  # the same person's second token
    with pytest.raises(AuthorizationError, match="four eyes"):
        app.access.promote_model(ops, "m", 2, evidence=UNSURE, approved_by=ops_again)
    assert _champion(app) is None
    done = app.access.promote_model(ops, "m", 2, evidence=UNSURE, approved_by=lead)
    assert done.promoted is not None and done.promoted.version == 2
    assert done.approval is not None and done.approval.status is ApprovalStatus.APPROVED
    assert done.approval.decided_by == lead.actor and done.approval.requested_by == ops.actor


def test_an_approval_cannot_be_approved_past_its_expiry(
    served: tuple[Aevos, TestClient],
) -> None:
    import time

    app, client = served
    _versions(app, client, _token(app, "acme", "operator", "ops"))
    asked = app.access.promote_model(_principal(app, "operator", "ops2"), "m", 2, evidence=UNSURE)
    assert asked.approval is not None
    # The approving UPDATE itself checks the expiry: an approval that expired between the
    # approver's checks and the commit is not approved.
    with app.store.transaction() as uow, pytest.raises(ApprovalConflictError, match="EXPIRED"):
        uow.approvals.close(
            asked.approval,
            ApprovalStatus.APPROVED,
            "admin:lead",
            None,
            asked.approval.expires_at + 1,
            before_expiry=True,
        )
    assert app.approvals.get(asked.approval.approval_id).status is ApprovalStatus.PENDING
    assert time.time() < asked.approval.expires_at


def test_one_approval_that_cannot_expire_does_not_hold_up_the_others(
    served: tuple[Aevos, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aevos import AuditChainError

    app, client = served
    _versions(app, client, _token(app, "acme", "operator", "ops"))
    ops = _principal(app, "operator", "ops2")
    stuck = app.access.promote_model(ops, "m", 2, evidence=UNSURE, expires_in=0.01).approval
    fine = app.access.promote_model(ops, "m", 3, evidence=UNSURE, expires_in=0.02).approval
    assert stuck is not None and fine is not None
    threading.Event().wait(0.05)
    close = ApprovalRepository.close

    def broken(self: ApprovalRepository, approval: Any, *args: Any, **kwargs: Any) -> Any:
        if approval.approval_id == stuck.approval_id:
            raise AuditChainError("the tenant's chain head is missing")
        return close(self, approval, *args, **kwargs)

    monkeypatch.setattr(ApprovalRepository, "close", broken)
    expired = app.approvals.expire_overdue()
    assert [a.approval_id for a in expired] == [fine.approval_id]
    assert app.approvals.get(stuck.approval_id).status is ApprovalStatus.PENDING
