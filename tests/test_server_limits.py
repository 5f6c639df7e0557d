"""Bounded requests and responses: request bodies past their limit get 413 unread, and
listings show large inputs, outputs and cases as summaries with a link to the whole value."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from aevos import Aevos, Field, StepContext, WorkflowContext
from aevos.errors import DefinitionError
from aevos.server import create_app
from aevos.server.limits import DEFAULT_MAX_BODY_BYTES, MAX_BODY_ENV
from aevos.server.summaries import DEFAULT_LISTED_VALUE_BYTES

MiB = 1 << 20
LIMIT = DEFAULT_MAX_BODY_BYTES


def _app(database_url: str) -> Aevos:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.step()
    def echo(ctx: StepContext, text: str) -> dict[str, Any]:
        return {"echo": text}

    @app.workflow(name="intake")
    def intake(ctx: WorkflowContext, note: str) -> dict[str, Any]:
        return {"steps": echo(ctx, note), "size": len(note)}

    @app.workflow(name="review")
    def review(ctx: WorkflowContext, note: str) -> str:
        decision = ctx.ask_human("Read it", form=[Field.choice("ok", ["yes", "no"])], case=note)
        return str(decision["ok"])

    return app


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Aevos, TestClient]]:
    app = _app(database_url)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield app, client
    app.close()


def _token(app: Aevos, tenant: str = "acme", role: str = "operator") -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="test")
    return {"Authorization": f"Bearer {issued.token}"}


def _start_body(size: int) -> bytes:
    """A well-formed start of ``intake`` whose body is ``size`` bytes."""
    head, tail = b'{"workflow": "intake", "args": ["', b'"]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _refused(app: Aevos) -> list[Any]:
    return [r for r in app.audit.query("default") if r.action.startswith("request.refused")]


# -- request bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked", "understated"])
def test_a_20_mib_start_is_refused_with_413_and_recorded(
    served: tuple[Aevos, TestClient], framing: str
) -> None:
    app, client = served
    headers = _token(app) | {"Content-Type": "application/json"}
    body = _start_body(20 * MiB)
    if framing == "content-length":
        response = client.post("/v1/runs", content=body, headers=headers)
    elif framing == "chunked":  # no Content-Length: counted as it arrives
        response = client.post("/v1/runs", content=iter([body]), headers=headers)
    else:  # a Content-Length that lies: counted all the same
        response = client.post("/v1/runs", content=body, headers=headers | {"Content-Length": "9"})
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert f"at most {LIMIT} bytes" in error["message"]
    assert app.list_runs(tenant="acme") == []  # nothing started, nothing rejected either
    (record,) = _refused(app)
    assert (record.action, record.actor) == ("request.refused", "anonymous")
    assert record.data["path"] == "/v1/runs" and record.data["limit"] == LIMIT
    assert record.data["size"] > LIMIT
    assert record.data["reason"].startswith("payload_too_large: ")
    assert "xxxx" not in json.dumps(record.data)  # never the body


def test_a_body_at_the_limit_is_read_and_one_byte_more_is_not(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    headers = _token(app) | {"Content-Type": "application/json"}
    at_limit = client.post("/v1/runs", content=_start_body(LIMIT), headers=headers)
    assert at_limit.status_code == 201, at_limit.text[:300]
    over = client.post("/v1/runs", content=_start_body(LIMIT + 1), headers=headers)
    assert over.status_code == 413
    assert len(app.list_runs(tenant="acme")) == 1


def test_every_route_is_bounded_the_console_with_a_page(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops = _token(app)
    big = b"{" + b" " * (2 * MiB) + b"}"
    for path in ("/v1/tasks/next", "/v1/policies/any/evaluate", "/v1/models/m/predict"):
        response = client.post(path, content=big, headers=ops)
        assert response.status_code == 413, path
        assert response.json()["error"]["code"] == "payload_too_large", path
    page = client.post("/console/login", content=b"token=" + b"a" * (2 * MiB))
    assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")
    assert "accepts at most" in page.text
    # No token needed to be refused: the body is judged before anyone is authenticated.
    anonymous = client.post("/v1/runs", content=big)
    assert anonymous.status_code == 413
    assert len(_refused(app)) == 5


def test_model_registrations_and_webhooks_have_their_own_limits(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops = _token(app)
    # A version carries its artifact (up to 64 MiB): a 2 MiB body is read, and judged.
    artifact = {"artifact": "!" * (2 * MiB), "flavor": "rules"}
    registered = client.post("/v1/models/m/versions", json=artifact, headers=ops)
    assert registered.status_code == 422, registered.text[:300]
    assert registered.json()["error"]["fields"][0]["field"] == "artifact"
    # A webhook source's max_body is its limit; its refusal is a REJECTED event.
    app.webhook("tiny", workflow="intake", tenant="acme", max_body=64)
    refused = client.post("/v1/events/tiny", content=b"[" + b"1," * 40 + b"1]", headers=ops)
    assert refused.status_code == 413
    assert "'tiny' accepts at most 64" in refused.json()["error"]["message"]
    (event,) = client.get("/v1/events", headers=ops).json()
    assert event["status"] == "REJECTED" and event["code"] == "payload_too_large"
    assert _refused(app) == []  # recorded once, as the webhook's


def test_the_limit_is_configurable(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(sqlite_url)
    try:
        ops = _token(app) | {"Content-Type": "application/json"}
        with TestClient(create_app(app, max_body_bytes=100)) as client:
            assert client.post("/v1/runs", content=_start_body(101), headers=ops).status_code == 413
            assert client.post("/v1/runs", content=_start_body(100), headers=ops).status_code == 201
        monkeypatch.setenv(MAX_BODY_ENV, str(4 * MiB))
        with TestClient(create_app(app)) as client:
            fits = client.post("/v1/runs", content=_start_body(3 * MiB), headers=ops)
            assert fits.status_code == 201
        monkeypatch.setenv(MAX_BODY_ENV, "lots")
        with pytest.raises(DefinitionError, match=MAX_BODY_ENV):
            create_app(app)
        monkeypatch.delenv(MAX_BODY_ENV)
        with pytest.raises(DefinitionError, match="max_body_bytes"):
            create_app(app, max_body_bytes=0)
    finally:
        app.close()


def test_a_flood_of_large_bodies_is_counted_and_summarised(sqlite_url: str) -> None:
    app = _app(sqlite_url)
    try:
        with TestClient(create_app(app, max_body_bytes=10)) as client:
            for _ in range(63):
                assert client.post("/v1/runs", content=b"x" * 11).status_code == 413
            assert len(_refused(app)) == 60
        # The server's shutdown writes the minute's count.
        *one_by_one, summary = _refused(app)
        assert len(one_by_one) == 60
        assert summary.action == "request.refused_counted"
        assert summary.data["count"] == 3 and summary.data["reasons"] == {"payload_too_large": 3}
    finally:
        app.close()


@contextmanager
def _uvicorn(app: Aevos) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(app), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: server.started or not thread.is_alive())
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def test_a_real_server_refuses_20_mib_sent_either_way(sqlite_url: str) -> None:
    app = _app(sqlite_url)
    ops = _token(app) | {"Content-Type": "application/json"}
    body = _start_body(20 * MiB)
    try:
        with _uvicorn(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            declared = client.post("/v1/runs", content=body, headers=ops)

            def chunks() -> Iterator[bytes]:
                for start in range(0, len(body), 64 * 1024):
                    yield body[start : start + 64 * 1024]

            streamed = client.post("/v1/runs", content=chunks(), headers=ops)
            assert "content-length" not in streamed.request.headers
            # The connection is still good for the next request.
            small = client.post("/v1/runs", content=_start_body(1000), headers=ops)
        assert (declared.status_code, streamed.status_code, small.status_code) == (413, 413, 201)
        assert streamed.json()["error"]["code"] == "payload_too_large"
        assert len(app.list_runs(tenant="acme")) == 1
    finally:
        app.close()


# -- listings --------------------------------------------------------------------------------


def test_listings_summarise_large_inputs_and_outputs_with_a_link_to_them(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    ops, other = _token(app), _token(app, "globex")
    note = "é" * (DEFAULT_LISTED_VALUE_BYTES // 2)  # two bytes each in UTF-8: past the limit
    big = client.post("/v1/runs", json={"workflow": "intake", "args": [note]}, headers=ops)
    small = client.post("/v1/runs", json={"workflow": "intake", "args": ["hi"]}, headers=ops)
    assert big.status_code == small.status_code == 201
    run_id = big.json()["run_id"]
    worker = app.worker().start()
    try:
        for created in (big, small):
            app.handle(created.json()["run_id"]).result(timeout=30)
    finally:
        worker.stop()

    listed = {r["run_id"]: r for r in client.get("/v1/runs", headers=ops).json()}
    assert listed[small.json()["run_id"]]["input"] == {"args": ["hi"], "kwargs": {}}
    assert listed[small.json()["run_id"]]["truncated"] == []
    run = listed[run_id]
    assert run["truncated"] == ["input", "output"]
    summary = run["input"]
    assert summary == {
        "truncated": True,
        "bytes": summary["bytes"],
        "sha256": summary["sha256"],
        "href": f"/v1/runs/{run_id}/input",
    }
    assert summary["bytes"] > DEFAULT_LISTED_VALUE_BYTES
    whole = client.get(summary["href"], headers=ops)
    assert whole.json() == {"args": [note], "kwargs": {}}
    assert len(whole.content) == summary["bytes"]
    assert hashlib.sha256(whole.content).hexdigest() == summary["sha256"]
    output = client.get(run["output"]["href"], headers=ops).json()
    assert output == {"steps": {"echo": note}, "size": len(note)}
    # One run read by itself is whole.
    assert client.get(f"/v1/runs/{run_id}", headers=ops).json()["input"]["args"] == [note]

    (step,) = client.get(f"/v1/runs/{run_id}/steps", headers=ops).json()
    assert step["truncated"] == ["output"]
    assert step["output"]["href"] == f"/v1/runs/{run_id}/steps/0/output"
    assert client.get(step["output"]["href"], headers=ops).json() == {"echo": note}
    missing = client.get(f"/v1/runs/{run_id}/steps/7/output", headers=ops)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    # The values are the run's tenant's: another tenant's token is refused (and audited).
    for href in (summary["href"], run["output"]["href"], step["output"]["href"]):
        refused = client.get(href, headers=other)
        assert refused.status_code == 403, href
        assert note[:10] not in refused.text
    assert client.get(summary["href"]).status_code == 401


def test_a_listed_tasks_large_case_is_a_summary(served: tuple[Aevos, TestClient]) -> None:
    app, client = served
    ops, reviewer, other = _token(app), _token(app, role="reviewer"), _token(app, "globex")
    note = "n" * (DEFAULT_LISTED_VALUE_BYTES + 1)
    started = client.post("/v1/runs", json={"workflow": "review", "args": [note]}, headers=ops)
    run_id = started.json()["run_id"]
    worker = app.worker().start()
    try:
        _wait_for(lambda: bool(app.tasks.list(tenant="acme", run_id=run_id)))
    finally:
        worker.stop()
    (task,) = client.get("/v1/tasks", headers=reviewer).json()
    assert task["truncated"] == ["case"]
    assert task["case"]["href"] == f"/v1/tasks/{task['task_id']}/case"
    assert client.get(task["case"]["href"], headers=reviewer).json() == note
    assert client.get(f"/v1/tasks/{task['task_id']}", headers=reviewer).json()["case"] == note
    assert client.get(task["case"]["href"], headers=other).status_code == 403


def test_the_listing_threshold_is_an_option(sqlite_url: str) -> None:
    app = _app(sqlite_url)
    try:
        ops = _token(app)
        with TestClient(create_app(app, listed_value_bytes=10)) as client:
            client.post(
                "/v1/runs", json={"workflow": "intake", "args": ["twelve chars"]}, headers=ops
            )
            (run,) = client.get("/v1/runs", headers=ops).json()
            assert run["truncated"] == ["input"]
            assert run["input"]["bytes"] == len(b'{"args":["twelve chars"],"kwargs":{}}')
        with pytest.raises(DefinitionError, match="listed_value_bytes"):
            create_app(app, listed_value_bytes=0)
    finally:
        app.close()


# -- malformed bodies ------------------------------------------------------------------------


def test_a_malformed_json_body_names_the_body_and_where(
    served: tuple[Aevos, TestClient],
) -> None:
    app, client = served
    headers = _token(app) | {"Content-Type": "application/json"}
    response = client.post(
        "/v1/runs", content=b'{"workflow": "intake",\n "args": [1,,]}', headers=headers
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"] == "invalid body"
    (field,) = error["fields"]
    assert field == {
        "field": "body",
        "problem": "not valid JSON: Expecting value at line 2 column 13 (char 35)",
        "position": 35,
        "line": 2,
        "column": 13,
    }
