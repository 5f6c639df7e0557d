"""Code changes that in-flight runs survive (both backends): version markers
(``ctx.patched`` / ``ctx.deprecate_patch``), version pinning (``compatible_versions``) and
``aevos runs versions``.

The story of one workflow, ``order``, over four deployments:

- v1: charge; wait for approval; ship.
- v2: charge; **if ctx.patched("fraud-check"): fraud check**; wait; ship.
- v3: charge; **ctx.deprecate_patch("fraud-check")**; fraud check; wait; ship.
- v4: charge; fraud check; wait; ship (the call removed).

Runs park on the approval signal, so each deployment meets runs that an earlier one started.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aevos import Aevos, DefinitionError, RunStatus, StepContext, Workflow, WorkflowContext
from aevos.cli import cli
from aevos.records.run import NewRun
from aevos.storage import StepRecord

Effects = list[tuple[str, str]]

V1_STEPS = ["charge", "aevos.deadline", "aevos.signal:approve", "ship"]
V2_STEPS = [
    "charge",
    "aevos.patch:fraud-check",
    "fraud_check",
    "aevos.deadline",
    "aevos.signal:approve",
    "ship",
]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def deploy(
    make_app: Callable[..., Aevos],
    code: str,
    effects: Effects,
    *,
    version: str | None = None,
    compatible: list[str] | None = None,
) -> tuple[Aevos, Workflow[Any, Any]]:
    """An app running deployment ``code`` of the ``order`` workflow."""
    app = make_app(code_version=version or code, compatible_versions=compatible)

    @app.step(name="charge")
    def charge(sctx: StepContext, order_id: str) -> str:
        effects.append(("charge", order_id))
        return f"charged {order_id}"

    @app.step(name="fraud_check")
    def fraud_check(sctx: StepContext, order_id: str) -> str:
        effects.append(("fraud_check", order_id))
        return "clear"

    @app.step(name="ship")
    def ship(sctx: StepContext, order_id: str) -> str:
        effects.append(("ship", order_id))
        return f"shipped {order_id}"

    def v1(ctx: WorkflowContext, order_id: str) -> dict[str, str]:
        charge(ctx, order_id)
        ctx.wait_signal("approve")
        return {"shipped": ship(ctx, order_id), "fraud": "not checked"}

    def v2(ctx: WorkflowContext, order_id: str) -> dict[str, str]:
        charge(ctx, order_id)
        checked = fraud_check(ctx, order_id) if ctx.patched("fraud-check") else "not checked"
        ctx.wait_signal("approve")
        return {"shipped": ship(ctx, order_id), "fraud": checked}

    def v3(ctx: WorkflowContext, order_id: str) -> dict[str, str]:
        charge(ctx, order_id)
        ctx.deprecate_patch("fraud-check")
        checked = fraud_check(ctx, order_id)
        ctx.wait_signal("approve")
        return {"shipped": ship(ctx, order_id), "fraud": checked}

    def v4(ctx: WorkflowContext, order_id: str) -> dict[str, str]:
        charge(ctx, order_id)
        checked = fraud_check(ctx, order_id)
        ctx.wait_signal("approve")
        return {"shipped": ship(ctx, order_id), "fraud": checked}

    body = {"v1": v1, "v2": v2, "v3": v3, "v4": v4, "unpatched": v4}[code]
    return app, app.workflow(name="order")(body)


def park(app: Aevos, order: Workflow[Any, Any], order_ids: list[str]) -> list[str]:
    """Start runs of ``order`` and let a worker take them to the approval wait."""
    run_ids = [order.start(order_id).run_id for order_id in order_ids]
    worker = app.worker(concurrency=4).start()
    try:
        for run_id in run_ids:
            wait_for(lambda run_id=run_id: app.get_run(run_id).status is RunStatus.WAITING)
    finally:
        worker.stop()
    return run_ids


def approve_all(app: Aevos, run_ids: list[str]) -> dict[str, Any]:
    """Approve the runs and return their results, executed by a worker of ``app``."""
    worker = app.worker(concurrency=4).start()
    try:
        for run_id in run_ids:
            app.send_signal(run_id, "approve", True)
        return {run_id: app.handle(run_id).result(timeout=30) for run_id in run_ids}
    finally:
        worker.stop()


def step_names(app: Aevos, run_id: str) -> list[str]:
    return [step.name for step in app.list_steps(run_id)]


def test_a_second_version_completes_runs_in_flight_and_new_runs_take_the_new_path(
    make_app: Callable[..., Aevos],
) -> None:
    effects: Effects = []
    first, order = deploy(make_app, "v1", effects, compatible=[])
    old_runs = park(first, order, ["o-1", "o-2", "o-3"])
    first.close()

    second, order = deploy(make_app, "v2", effects, compatible=["v1"])
    new_runs = park(second, order, ["n-1", "n-2"])
    results = approve_all(second, old_runs + new_runs)

    for run_id, order_id in zip(old_runs, ["o-1", "o-2", "o-3"], strict=True):
        assert results[run_id] == {"shipped": f"shipped {order_id}", "fraud": "not checked"}
        assert step_names(second, run_id) == V1_STEPS
        assert second.get_run(run_id).code_version == "v1"  # the version it started on
    for run_id, order_id in zip(new_runs, ["n-1", "n-2"], strict=True):
        assert results[run_id] == {"shipped": f"shipped {order_id}", "fraud": "clear"}
        # Parked after the marker and replayed from the top: the marker answered True again.
        assert step_names(second, run_id) == V2_STEPS
        assert second.get_run(run_id).code_version == "v2"
    # Every effect once: nothing of the old runs re-ran, the new path ran only for new runs.
    assert sorted(effects) == sorted(
        [("charge", o) for o in ["o-1", "o-2", "o-3", "n-1", "n-2"]]
        + [("fraud_check", o) for o in ["n-1", "n-2"]]
        + [("ship", o) for o in ["o-1", "o-2", "o-3", "n-1", "n-2"]]
    )


def test_a_change_without_a_marker_fails_runs_in_flight_loudly_until_it_has_one(
    make_app: Callable[..., Aevos],
) -> None:
    effects: Effects = []
    first, order = deploy(make_app, "v1", effects)
    (run_id,) = park(first, order, ["o-1"])
    first.close()

    second, _ = deploy(make_app, "unpatched", effects)
    worker = second.worker().start()
    try:
        second.send_signal(run_id, "approve", True)
        wait_for(lambda: second.get_run(run_id).status is RunStatus.FAILED)
    finally:
        worker.stop()
    error = second.get_run(run_id).error or {}
    assert error["code"] == "replay_mismatch"
    assert "position 1" in error["message"] and "'fraud_check'" in error["message"]
    assert "v1" in error["message"] and "unpatched" in error["message"]
    assert effects == [("charge", "o-1")]  # nothing ran at the mismatched position or after
    second.close()

    # The change deployed again behind a marker: the failed run, resumed, replays its old path.
    third, _ = deploy(make_app, "v2", effects, compatible=["v1"])
    third.resume(run_id)
    worker = third.worker().start()
    try:
        assert third.handle(run_id).result(timeout=30) == {
            "shipped": "shipped o-1",
            "fraud": "not checked",
        }
    finally:
        worker.stop()
    assert effects == [("charge", "o-1"), ("ship", "o-1")]


def test_deprecate_patch_then_its_removal_keep_marked_runs_going(
    make_app: Callable[..., Aevos],
) -> None:
    effects: Effects = []
    v2, order = deploy(make_app, "v2", effects)
    (marked_on_v2,) = park(v2, order, ["a"])
    v2.close()

    # v3 keeps only the new path: a run v2 marked replays through the marker ...
    v3, order = deploy(make_app, "v3", effects)
    (marked_on_v3,) = park(v3, order, ["b"])
    assert step_names(v3, marked_on_v3)[:3] == V2_STEPS[:3]  # ... and v3 still records it
    assert approve_all(v3, [marked_on_v2])[marked_on_v2]["fraud"] == "clear"
    v3.close()

    # v4 has no call at all: the markers left in the histories are stepped over.
    v4, order = deploy(make_app, "v4", effects)
    assert approve_all(v4, [marked_on_v3]) == {
        marked_on_v3: {"shipped": "shipped b", "fraud": "clear"}
    }
    assert step_names(v4, marked_on_v3) == V2_STEPS
    assert sorted(o for step, o in effects if step == "fraud_check") == ["a", "b"]


def test_a_marker_recorded_by_deprecate_patch_is_read_by_patched(
    make_app: Callable[..., Aevos],
) -> None:
    effects: Effects = []
    v3, order = deploy(make_app, "v3", effects)
    (run_id,) = park(v3, order, ["a"])
    v3.close()
    v2, _ = deploy(make_app, "v2", effects)
    assert approve_all(v2, [run_id])[run_id] == {"shipped": "shipped a", "fraud": "clear"}
    assert effects.count(("fraud_check", "a")) == 1


def test_deprecate_patch_on_a_run_that_took_the_old_path_fails_where_the_paths_differ(
    make_app: Callable[..., Aevos],
) -> None:
    effects: Effects = []
    v1, order = deploy(make_app, "v1", effects)
    (run_id,) = park(v1, order, ["a"])
    v1.close()
    v3, _ = deploy(make_app, "v3", effects)
    worker = v3.worker().start()
    try:
        v3.send_signal(run_id, "approve", True)
        wait_for(lambda: v3.get_run(run_id).status is RunStatus.FAILED)
    finally:
        worker.stop()
    assert (v3.get_run(run_id).error or {})["code"] == "replay_mismatch"
    assert ("fraud_check", "a") not in effects


def test_patched_is_decided_once_per_change_and_recorded_once(app: Aevos) -> None:
    answers: list[bool] = []

    @app.workflow()
    def loop(ctx: WorkflowContext) -> list[bool]:
        for _ in range(3):
            answers.append(ctx.patched("batching"))
        answers.append(ctx.patched("other-change"))
        return [ctx.patched("batching"), ctx.patched("other-change")]

    assert loop.options(run_id="loop-1").run() == [True, True]
    assert answers == [True, True, True, True]
    names = [step.name for step in app.list_steps("loop-1")]
    assert names == ["aevos.patch:batching", "aevos.patch:other-change"]


def test_patched_at_the_end_of_a_recorded_history_takes_the_new_path(app: Aevos) -> None:
    """A run whose history ends before the change (it crashed or parked there) has not
    passed that point: it takes the new path, as a new run would."""
    ran: list[str] = []

    @app.step(name="before")
    def before(sctx: StepContext) -> None:
        ran.append("before")

    @app.step(name="added")
    def added(sctx: StepContext) -> None:
        ran.append("added")

    @app.workflow(name="ends")
    def ends(ctx: WorkflowContext) -> bool:
        before(ctx)
        if ctx.patched("added"):
            added(ctx)
            return True
        return False

    # A history recorded by older code: only `before`, then its worker gave the run back.
    run_id = uuid.uuid4().hex
    app.store.insert_run(
        NewRun(
            run_id=run_id,
            workflow="ends",
            queue="default",
            input_json='{"args": [], "kwargs": {}}',
            code_version="old",
        )
    )
    claimed = app.store.acquire(run_id, "test-owner", 30.0)
    assert claimed is not None
    now = time.time()
    app.store.record_step(
        run_id, "test-owner", StepRecord(0, "before", "SUCCEEDED", "null", None, 1, now, now)
    )
    app.store.release(run_id, "test-owner")
    worker = app.worker().start()
    try:
        assert app.handle(run_id).result(timeout=20) is True
    finally:
        worker.stop()
    assert ran == ["added"]
    assert [s.name for s in app.list_steps(run_id)] == ["before", "aevos.patch:added", "added"]
    assert app.get_run(run_id).code_version == "old"


@pytest.mark.parametrize("bad", ["", "x" * 189, "tab\there", 7])
def test_a_bad_change_id_fails_the_run_naming_the_cause(app: Aevos, bad: object) -> None:
    @app.workflow()
    def wf(ctx: WorkflowContext) -> bool:
        return ctx.patched(bad)  # type: ignore[arg-type]

    with pytest.raises(DefinitionError, match="change id must be"):
        wf.run()
    (failed,) = app.list_runs(status=[RunStatus.FAILED])
    assert "change id must be" in (failed.error or {})["message"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"code_version": ""}, "code_version"),
        ({"code_version": "v" * 65}, "code_version"),
        ({"compatible_versions": "v1"}, "must be a list of code versions, got str"),
        ({"compatible_versions": ["v1", "x" * 65]}, "compatible_versions"),
        ({"compatible_versions": [None]}, "compatible_versions"),
    ],
)
def test_bad_versions_are_refused_when_the_app_is_made(
    sqlite_url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        Aevos(sqlite_url, **options)


# -- pinning ------------------------------------------------------------------------------------


def test_pinned_workers_claim_only_the_versions_they_declare(
    make_app: Callable[..., Aevos],
) -> None:
    def greeter(version: str, compatible: list[str] | None) -> tuple[Aevos, Workflow[Any, Any]]:
        app = make_app(code_version=version, compatible_versions=compatible)

        @app.workflow(name="greet")
        def greet(ctx: WorkflowContext, name: str) -> str:
            return f"{version}: hello {name}"

        return app, greet

    old, greet_v1 = greeter("v1", [])  # the old deployment, still running
    new, greet_v2 = greeter("v2", ["v1"])  # the new one serves both
    other, _ = greeter("v3", [])  # another branch's deployment on the same database
    assert old.runtime.claimable_versions == {"v1"}
    assert new.runtime.claimable_versions == {"v1", "v2"}

    # The v2 run comes first in the queue: an unpinned worker would take it first.
    started_on_v2 = greet_v2.options(priority=-1).start("ada").run_id
    started_on_v1 = greet_v1.start("bob").run_id
    assert old.get_run(started_on_v1).code_version == "v1"

    worker = old.worker(concurrency=1).start()
    try:
        assert old.handle(started_on_v1).result(timeout=20) == "v1: hello bob"
    finally:
        worker.stop()
    untouched = old.get_run(started_on_v2)
    assert untouched.status is RunStatus.ENQUEUED and untouched.executions == 0

    # A worker pinned to another version claims nothing here, in any claim of the store's.
    queue = other.queues["default"]
    versions = other.runtime.claimable_versions
    assert other.store.claim("other", queue, ["greet"], 8, 5.0, versions=versions) == []
    assert other.store.acquire(started_on_v2, "other", 5.0, versions=versions) is None

    worker = new.worker(concurrency=1).start()
    try:
        assert new.handle(started_on_v2).result(timeout=20) == "v2: hello ada"
    finally:
        worker.stop()
    assert new.get_run(started_on_v2).executions == 1


def test_an_unpinned_worker_claims_every_version(make_app: Callable[..., Aevos]) -> None:
    first = make_app(code_version="v1")
    first.workflow(name="echo")(lambda ctx, x: x)
    run_id = first.workflow_named("echo").start(1).run_id
    second = make_app(code_version="v2")
    second.workflow(name="echo")(lambda ctx, x: x)
    assert second.runtime.claimable_versions is None
    worker = second.worker().start()
    try:
        assert second.handle(run_id).result(timeout=20) == 1
    finally:
        worker.stop()


# -- aevos runs versions --------------------------------------------------------------------------

CLI_APP = textwrap.dedent(
    """
    from aevos import Aevos

    def make_app(database_url=None):
        app = Aevos(database_url, code_version="v3", compatible_versions=["v1"])
        app.workflow(name="echo")(lambda ctx, x: x)
        return app
    """
)


def test_runs_versions_lists_runs_in_flight_per_version(
    database_url: str,
    make_app: Callable[..., Aevos],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1 = make_app(code_version="v1")
    v1.workflow(name="echo")(lambda ctx, x: x)
    v1.workflow(name="other")(lambda ctx: None)
    echo_v1 = v1.workflow_named("echo")
    for x in range(2):
        echo_v1.start(x)
    v1.workflow_named("other").start()
    assert echo_v1.run(9) == 9  # ended: not in flight
    v2 = make_app(code_version="v2")
    v2.workflow(name="echo")(lambda ctx, x: x)
    v2.workflow_named("echo").start(3)

    module = f"versionsapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(CLI_APP)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def aevos(*args: str) -> Any:
        result = runner.invoke(cli, ["--database-url", database_url, *args])
        assert result.exit_code == 0, result.output
        return result

    lines = aevos("runs", "versions", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["code_version"], r["runs"]) for r in rows] == [("v1", 3), ("v2", 1)]
    assert rows[0]["statuses"] == {"ENQUEUED": 3}
    assert rows[0]["workflows"] == {"echo": 2, "other": 1}
    assert "claimed" not in rows[0]

    pinned = [
        json.loads(line)
        for line in aevos(
            "runs", "versions", "--json", "--app", f"{module}:make_app"
        ).stdout.splitlines()
    ]
    assert [(r["code_version"], r["claimed"]) for r in pinned] == [
        ("v1", "compatible"),
        ("v2", "no"),
    ]

    # The title wraps at spaces on a narrow terminal.
    table = " ".join(aevos("runs", "versions", "--app", f"{module}:make_app").stdout.split())
    assert "4 run(s) in flight" in table and "2 code version(s)" in table
    assert "this app is v3" in table and "compatible" in table and "echo (2)" in table

    bad = runner.invoke(cli, ["--database-url", database_url, "runs", "versions", "--app", "x"])
    assert bad.exit_code == 2 and "error [bad_app]" in bad.stderr


def test_the_api_lists_the_tenants_runs_in_flight_per_version(
    make_app: Callable[..., Aevos],
) -> None:
    from fastapi.testclient import TestClient

    from aevos.server import create_app

    old = make_app(code_version="v1")
    old.workflow(name="echo")(lambda ctx, x: x)
    for tenant in ("acme", "acme", "globex"):
        old.workflow_named("echo").options(tenant=tenant).start(1)
    new = make_app(code_version="v2")
    new.workflow(name="echo")(lambda ctx, x: x)
    new.workflow_named("echo").options(tenant="acme").start(2)

    def token(tenant: str) -> dict[str, str]:
        issued = new.identity.create_token(
            tenant=tenant, role="reviewer", name="r", created_by="test"
        )
        return {"Authorization": f"Bearer {issued.token}"}

    with TestClient(create_app(new), raise_server_exceptions=False) as client:
        acme = client.get("/v1/runs/versions", headers=token("acme"))
        globex = client.get("/v1/runs/versions", headers=token("globex"))
        anonymous = client.get("/v1/runs/versions")
    assert acme.status_code == 200, acme.text
    assert [(v["code_version"], v["runs"], v["statuses"]) for v in acme.json()] == [
        ("v1", 2, {"ENQUEUED": 2}),
        ("v2", 1, {"ENQUEUED": 1}),
    ]
    assert [(v["code_version"], v["workflows"]) for v in globex.json()] == [("v1", {"echo": 1})]
    assert anonymous.status_code == 401


# -- property: any history an older code left, replayed by code with markers ----------------------

# A program: plain steps and changes. A change is (new branch, old branch), each a list of
# steps; the old code runs every old branch without asking, the new code asks `patched`.
Segment = tuple[str, Any]
programs = st.lists(
    st.one_of(
        st.just(("step", None)),
        st.tuples(
            st.just("change"),
            st.tuples(st.integers(0, 2), st.integers(0, 2)),
        ),
    ),
    min_size=1,
    max_size=6,
)


def _walk(
    program: list[Segment], run: Callable[[str], None], patched: Callable[[str], bool] | None
) -> None:
    for index, (kind, shape) in enumerate(program):
        if kind == "step":
            run(f"s{index}")
            continue
        new, old = shape
        take_new = patched is not None and patched(f"c{index}")
        for k in range(new if take_new else old):
            run(f"{'n' if take_new else 'o'}{index}.{k}")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=programs, data=st.data())
def test_any_prefix_of_an_old_history_completes_on_code_with_markers(
    sqlite_url: str, program: list[Segment], data: st.DataObject
) -> None:
    app = Aevos(sqlite_url, lease_seconds=30.0)
    try:
        name = f"wf-{uuid.uuid4().hex}"
        executed: list[str] = []

        @app.step(name=f"{name}.step")
        def step(sctx: StepContext, label: str) -> str:
            executed.append(label)
            return label

        # What the old code recorded: the names of its positions, as a list.
        old_positions: list[str] = []
        _walk(program, old_positions.append, None)
        recorded = data.draw(st.integers(0, len(old_positions)), label="positions recorded")

        @app.workflow(name=name)
        def new_code(ctx: WorkflowContext) -> list[str]:
            done: list[str] = []
            _walk(program, lambda label: done.append(step(ctx, label)), ctx.patched)
            return done

        run_id = uuid.uuid4().hex
        app.store.insert_run(NewRun(run_id, name, "default", '{"args": [], "kwargs": {}}', "old"))
        assert app.store.acquire(run_id, "old-owner", 30.0) is not None
        now = time.time()
        for seq, label in enumerate(old_positions[:recorded]):
            output = json.dumps(label)
            record = StepRecord(seq, f"{name}.step", "SUCCEEDED", output, None, 1, now, now)
            app.store.record_step(run_id, "old-owner", record)
        app.store.release(run_id, "old-owner")

        done = new_code.options(run_id=run_id).run()
        # The recorded positions replayed, never re-run; past them the run chose by marker.
        assert done[:recorded] == old_positions[:recorded]
        assert executed == done[recorded:]
        # The model: a change met where the history has nothing yet takes the new path,
        # and its marker takes a position; met within the history, the old path.
        expected: list[str] = []
        position = 0

        def run(label: str) -> None:
            nonlocal position
            expected.append(label)
            position += 1

        def patched(change: str) -> bool:
            nonlocal position
            if position < recorded:
                return False
            position += 1
            return True

        _walk(program, run, patched)
        assert done == expected
        steps = app.list_steps(run_id)
        assert [s.seq for s in steps] == list(range(len(steps)))
        markers = [s.name for s in steps if s.name.startswith("aevos.patch:")]
        assert len(markers) == len(set(markers))
    finally:
        app.close()
