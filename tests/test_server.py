"""The HTTP API: authentication, authorisation, tenant isolation, stable error codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aevos import Aevos, StepContext, WorkflowContext
from aevos.cli import cli
from aevos.server import create_app


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.step()
    def score(ctx: StepContext, amount: float) -> float:
        return min(1.0, amount / 10_000)

    @app.workflow(name="claims.intake")
    def intake(ctx: WorkflowContext, claim: dict[str, Any]) -> dict[str, Any]:
        return {"risk": score(ctx, float(claim["amount"]))}

    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str, role: str) -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def test_health_needs_no_token(served: tuple[Aevos, TestClient]) -> None:
    _, client = served
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
)
def test_requests_without_a_valid_token_get_401(
    served: tuple[Aevos, TestClient], headers: dict[str, str]
) -> None:
    app, client = served
    response = client.get("/v1/runs", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"
    assert [r.action for r in app.audit.query("default")][-1] == "auth.denied"


def test_the_root_leads_to_the_console_and_unknown_paths_are_json_404s(
    served: tuple[Aevos, TestClient],
) -> None:
    _, client = served
    root = client.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/console")
    landed = client.get("/")  # not signed in: the console's sign-in page
    assert landed.url.path == "/console/login" and "text/html" in landed.headers["content-type"]
    for path in ("/v1/nope", "/nope"):
        missing = client.get(path)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


def test_start_inspect_and_run_to_completion(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    body = {"workflow": "claims.intake", "args": [{"amount": 2500}], "idempotency_key": "c-1"}
    created = client.post("/v1/runs", json=body, headers=ops)
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["tenant"] == "acme" and run["status"] == "ENQUEUED"
    again = client.post("/v1/runs", json=body, headers=ops)
    assert again.json()["run_id"] == run["run_id"]  # idempotent by key

    worker = app.worker().start()
    try:
        assert app.handle(run["run_id"]).result(timeout=15) == {"risk": 0.25}
    finally:
        worker.stop()
    got = client.get(f"/v1/runs/{run['run_id']}", headers=ops).json()
    assert got["status"] == "SUCCEEDED" and got["output"] == {"risk": 0.25}
    steps = client.get(f"/v1/runs/{run['run_id']}/steps", headers=ops).json()
    assert [s["status"] for s in steps] == ["SUCCEEDED"]
    listed = client.get("/v1/runs", params={"status": "SUCCEEDED"}, headers=ops).json()
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    lineage = client.get(f"/v1/runs/{run['run_id']}/lineage", headers=ops).json()["lineage"]
    assert lineage["input_digest"] and lineage["steps"][0]["output_digest"]
    assert "operator:operator" in lineage["people"][0]


def test_errors_carry_stable_codes_and_name_the_field(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    unknown = client.post("/v1/runs", json={"workflow": "nope"}, headers=ops)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_workflow"
    bad = client.post("/v1/runs", json={"workflow": "claims.intake", "args": "x"}, headers=ops)
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "args"
    extra = client.post("/v1/runs", json={"workflow": "claims.intake", "who": 1}, headers=ops)
    assert extra.status_code == 422 and "who" in extra.json()["error"]["message"]
    wrong_args = client.post(
        "/v1/runs", json={"workflow": "claims.intake", "args": [1, 2, 3]}, headers=ops
    )
    assert wrong_args.status_code == 422
    assert wrong_args.json()["error"]["code"] == "invalid_arguments"
    missing = client.get("/v1/runs/does-not-exist", headers=ops)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"
    # Every refused start is still visible, with its reason.
    rejected = client.get("/v1/runs", params={"status": "REJECTED"}, headers=ops).json()
    assert {r["error"]["code"] for r in rejected} == {"unknown_workflow", "invalid_arguments"}


def test_roles_and_tenants_are_enforced(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    a_ops, b_ops = _token(app, "tenant-a", "operator"), _token(app, "tenant-b", "operator")
    reviewer = _token(app, "tenant-a", "reviewer")
    run = client.post(
        "/v1/runs", json={"workflow": "claims.intake", "args": [{"amount": 1}]}, headers=b_ops
    ).json()
    for method, path in [
        ("get", f"/v1/runs/{run['run_id']}"),
        ("get", f"/v1/runs/{run['run_id']}/steps"),
        ("get", f"/v1/runs/{run['run_id']}/lineage"),
        ("post", f"/v1/runs/{run['run_id']}/cancel"),
    ]:
        response = client.request(method, path, headers=a_ops)
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/runs", headers=a_ops).json() == []
    forbidden = client.post("/v1/runs", json={"workflow": "claims.intake"}, headers=reviewer)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert client.post(f"/v1/runs/{run['run_id']}/cancel", headers=b_ops).json() == {
        "status": "CANCELLED"
    }
    resumed = client.post(f"/v1/runs/{run['run_id']}/resume", headers=b_ops)
    assert resumed.json()["status"] == "ENQUEUED"
    forked = client.post(f"/v1/runs/{run['run_id']}/fork", json={"from_step": 0}, headers=b_ops)
    assert forked.status_code == 201 and forked.json()["run_id"] != run["run_id"]


def test_audit_query_verify_export(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")
    auditor = _token(app, "acme", "auditor")
    client.post(
        "/v1/runs", json={"workflow": "claims.intake", "args": [{"amount": 1}]}, headers=ops
    )
    records = client.get("/v1/audit", headers=auditor).json()
    assert [r["action"] for r in records] == ["token.created", "token.created", "run.started"]
    assert client.post("/v1/audit/verify", headers=auditor).json()["ok"] is True
    export = client.get("/v1/audit/export", headers=auditor)
    lines = export.text.strip().splitlines()
    # The verification and the export itself are audited too, the export before it runs.
    assert export.status_code == 200 and len(lines) == 5
    assert '"action":"audit.exported"' in lines[-1]
    assert client.get("/v1/audit/export", headers=ops).status_code == 403


def test_unexpected_errors_are_500_without_their_text(
    served: tuple[Aevos, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = served
    ops = _token(app, "acme", "operator")

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("secret customer data in an exception message")

    monkeypatch.setattr(app.store, "list_runs", boom)
    response = client.get("/v1/runs", headers=ops)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}


def test_aevos_serve_runs_the_api_and_workers(sqlite_url: str, tmp_path: Any) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "AEVOS_DATABASE_URL": sqlite_url}
    app = Aevos(sqlite_url)
    token = app.identity.create_token(tenant="default", role="service", name="s", created_by="t")
    app.close()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aevos",
            "serve",
            "--app",
            "examples.quickstart:app",
            "--port",
            str(port),
            "--workers",
            "2",
            "--max-body-bytes",
            "4096",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token.token}"}
        started = httpx.post(
            f"{base}/v1/runs",
            json={"workflow": "examples.quickstart.triage", "args": [{"text": "invoice"}]},
            headers=headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        for _ in range(100):
            run = httpx.get(f"{base}/v1/runs/{run_id}", headers=headers).json()
            if run["status"] == "SUCCEEDED":
                break
            time.sleep(0.1)
        assert run["output"]["queue"] == "billing"
        too_large = httpx.post(f"{base}/v1/runs", content=b"[" + b" " * 4096 + b"]")
        assert too_large.status_code == 413  # --max-body-bytes
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)  # drains and closes the pipes
    assert "Traceback" not in stderr


def test_aevos_serve_on_a_busy_port_says_so_before_serving(sqlite_url: str) -> None:
    import os
    import socket
    import subprocess
    import sys

    env = {**os.environ, "AEVOS_DATABASE_URL": sqlite_url}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "aevos", "serve", "--port", str(port), "--workers", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # no "serving" banner
    assert done.stderr.startswith(f"error [address_in_use]: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in done.stderr
    # An option refused before the app is built: in-process, no second interpreter start.
    bad = CliRunner().invoke(cli, ["--database-url", sqlite_url, "serve", "--max-body-bytes", "0"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error [bad_option]: --max-body-bytes must be 1 to")


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ModelNotFoundError", 404),
        ("ModelInputError", 422),
        ("BudgetExceededError", 429),
        ("RateLimitedError", 429),
        ("UndeclaredCostError", 409),
        ("CircuitOpenError", 502),
        ("ModelTimeoutError", 502),
        ("StorageUnavailableError", 503),
        ("SchemaError", 500),
    ],
)
def test_error_classes_map_to_http_statuses(name: str, status: int) -> None:
    from aevos import errors
    from aevos.server.errors import status_for

    kind = getattr(errors, name)
    assert status_for(kind.__new__(kind)) == status


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/v1/runs",
            {"workflow": "claims.intake", "args": [{"amount": 1}], "idempotency_key": "a\x00b"},
        ),
        ("GET", "/v1/runs?workflow=a%00b", None),
        ("GET", "/v1/runs/a%00b", None),
    ],
)
def test_a_nul_character_is_the_callers_fault_on_both_backends(
    served: tuple[Aevos, TestClient], method: str, path: str, body: Any
) -> None:
    """PostgreSQL cannot store U+0000 in text; that is a 4xx naming the cause, never a
    database error naming the server."""
    app, client = served
    response = client.request(method, path, json=body, headers=_token(app, "acme", "operator"))
    # SQLite stores U+0000, so a lookup by such a name merely finds nothing there.
    assert response.status_code in (200, 404, 422), response.text
    assert "postgresql" not in response.text and "127.0.0.1" not in response.text
    if method == "POST":
        assert response.status_code == 422
        assert response.json()["error"]["fields"][0]["field"] == "idempotency_key"
    elif response.status_code == 422:
        assert response.json()["error"]["code"] == "not_serializable"
