"""Workflow arguments and start options never share a namespace (issue 10).

Every keyword given to ``app.start``, ``wf.start``, ``wf.run`` or a child call is the
workflow's; start options go only through ``wf.options(...)``. Arguments are checked
against the workflow's signature before the run exists, and a refusal is recorded. Run on
SQLite and PostgreSQL, through the library and the HTTP API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aevos import (
    Aevos,
    DefinitionError,
    RunStatus,
    UnknownWorkflowError,
    WorkflowArgumentError,
    WorkflowContext,
)
from aevos.server import create_app


def _register(app: Aevos) -> None:
    app.queue("q")

    @app.workflow(name="plain")
    def plain(ctx: WorkflowContext, x: int, y: int = 0) -> int:
        return x + y

    @app.workflow(name="tenanted")
    def tenanted(ctx: WorkflowContext, ticket: str, tenant: str) -> dict[str, str]:
        return {"ticket": ticket, "argument": tenant, "run_tenant": ctx.tenant}


def _only_rejected(app: Aevos, tenant: str = "default") -> dict[str, Any]:
    runs = app.list_runs(tenant=tenant)
    assert [r.status for r in runs] == [RunStatus.REJECTED]
    assert runs[0].input is None  # the refused input is not stored
    assert runs[0].error is not None
    return runs[0].error


# -- the library -----------------------------------------------------------------------------


def test_app_start_gives_a_tenant_keyword_to_the_workflow_not_the_run(app: Aevos) -> None:
    _register(app)
    handle = app.start("tenanted", "abc", tenant="t1")
    info = handle.info()
    assert info.tenant == "default"
    assert info.input == {"args": ["abc"], "kwargs": {"tenant": "t1"}}
    worker = app.worker().start()
    try:
        result = handle.result(timeout=30)
    finally:
        worker.stop()
    assert result == {"ticket": "abc", "argument": "t1", "run_tenant": "default"}


def test_a_start_option_given_as_an_argument_is_refused_by_name_and_recorded(
    app: Aevos,
) -> None:
    _register(app)
    with pytest.raises(WorkflowArgumentError) as raised:
        app.start("plain", 1, tenant="acme")
    error = raised.value
    assert isinstance(error, DefinitionError)  # `except DefinitionError` still catches it
    assert error.code == "invalid_arguments" and error.argument == "tenant"
    assert "workflow 'plain'" in error.message and "no parameter 'tenant'" in error.message
    assert ".options(tenant=...)" in error.message
    recorded = _only_rejected(app)
    assert (recorded["code"], recorded["argument"]) == ("invalid_arguments", "tenant")
    assert app.list_runs(tenant="acme") == []
    (audited,) = [r for r in app.audit.query("default") if r.action == "run.rejected"]
    assert audited.data["reason"] == "invalid_arguments"


def test_options_are_given_only_through_options(app: Aevos) -> None:
    _register(app)
    plain = app.workflow_named("plain")
    configured = plain.options(tenant="acme", idempotency_key="k-1", queue="q").options(priority=3)
    handle = configured.start(1, y=2)
    again = configured.start(1, y=2)  # the same key: the same run
    assert again.run_id == handle.run_id
    info = handle.info()
    assert (info.tenant, info.idempotency_key, info.queue, info.priority) == ("acme", "k-1", "q", 3)
    assert info.input == {"args": [1], "kwargs": {"y": 2}}
    assert plain.options(tenant="acme", idempotency_key="k-2").run(4) == 4
    with pytest.raises(UnknownWorkflowError, match="no workflow named 'ghost'"):
        app.workflow_named("ghost")
    assert app.list_runs(status=[RunStatus.REJECTED]) == []  # a lookup records nothing


def test_parameters_named_like_options_reach_the_workflow_every_way(app: Aevos) -> None:
    @app.workflow(name="everything")
    def everything(
        ctx: WorkflowContext,
        self: int,
        workflow: str,
        tenant: str,
        queue: str,
        priority: int,
        idempotency_key: str,
        run_id: str,
    ) -> list[Any]:
        return [self, workflow, tenant, queue, priority, idempotency_key, run_id, ctx.tenant]

    @app.workflow(name="parent")
    def parent(ctx: WorkflowContext) -> list[Any]:
        return everything(ctx, **given)

    given: dict[str, Any] = {
        "self": 1,
        "workflow": "w",
        "tenant": "t",
        "queue": "nowhere",
        "priority": 99,
        "idempotency_key": "not-a-key",
        "run_id": "not-an-id",
    }
    expected = [*given.values(), "acme"]
    scoped = everything.options(tenant="acme")
    assert scoped.run(**given) == expected
    assert app.workflow_named("parent").options(tenant="acme").run() == expected  # child
    handles = [app.start("everything", **given), scoped.start(**given)]
    worker = app.worker().start()
    try:
        results = [h.result(timeout=30) for h in handles]
    finally:
        worker.stop()
    assert results == [[*given.values(), "default"], expected]
    runs = app.list_runs(workflow="everything")
    assert len(runs) == 4 and {r.queue for r in runs} <= {"default", "_inline"}
    assert all(r.idempotency_key is None and r.priority == 0 for r in runs)
    assert "not-an-id" not in {r.run_id for r in runs}


def test_child_runs_take_options_from_options_and_every_keyword_as_an_argument(
    app: Aevos,
) -> None:
    app.queue("q")

    @app.workflow(name="kid")
    def kid(ctx: WorkflowContext, queue: str, priority: int) -> list[Any]:
        return [queue, priority, ctx.tenant]

    @app.workflow(name="enqueuing")
    def enqueuing(ctx: WorkflowContext) -> list[Any]:
        child = ctx.start_child(kid.options(queue="q", priority=4), queue="refunds", priority=7)
        return [child, ctx.wait_child(child, timeout=30)]

    @app.workflow(name="misusing")
    def misusing(ctx: WorkflowContext, how: str) -> object:
        if how == "inline":
            return kid.options(queue="q")(ctx, queue="a", priority=1)
        return ctx.start_child(kid.options(tenant="other"), queue="a", priority=1)

    worker = app.worker().start()
    try:
        child_id, result = enqueuing.options(tenant="acme").run()
    finally:
        worker.stop()
    assert result == ["refunds", 7, "acme"]
    child = app.get_run(child_id)
    assert (child.queue, child.priority, child.tenant) == ("q", 4, "acme")
    assert child.input == {"args": [], "kwargs": {"queue": "refunds", "priority": 7}}
    for how, refused in [("inline", "queue"), ("enqueued", "tenant")]:
        with pytest.raises(DefinitionError, match=f"cannot take start option\\(s\\) {refused}:"):
            misusing.run(how)
    assert len(app.list_runs(workflow="kid")) == 1  # the refused children never started


def test_arguments_are_checked_against_the_signature_before_the_run_exists(
    app: Aevos,
) -> None:
    _register(app)

    @app.workflow(name="positional")
    def positional(ctx: WorkflowContext, a: int, /) -> int:
        return a

    @app.workflow(name="keyword")
    def keyword(ctx: WorkflowContext, *, k: int) -> int:
        return k

    @app.workflow(name="anything")
    def anything(ctx: WorkflowContext, **extra: Any) -> dict[str, Any]:
        return extra

    plain = app.workflow_named("plain")
    long_name = "k" * 1000
    cases: list[tuple[Any, str | None, str]] = [
        (
            lambda: plain.run(1, colour=2),
            "colour",
            "no parameter 'colour' (its parameters are x, y)",
        ),
        (lambda: plain.run(), "x", "missing its required argument 'x'"),
        (lambda: plain.start(1, x=2), "x", "argument 'x' is given both by position and by name"),
        (lambda: plain.run(1, 2, 3), None, "takes 2 positional arguments after the context, got 3"),
        (lambda: plain.run(1, ctx=2), "ctx", "'ctx' is the workflow's context"),
        (lambda: positional.run(a=1), "a", "argument 'a' is positional-only"),
        (lambda: keyword.run(), "k", "missing its required keyword-only argument 'k'"),
        (lambda: app.start("plain", 1, **{long_name: 1}), "k" * 100, "no parameter 'kkk"),
    ]
    for call, argument, message in cases:
        with pytest.raises(WorkflowArgumentError) as raised:
            call()
        assert raised.value.argument == argument, message
        assert message in raised.value.message
        assert long_name not in raised.value.message
    assert anything.run(tenant="t", queue="q") == {"tenant": "t", "queue": "q"}
    rejected = app.list_runs(status=[RunStatus.REJECTED])
    assert len(rejected) == len(cases)
    assert all(r.input is None for r in rejected)
    assert {r.error["code"] for r in rejected if r.error} == {"invalid_arguments"}
    assert {r.status for r in app.list_runs()} == {RunStatus.REJECTED, RunStatus.SUCCEEDED}


def test_bad_start_options_are_refused_when_given(app: Aevos) -> None:
    _register(app)
    plain = app.workflow_named("plain")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"priority": True}, "priority must be an integer"),
        ({"priority": 2**31}, "priority must be an integer"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"idempotency_key": ""}, "idempotency_key must be a string of 1-200 characters"),
        ({"idempotency_key": "k" * 201}, "got 201 characters"),
        ({"run_id": 7}, "run_id must be a string of 1-200 characters, got int"),
        ({"tenant": "Acme Corp"}, "tenant 'Acme Corp' must be"),
        ({"queue": "nope"}, "unknown queue 'nope'"),
    ]
    for options, message in bad:
        with pytest.raises(DefinitionError, match=message):
            plain.options(**options)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        plain.options(colour="red")  # type: ignore[call-arg]
    assert plain.options(priority=-(2**31)).options(priority=2**31 - 1).start(
        1
    ).info().priority == (2**31 - 1)
    assert [r.status for r in app.list_runs()] == [RunStatus.ENQUEUED]


# -- the HTTP API ----------------------------------------------------------------------------


@pytest.fixture
def served(app: Aevos) -> Iterator[TestClient]:
    _register(app)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        yield client


def _operator(app: Aevos, tenant: str = "acme") -> dict[str, str]:
    issued = app.identity.create_token(tenant=tenant, role="operator", name="ops", created_by="t")
    return {"Authorization": f"Bearer {issued.token}"}


def test_api_kwargs_named_tenant_for_a_workflow_without_it_is_a_422_naming_it(
    app: Aevos, served: TestClient
) -> None:
    ops = _operator(app)
    body = {"workflow": "plain", "args": [1], "kwargs": {"tenant": "x"}}
    response = served.post("/v1/runs", json=body, headers=ops)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["argument"]) == ("invalid_arguments", "tenant")
    assert "no parameter 'tenant'" in error["message"]
    # Recorded as a refused start, in the caller's tenant and by the caller.
    recorded = _only_rejected(app, "acme")
    assert (recorded["code"], recorded["argument"]) == ("invalid_arguments", "tenant")
    assert app.list_runs(tenant="x") == [] and app.list_runs(tenant="default") == []
    (audited,) = [r for r in app.audit.query("acme") if r.action == "run.rejected"]
    assert audited.data["reason"] == "invalid_arguments"
    assert audited.actor.startswith("operator:")
    listed = served.get("/v1/runs", params={"status": "REJECTED"}, headers=ops).json()
    assert [r["error"]["argument"] for r in listed] == ["tenant"]
    for kwargs, argument in [({"ctx": 1}, "ctx"), ({"x": 1, "actor": "me"}, "actor")]:
        refused = served.post("/v1/runs", json={"workflow": "plain", "kwargs": kwargs}, headers=ops)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["argument"] == argument


def test_api_kwargs_named_tenant_reach_a_workflow_that_takes_it(
    app: Aevos, served: TestClient
) -> None:
    ops = _operator(app)
    body = {"workflow": "tenanted", "args": ["abc"], "kwargs": {"tenant": "x"}}
    response = served.post("/v1/runs", json=body, headers=ops)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["tenant"] == "acme"  # the token's tenant, never the argument
    assert run["input"] == {"args": ["abc"], "kwargs": {"tenant": "x"}}
    worker = app.worker().start()
    try:
        result = app.handle(run["run_id"]).result(timeout=30)
    finally:
        worker.stop()
    assert result == {"ticket": "abc", "argument": "x", "run_tenant": "acme"}
    assert app.list_runs(tenant="x") == []


def test_the_start_options_named_in_refusals_are_those_options_takes() -> None:
    import inspect

    from aevos import Workflow
    from aevos.kernel.arguments import START_OPTIONS

    assert tuple(inspect.signature(Workflow.options).parameters)[1:] == START_OPTIONS
