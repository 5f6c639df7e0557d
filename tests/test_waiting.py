"""Contract tests of durable timers, signals, child runs and cancellation (both backends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from aevos import (
    Aevos,
    RunCancelledError,
    RunFailedError,
    RunStatus,
    StepContext,
    WorkflowContext,
)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_long_sleep_parks_the_run_and_keeps_the_recorded_wake_time(app: Aevos) -> None:
    @app.workflow()
    def nap(ctx: WorkflowContext) -> float:
        ctx.sleep(1.0)  # > park_after (0.3 s): the worker's thread is released
        return ctx.now()

    handle = nap.start()
    worker = app.worker(concurrency=1).start()
    try:
        wait_for(lambda: handle.status() is RunStatus.WAITING)
        parked = handle.info()
        assert parked.owner is None and worker.active == 0
        (sleep_step,) = handle.steps()
        assert sleep_step.name == "aevos.sleep"
        assert parked.wake_at == pytest.approx(sleep_step.output)
        woke = handle.result(timeout=10)
    finally:
        worker.stop()
    assert woke >= sleep_step.output
    assert handle.info().executions == 2


def test_sleep_survives_a_restart_at_the_original_wake_time(
    make_app: Callable[..., Aevos],
) -> None:
    first = make_app(code_version="v")

    @first.workflow(name="timer")
    def timer(ctx: WorkflowContext) -> str:
        ctx.sleep(0.8)
        return "rang"

    handle = timer.start()
    worker = first.worker().start()
    wait_for(lambda: handle.status() is RunStatus.WAITING)
    worker.stop()
    wake_at = handle.info().wake_at
    assert wake_at is not None

    second = make_app(code_version="v")
    second.workflow(name="timer")(timer.func)
    worker = second.worker().start()
    try:
        assert second.handle(handle.run_id).result(timeout=10) == "rang"
    finally:
        worker.stop()
    assert second.get_run(handle.run_id).finished_at >= wake_at  # type: ignore[operator]


def test_signal_wakes_a_waiting_run(app: Aevos) -> None:
    @app.workflow()
    def approval(ctx: WorkflowContext) -> object:
        return ctx.wait_signal("decision", timeout=30)

    handle = approval.start()
    worker = app.worker().start()
    try:
        wait_for(lambda: handle.status() is RunStatus.WAITING)
        app.send_signal(handle.run_id, "decision", {"approved": True, "by": "reviewer-7"})
        assert handle.result(timeout=10) == {"approved": True, "by": "reviewer-7"}
    finally:
        worker.stop()
    names = [s.name for s in handle.steps()]
    assert names == ["aevos.deadline", "aevos.signal:decision"]


def test_signal_sent_before_the_wait_is_kept_and_inline_wait_times_out(app: Aevos) -> None:
    @app.workflow()
    def inbox(ctx: WorkflowContext) -> list[object]:
        first = ctx.wait_signal("msg", timeout=5)
        second = ctx.wait_signal("msg", timeout=0.2)
        return [first, second]

    wf = inbox.options(run_id="inbox-1")
    # The run does not exist yet: signalling it is an error, nothing is stored.
    from aevos import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        app.send_signal("inbox-1", "msg", 1)

    def later() -> None:
        wait_for(lambda: bool(app.list_runs(workflow=inbox.name)))
        app.send_signal("inbox-1", "msg", "hello")

    sender = threading.Thread(target=later)
    sender.start()
    assert wf.run() == ["hello", None]
    sender.join()


def test_child_workflows_inline_and_enqueued(app: Aevos) -> None:
    @app.step()
    def double(ctx: StepContext, x: int) -> int:
        return 2 * x

    @app.workflow()
    def child(ctx: WorkflowContext, x: int) -> int:
        return double(ctx, x)

    @app.workflow()
    def failing_child(ctx: WorkflowContext) -> None:
        raise ValueError("no coverage for this incident")

    @app.workflow()
    def parent(ctx: WorkflowContext, x: int) -> dict[str, object]:
        inline = child(ctx, x)
        queued = ctx.start_child(child, x + 1)
        try:
            child_fail = failing_child(ctx)
        except RunFailedError as exc:
            child_fail = exc.error["type"]
        return {"inline": inline, "queued": ctx.wait_child(queued, timeout=30), "fail": child_fail}

    handle = parent.start(10)
    worker = app.worker().start()
    try:
        assert handle.result(timeout=15) == {
            "inline": 20,
            "queued": 22,
            "fail": "builtins.ValueError",
        }
    finally:
        worker.stop()
    children = app.list_runs(parent_run_id=handle.run_id)
    assert sorted(c.status for c in children) == [
        RunStatus.FAILED,
        RunStatus.SUCCEEDED,
        RunStatus.SUCCEEDED,
    ]


def test_cancel_a_waiting_run_and_its_children(app: Aevos) -> None:
    ran: list[str] = []

    @app.step()
    def after(ctx: StepContext) -> None:
        ran.append("after")

    @app.workflow()
    def sleeper(ctx: WorkflowContext) -> None:
        ctx.sleep(60)

    @app.workflow()
    def parent(ctx: WorkflowContext) -> None:
        ctx.start_child(sleeper)
        ctx.wait_signal("never", timeout=60)
        after(ctx)

    handle = parent.start()
    worker = app.worker().start()
    try:
        wait_for(lambda: handle.status() is RunStatus.WAITING)
        (kid,) = app.list_runs(parent_run_id=handle.run_id)
        assert handle.cancel() is RunStatus.CANCELLED
        with pytest.raises(RunCancelledError):
            handle.result(timeout=5)
        assert app.get_run(kid.run_id).status is RunStatus.CANCELLED
        time.sleep(0.2)
    finally:
        worker.stop()
    assert ran == []
    assert app.cancel(handle.run_id) is RunStatus.CANCELLED  # idempotent


def test_cancel_a_running_run_stops_before_the_next_step(app: Aevos) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    @app.step()
    def first(ctx: StepContext) -> None:
        started.set()
        release.wait(5)

    @app.step()
    def second(ctx: StepContext) -> None:
        ran.append("second")

    @app.workflow()
    def wf(ctx: WorkflowContext) -> None:
        first(ctx)
        second(ctx)

    handle = wf.start()
    worker = app.worker().start()
    try:
        assert started.wait(5)
        app.cancel(handle.run_id)
        release.set()
        with pytest.raises(RunCancelledError):
            handle.result(timeout=5)
        wait_for(lambda: worker.active == 0)
    finally:
        worker.stop()
    assert ran == []
    assert handle.steps() == []  # the interrupted step's result was not recorded


def test_cancelled_run_can_be_resumed(app: Aevos) -> None:
    @app.workflow()
    def wf(ctx: WorkflowContext) -> str:
        return "done"

    handle = wf.start()
    app.cancel(handle.run_id)
    app.resume(handle.run_id)
    worker = app.worker().start()
    try:
        assert handle.result(timeout=10) == "done"
    finally:
        worker.stop()


def test_children_inherit_the_tenant(app: Aevos) -> None:
    @app.workflow()
    def leaf(ctx: WorkflowContext) -> str:
        return ctx.tenant

    @app.workflow()
    def root(ctx: WorkflowContext) -> list[str]:
        queued = ctx.start_child(leaf)
        return [ctx.tenant, leaf(ctx), ctx.wait_child(queued, timeout=30)]

    handle = root.options(tenant="acme").start()
    worker = app.worker().start()
    try:
        assert handle.result(timeout=15) == ["acme", "acme", "acme"]
    finally:
        worker.stop()
    assert {r.tenant for r in app.list_runs(parent_run_id=handle.run_id)} == {"acme"}
    assert app.list_runs(tenant="default") == []


def test_random_is_a_recorded_draw_that_a_replay_sees_again(app: Aevos) -> None:
    @app.workflow()
    def coin(ctx: WorkflowContext) -> list[float]:
        first = ctx.random()
        ctx.sleep(0.5)  # parks: the run is executed again, replaying the draws
        return [first, ctx.random()]

    handle = coin.start()
    worker = app.worker(concurrency=1).start()
    try:
        drawn = handle.result(timeout=10)
    finally:
        worker.stop()
    assert handle.info().executions == 2
    steps = handle.steps()
    assert [s.name for s in steps] == ["aevos.random", "aevos.sleep", "aevos.random"]
    assert drawn == [steps[0].output, steps[2].output]
    assert all(0.0 <= value < 1.0 for value in drawn) and drawn[0] != drawn[1]
