"""Schemathesis over the served OpenAPI schema: every operation, fuzzed, never a 500.

One real aevos app on a SQLite file (module-scoped: the fuzzing mutates it as it goes, as a
real client would), with workflows running under an embedded worker, human tasks waiting,
a finished and a failed run, a rules model with two versions, an alias and a champion,
the example policies and a webhook source. Hooks make part of the generated requests name
those real objects (path parameters) or carry well-formed bodies (a run of a registered
workflow, a decision that fits the task's form, a model input), so that handlers run past
their 404s and 422s.

Two passes over every operation in the schema (Schemathesis's examples, coverage and
fuzzing phases, ``max_examples`` fuzzed cases each):

- as the tenant's admin, so that every handler runs past its permission check: no 5xx; a
  2xx conforms to the schema (status code, content type, body); every other status carries
  the API's error body ``{"error": {"code", "message"}}``;
- without a token (well-formed requests only): 401 ``unauthenticated`` everywhere but
  ``/healthz`` (200) and the webhook receiver, which authenticates deliveries itself (401
  for a declared source, 404 ``unknown_source`` otherwise).

Error responses are not checked against the schema: FastAPI documents its own 422 body
(``HTTPValidationError``) where aevos answers with its error body, and 401, 403, 404 and
409 are not declared per operation. Inputs the fuzzer once turned into 500s are pinned by
``test_inputs_that_once_failed``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aevos import Aevos, Field, StepContext, TaskStatus, WorkflowContext
from aevos.server import create_app

Case = schemathesis.Case[Any]

POLICIES = Path(__file__).resolve().parents[1] / "examples" / "policies"
TENANT = "acme"
VERDICTS = ["approve", "deny"]
FORM = [Field.choice("verdict", VERDICTS), Field.number("amount", minimum=0, required=False)]

# Per operation, after Schemathesis's examples and coverage phases (a few dozen boundary
# and wrong-method cases each): this many fuzzed cases. With no example database each run
# draws new ones, so CI keeps searching across runs; 20 rather than 40 per run nearly
# halves the admin pass (178 s -> 99 s on a loaded 2-core machine).
FUZZ = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class World:
    """The served app, its admin token, and the real objects requests may name."""

    app: Aevos
    admin: str
    ids: dict[str, list[Any]] = field(default_factory=dict)

    def live_task_ids(self) -> list[str]:
        """Open and claimed tasks now (the fuzzing submits some and starts runs that ask)."""
        principal = self.app.access.authenticate(self.admin)
        live = [TaskStatus.OPEN, TaskStatus.CLAIMED]
        return [t.task_id for t in self.app.access.tasks.list(principal, status=live, limit=20)]

    def live_task_id(self, index: int) -> str:
        ids = self.live_task_ids()
        return ids[index % len(ids)] if ids else "no-live-task"


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _rules_table(threshold: float) -> str:
    """A rules artifact, base64: routes claims by amount."""
    table = {
        "input": {"amount": "number"},
        "table": [{"id": "small", "when": {"amount": {"lt": threshold}}, "label": "auto"}],
        "default": {"label": "review", "confidence": 0.5},
    }
    return base64.b64encode(json.dumps(table).encode()).decode()


def _build_app(database_url: str) -> Aevos:
    app = Aevos(
        database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02, policies=POLICIES
    )

    @app.step()
    def route(ctx: StepContext, amount: float) -> str:
        return "auto" if amount < 100 else "review"

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, amount: float = 1.0) -> dict[str, Any]:
        return {"route": route(ctx, amount), "amount": amount}

    @app.workflow(name="refund")
    def refund(ctx: WorkflowContext, amount: float) -> dict[str, Any]:
        route(ctx, amount)
        decision = ctx.ask_human(
            f"Refund of {amount}?",
            form=FORM,
            case={"amount": amount},
            suggestion={"verdict": "approve", "amount": amount},
            queue="refunds",
        )
        return {"verdict": decision["verdict"]}

    @app.workflow(name="broken")
    def broken(ctx: WorkflowContext) -> None:
        route(ctx, 1.0)
        raise RuntimeError("always fails")

    app.webhook("crm", workflow="triage", tenant=TENANT)
    return app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    database = tmp_path_factory.mktemp("fuzz") / "aevos.db"
    app = _build_app(f"sqlite:///{database}")
    worker = app.worker(concurrency=4).start()
    admin = app.identity.create_token(tenant=TENANT, role="admin", name="fuzz", created_by="test")
    headers = {"Authorization": f"Bearer {admin.token}"}
    world = World(app=app, admin=admin.token)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code in (200, 201), response.text
            return dict(response.json())

        done = post("/v1/runs", {"workflow": "triage", "args": [5.0]})["run_id"]
        asking = [post("/v1/runs", {"workflow": "refund", "args": [a]})["run_id"] for a in (1, 2)]
        failed = post("/v1/runs", {"workflow": "broken"})["run_id"]
        for version, threshold in ((1, 100.0), (2, 200.0)):
            registered = post(
                "/v1/models/claims-router/versions",
                {
                    "artifact": _rules_table(threshold),
                    "flavor": "rules",
                    "card": {"owner": "claims", "metrics": {"accuracy": 0.9}},
                    "aliases": ["challenger"],
                },
            )
            assert registered["version"]["version"] == version
        evidence = {
            "candidate": {"accuracy": 0.95, "calibration_error": 0.02, "samples": 5000},
            "champion": {"accuracy": 0.5, "calibration_error": 0.1},
        }
        promoted = post("/v1/models/claims-router/promote", {"version": 1, "evidence": evidence})
        assert promoted["promoted"] is not None, promoted  # champion: predictions are served
        _wait_for(lambda: app.get_run(done).status.value == "SUCCEEDED")
        _wait_for(lambda: app.get_run(failed).status.value == "FAILED")
        _wait_for(lambda: len(world.live_task_ids()) == len(asking))
        policies = client.get("/v1/policies", headers=headers).json()
    world.ids = {
        "run_id": [done, failed, *asking],
        "model": ["claims-router"],
        "version": [1, 2],
        "alias": ["challenger", "champion"],
        "policy": sorted({p["name"] for p in policies}),
        "source": ["crm"],
        "workflow": ["triage", "refund"],
    }
    yield world
    worker.stop()
    app.close()


def _hooks(world: World, schema: schemathesis.BaseSchema) -> None:
    def flatmap_path_parameters(
        context: schemathesis.HookContext, parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[Any]:
        """As generated, or with each parameter naming a real object."""
        if not parameters or context.operation is None:
            return st.just(parameters)
        path = context.operation.path
        real: dict[str, st.SearchStrategy[Any]] = {}
        for key in parameters:
            if key == "name":
                names = world.ids["policy" if path.startswith("/v1/policies") else "model"]
                real[key] = st.sampled_from(names)
            elif key == "task_id":
                # Looked up when drawn (tasks come and go); the choice stays a stable integer.
                real[key] = st.integers(min_value=0, max_value=19).map(world.live_task_id)
            elif key in world.ids:
                real[key] = st.sampled_from(world.ids[key])
        if not real:
            return st.just(parameters)
        swapped = {key: real.get(key, st.just(value)) for key, value in parameters.items()}
        return st.one_of(st.just(parameters), st.fixed_dictionaries(swapped))

    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        """As generated, or a body that gets past validation into the handler."""
        operation = context.operation
        if operation is None or not isinstance(body, dict):
            return st.just(body)
        amount = st.floats(min_value=0, max_value=10_000, allow_nan=False)
        if (operation.method.upper(), operation.path) == ("POST", "/v1/runs"):
            start = st.fixed_dictionaries(
                {"workflow": st.sampled_from(world.ids["workflow"]), "args": st.tuples(amount)}
            )
            return st.one_of(st.just(body), start.map(lambda b: {**b, "args": list(b["args"])}))
        if operation.path == "/v1/models/{name}/predict":
            claim = st.fixed_dictionaries({"amount": amount})
            return st.one_of(st.just(body), st.builds(lambda c: {"input": c}, claim))
        if operation.path == "/v1/tasks/{task_id}/submit":
            values = st.fixed_dictionaries(
                {"verdict": st.sampled_from(VERDICTS)}, optional={"amount": amount}
            )
            return st.one_of(st.just(body), st.builds(lambda v: {"values": v}, values))
        return st.just(body)

    schema.hooks.register_hook_with_name(flatmap_path_parameters, "flatmap_path_parameters")
    schema.hooks.register_hook_with_name(flatmap_body, "flatmap_body")


def _load(world: World, **config: Any) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(world.app), config=schemathesis.Config.from_dict(config)
    )
    _hooks(world, schema)
    return schema


@pytest.fixture(scope="module")
def api_schema(world: World) -> schemathesis.BaseSchema:
    return _load(world)


@pytest.fixture(scope="module")
def anonymous_schema(world: World) -> schemathesis.BaseSchema:
    # Well-formed requests only: a body that is not JSON at all is refused (422) before the
    # token is looked at (FastAPI parses the body before it resolves dependencies).
    return _load(world, generation={"mode": "positive"})


authenticated = schemathesis.pytest.from_fixture("api_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")


def _with_authorization(case: Case, token: str | None) -> None:
    """Replace whatever Authorization header was generated (the schema declares one)."""
    case.headers.pop("Authorization", None)  # a case-insensitive dict
    if token is not None:
        case.headers["Authorization"] = f"Bearer {token}"


def _header(response: schemathesis.Response, name: str) -> str:
    return ", ".join(response.headers.get(name.lower(), []))


def _assert_error_body(response: schemathesis.Response) -> dict[str, Any]:
    """The API's error body, ``{"error": {"code": ..., "message": ...}}``, as JSON."""
    where = f"{response.status_code} {response.text[:300]}"
    assert _header(response, "content-type").startswith("application/json"), where
    body = response.json()
    error = body.get("error")
    assert isinstance(error, dict), where
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), where
    return error


BIG = "1" + "0" * 400  # a JSON integer past any float and any database integer


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/audit?after_seq=9223372036854775808", None, 422),
        ("GET", "/v1/audit/export?after_seq=9223372036854775808", None, 422),
        ("POST", "/v1/runs/{run_id}/fork", '{"from_step": 9223372036854775808}', 422),
        ("POST", "/v1/runs/{run_id}/fork", f'{{"from_step": {BIG}}}', 422),
        (
            "POST",
            "/v1/tasks/{task_id}/submit",
            f'{{"values": {{"verdict": "deny", "amount": {BIG}}}}}',
            422,
        ),
        ("POST", "/v1/runs", '{"workflow": "triage", "args": ["\\ud800"]}', 422),
        # kwargs named like a start option collided with it inside the server (a TypeError).
        ("POST", "/v1/runs", '{"workflow": "triage", "args": [1], "kwargs": {"tenant": "x"}}', 422),
        # The router's own refusals answer in the API's error shape too.
        ("GET", "/v1/runs/a%2Fb/steps", None, 404),
        ("DELETE", "/v1/runs", None, 405),
        ("POST", "/v1/runs", "{not json", 422),
    ],
)
def test_inputs_that_once_failed(
    world: World, method: str, path: str, body: str | None, status: int
) -> None:
    """What the fuzzing found, kept as plain requests: each a 4xx with the error body."""
    headers = {"Authorization": f"Bearer {world.admin}", "Content-Type": "application/json"}
    url = path.format(run_id=world.ids["run_id"][0], task_id=world.live_task_ids()[0])
    with TestClient(create_app(world.app), raise_server_exceptions=False) as client:
        response = client.request(method, url, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"]["code"], str)


@FUZZ
@authenticated.parametrize()
def test_no_operation_fails_for_an_admin(case: Case, world: World) -> None:
    _with_authorization(case, world.admin)
    response = case.call()
    if response.status_code < 300:
        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
        case.validate_response(response, checks=checks)
    else:
        case.validate_response(response, checks=[not_a_server_error])
        _assert_error_body(response)


@settings(FUZZ, max_examples=10)
@anonymous.parametrize()
def test_every_operation_refuses_a_request_without_a_token(case: Case, world: World) -> None:
    _with_authorization(case, None)
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    if case.operation.path == "/healthz":
        assert response.status_code == 200, response.text
        return
    error = _assert_error_body(response)
    if case.operation.path == "/v1/events/{source}":
        # The receiver authenticates deliveries itself: the source says how.
        known = (case.path_parameters or {}).get("source") in world.ids["source"]
        expected = (401, "unauthenticated") if known else (404, "unknown_source")
        assert (response.status_code, error["code"]) == expected, response.text
        return
    assert (response.status_code, error["code"]) == (401, "unauthenticated"), response.text
    assert _header(response, "www-authenticate") == "Bearer"
