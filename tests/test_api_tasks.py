"""``/v1/tasks`` and ``/v1/feedback``: the inbox over HTTP, authorised and tenant-scoped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import Aevos, Field, RunStatus, WorkflowContext
from aevos.server import create_app

FORM = [
    Field.choice("verdict", ["approve", "deny"]),
    Field.number("amount", minimum=0, required=False),
]


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.workflow(name="refund")
    def refund(ctx: WorkflowContext, amount: float) -> dict[str, Any]:
        decision = ctx.ask_human(
            f"Refund of {amount}?",
            form=FORM,
            case={"amount": amount},
            suggestion={"verdict": "approve", "amount": amount},
            queue="refunds",
        )
        return {"verdict": decision["verdict"], "by": decision.reviewer}

    @app.workflow(name="senior")
    def senior(ctx: WorkflowContext) -> str:
        return str(ctx.ask_human("Sign off", form=[Field.text("ok")], role="admin")["ok"])

    worker = app.worker(concurrency=4).start()
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    worker.stop()
    app.close()


def _token(app: Aevos, tenant: str, role: str, name: str | None = None) -> dict[str, str]:
    issued = app.identity.create_token(
        tenant=tenant, role=role, name=name or role, created_by="test"
    )
    return {"Authorization": f"Bearer {issued.token}"}


def _ask(app: Aevos, client: TestClient, ops: dict[str, str], amount: float) -> dict[str, Any]:
    run = client.post("/v1/runs", json={"workflow": "refund", "args": [amount]}, headers=ops)
    assert run.status_code == 201, run.text
    run_id = run.json()["run_id"]
    wait_for(lambda: bool(client.get("/v1/tasks", params={"run_id": run_id}, headers=ops).json()))
    (task,) = client.get("/v1/tasks", params={"run_id": run_id}, headers=ops).json()
    return dict(task)


def test_a_reviewer_claims_and_submits_and_the_run_completes(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    alice = _token(app, "acme", "reviewer", "alice")
    task = _ask(app, client, ops, 40.0)
    assert task["status"] == "OPEN" and task["queue"] == "refunds" and task["role"] == "reviewer"
    assert task["form"][0] == {
        "name": "verdict",
        "kind": "choice",
        "required": True,
        "choices": ["approve", "deny"],
        "label": None,
        "help": None,
        "minimum": None,
        "maximum": None,
        "max_length": None,
    }
    assert task["suggestion"] == {"verdict": "approve", "amount": 40.0}

    inbox = client.get("/v1/tasks", params={"workable": True}, headers=alice).json()
    assert [t["task_id"] for t in inbox] == [task["task_id"]]
    claimed = client.post(f"/v1/tasks/{task['task_id']}/claim", headers=alice)
    assert claimed.status_code == 200 and claimed.json()["status"] == "CLAIMED"
    mine = client.get("/v1/tasks", params={"mine": True}, headers=alice).json()
    assert [t["task_id"] for t in mine] == [task["task_id"]]

    done = client.post(
        f"/v1/tasks/{task['task_id']}/submit",
        json={"values": {"verdict": "deny", "amount": 40}},
        headers=alice,
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["task"]["status"] == "SUBMITTED"
    assert body["feedback"]["overridden"] is True
    assert body["feedback"]["decision"] == {"verdict": "deny", "amount": 40.0}
    assert app.handle(task["run_id"]).result(timeout=15)["verdict"] == "deny"
    (record,) = client.get("/v1/feedback", headers=ops).json()
    assert record["task_id"] == task["task_id"] and record["reviewer"].startswith("reviewer:alice")

    again = client.post(
        f"/v1/tasks/{task['task_id']}/submit",
        json={"values": {"verdict": "approve"}},
        headers=alice,
    )
    assert again.status_code == 409
    assert again.json()["error"] | {"message": ""} == {
        "code": "task_conflict",
        "message": "",
        "task_id": task["task_id"],
        "status": "SUBMITTED",
    }
    assert len(client.get("/v1/feedback", headers=ops).json()) == 1


def test_next_claims_in_inbox_order_and_returns_null_when_empty(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    bob = _token(app, "acme", "reviewer", "bob")
    first = _ask(app, client, ops, 1.0)
    second = _ask(app, client, ops, 2.0)
    got = [client.post("/v1/tasks/next", json={}, headers=bob).json()["task"] for _ in range(3)]
    assert [t and t["task_id"] for t in got] == [first["task_id"], second["task_id"], None]
    # Operators may not work reviewer tasks: nothing is workable for them here.
    assert client.post("/v1/tasks/next", json={}, headers=ops).status_code == 403


def test_submitting_after_cancellation_is_a_conflict(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    alice = _token(app, "acme", "reviewer", "alice")
    task = _ask(app, client, ops, 10.0)
    assert client.post(f"/v1/runs/{task['run_id']}/cancel", headers=ops).json() == {
        "status": "CANCELLED"
    }
    response = client.post(
        f"/v1/tasks/{task['task_id']}/submit", json={"values": {"verdict": "deny"}}, headers=alice
    )
    assert response.status_code == 409
    assert response.json()["error"]["status"] == "CANCELLED"
    assert client.get(f"/v1/tasks/{task['task_id']}", headers=alice).json()["status"] == (
        "CANCELLED"
    )
    assert app.get_run(task["run_id"]).status is RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"values": {"verdict": "maybe"}}, "verdict"),
        ({"values": {"verdict": "deny", "amount": -1}}, "amount"),
        ({"values": {"verdict": "deny", "extra": 1}}, "extra"),
        ({"values": {}}, "verdict"),
        ({"values": "deny"}, "values"),
        ({}, "values"),
        ({"values": {"verdict": "deny"}, "unexpected": 1}, "unexpected"),
    ],
)
def test_malformed_submissions_are_422_naming_the_field(
    served: tuple[Aevos, TestClient], body: dict[str, Any], field: str
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    alice = _token(app, "acme", "reviewer", "alice")
    task = _ask(app, client, ops, 5.0)
    response = client.post(f"/v1/tasks/{task['task_id']}/submit", json=body, headers=alice)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    named = error.get("field") or ",".join(f["field"] for f in error.get("fields", []))
    assert field in named
    assert client.get(f"/v1/tasks/{task['task_id']}", headers=alice).json()["status"] == "OPEN"


def test_roles_permissions_and_reassignment(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator", "olga")
    alice = _token(app, "acme", "reviewer", "alice")
    bob = _token(app, "acme", "reviewer", "bob")
    auditor = _token(app, "acme", "auditor")
    service = _token(app, "acme", "service")
    task = _ask(app, client, ops, 7.0)
    url = f"/v1/tasks/{task['task_id']}"

    assert client.get(url, headers=auditor).status_code == 200  # tasks:read
    assert client.post(f"{url}/claim", headers=auditor).status_code == 403  # no tasks:work
    assert client.get("/v1/tasks", headers=service).status_code == 403  # no tasks:read
    assert client.post(f"{url}/claim", headers=ops).status_code == 403  # a reviewer task

    assert client.post(f"{url}/claim", headers=alice).status_code == 200
    taken = client.post(f"{url}/claim", headers=bob)
    assert taken.status_code == 409 and taken.json()["error"]["status"] == "CLAIMED"
    assert client.post(f"{url}/release", headers=bob).status_code == 409
    assert client.post(f"{url}/reassign", json={"queue": "x"}, headers=alice).status_code == 403

    bob_actor = app.identity.create_token(
        tenant="acme", role="reviewer", name="bob2", created_by="test"
    ).principal.actor
    moved = client.post(
        f"{url}/reassign", json={"queue": "vip", "assignee": bob_actor}, headers=ops
    ).json()
    assert (moved["queue"], moved["assignee"], moved["status"]) == ("vip", bob_actor, "CLAIMED")
    released = client.post(f"{url}/release", headers=ops).json()  # operators release anyone's
    assert released["status"] == "OPEN" and released["assignee"] is None

    actions = [r.action for r in app.audit.query("acme", run_id=task["run_id"])]
    assert {"task.created", "task.claimed", "task.reassigned", "task.released"} <= set(actions)


def test_admin_tasks_are_worked_by_admins_only(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    alice = _token(app, "acme", "reviewer", "alice")
    admin = _token(app, "acme", "admin")
    run_id = client.post("/v1/runs", json={"workflow": "senior"}, headers=ops).json()["run_id"]
    wait_for(lambda: bool(client.get("/v1/tasks", params={"run_id": run_id}, headers=ops).json()))
    (task,) = client.get("/v1/tasks", params={"run_id": run_id}, headers=ops).json()
    assert task["role"] == "admin"
    # Reviewers are the wrong role; operators work no tasks at all (no tasks:work).
    assert client.post(f"/v1/tasks/{task['task_id']}/claim", headers=alice).status_code == 403
    assert client.post(f"/v1/tasks/{task['task_id']}/claim", headers=ops).status_code == 403
    assert client.post("/v1/tasks/next", json={}, headers=alice).json() == {"task": None}
    submitted = client.post(
        f"/v1/tasks/{task['task_id']}/submit", json={"values": {"ok": "yes"}}, headers=admin
    )
    assert submitted.status_code == 200, submitted.text
    assert app.handle(run_id).result(timeout=15) == "yes"


def test_tenant_isolation(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    task = _ask(app, client, ops, 3.0)
    other = _token(app, "globex", "reviewer")
    other_ops = _token(app, "globex", "operator")
    assert client.get("/v1/tasks", headers=other).json() == []
    assert client.get("/v1/feedback", headers=other_ops).json() == []
    for method, path, body in [
        ("get", "", None),
        ("post", "/claim", None),
        ("post", "/release", None),
        ("post", "/submit", {"values": {"verdict": "deny"}}),
    ]:
        response = client.request(
            method.upper(), f"/v1/tasks/{task['task_id']}{path}", json=body, headers=other
        )
        assert response.status_code == 403, (path, response.text)
        assert "acme" not in response.text
    assert client.post("/v1/tasks/next", json={}, headers=other).json() == {"task": None}
    denied = app.audit.query("globex", action="authz.denied")
    assert len(denied) == 4 and all(r.data["object"].startswith("task:") for r in denied)
    assert client.get("/v1/tasks/nope", headers=other).status_code == 404
    assert client.get(f"/v1/tasks/{task['task_id']}", headers=ops).json()["status"] == "OPEN"


def test_unauthenticated_requests_are_refused(served: tuple[Aevos, TestClient]) -> None:
    _, client = served
    for method, path in [
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks/next"),
        ("GET", "/v1/tasks/x"),
        ("POST", "/v1/tasks/x/submit"),
        ("GET", "/v1/feedback"),
    ]:
        assert client.request(method, path, json={}).status_code == 401
