"""Contract tests of workflows and steps, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from aevos import (
    Aevos,
    DefinitionError,
    IdempotencyConflictError,
    RetryPolicy,
    RunFailedError,
    RunStatus,
    SerializationError,
    StepContext,
    StepFailedError,
    StepTimeoutError,
    UnknownWorkflowError,
    WorkflowContext,
)
from aevos.storage.claims import Beat


class Crash(BaseException):
    """Stands in for the process dying: escapes every handler, finishes nothing."""


def test_run_records_every_step_and_the_result(app: Aevos) -> None:
    @app.step()
    def add(ctx: StepContext, x: int, y: int) -> int:
        return x + y

    @app.workflow()
    def total(ctx: WorkflowContext, values: list[int]) -> int:
        acc = 0
        for v in values:
            acc = add(ctx, acc, v)
        return acc

    assert total.run([1, 2, 3]) == 6
    (run,) = app.list_runs(workflow=total.name)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == 6
    assert run.input == {"args": [[1, 2, 3]], "kwargs": {}}
    assert run.code_version == app.code_version
    steps = app.list_steps(run.run_id)
    assert [(s.seq, s.name, s.status, s.output) for s in steps] == [
        (0, add.name, "SUCCEEDED", 1),
        (1, add.name, "SUCCEEDED", 3),
        (2, add.name, "SUCCEEDED", 6),
    ]


def test_decorators_keep_the_signature_and_reject_misuse(app: Aevos) -> None:
    @app.step()
    def typed(ctx: StepContext, name: str, *, loud: bool = False) -> str:
        """Greets."""
        return name.upper() if loud else name

    assert typed.__name__ == "typed"
    assert typed.__doc__ == "Greets."
    assert list(inspect.signature(typed).parameters) == ["ctx", "name", "loud"]

    with pytest.raises(DefinitionError, match="context as its first positional parameter"):
        app.step()(lambda: None)
    with pytest.raises(DefinitionError, match="unknown queue 'nope'"):
        app.workflow(queue="nope")
    with pytest.raises(DefinitionError, match="must be called from a workflow"):
        typed("not a context", "x")  # type: ignore[arg-type]

    @app.workflow(name="dup")
    def first(ctx: WorkflowContext) -> None:
        return None

    with pytest.raises(DefinitionError, match="registered twice"):
        app.workflow(name="dup")(first.func)


def test_idempotency_key_gives_one_run(app: Aevos) -> None:
    calls: list[int] = []

    @app.step()
    def effect(ctx: StepContext, n: int) -> int:
        calls.append(n)
        return n * 10

    @app.workflow()
    def once(ctx: WorkflowContext, n: int) -> int:
        return effect(ctx, n)

    assert once.options(idempotency_key="order-1").run(4) == 40
    assert once.options(idempotency_key="order-1").run(4) == 40
    handle = once.options(idempotency_key="order-1").start(4)
    assert handle.result(timeout=5) == 40
    assert calls == [4]
    assert len(app.list_runs(workflow=once.name)) == 1

    @app.workflow()
    def other(ctx: WorkflowContext, n: int) -> int:
        return n

    with pytest.raises(IdempotencyConflictError, match="order-1"):
        other.options(idempotency_key="order-1").run(1)


def test_retries_with_backoff_then_success(app: Aevos) -> None:
    attempts: list[int] = []

    @app.step(retries=RetryPolicy(max_attempts=4, initial_interval=0.01, jitter=0))
    def flaky(ctx: StepContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("upstream down")
        return "ok"

    @app.workflow()
    def wf(ctx: WorkflowContext) -> str:
        return flaky(ctx)

    assert wf.run() == "ok"
    assert attempts == [1, 2, 3]
    (step,) = app.list_steps(app.list_runs(workflow=wf.name)[0].run_id)
    assert step.attempts == 3


def test_non_retryable_error_fails_at_once_and_the_same_on_replay(app: Aevos) -> None:
    attempts: list[int] = []

    @app.step(
        retries=RetryPolicy(max_attempts=5, initial_interval=0.01, retry_on=(ConnectionError,))
    )
    def strict(ctx: StepContext) -> None:
        attempts.append(ctx.attempt)
        raise ValueError("bad claim number")

    seen: list[str] = []

    @app.workflow()
    def wf(ctx: WorkflowContext) -> str:
        try:
            strict(ctx)
        except StepFailedError as exc:
            seen.append(exc.error_type)
            return f"handled {exc.error_type}"
        return "unreachable"

    assert wf.run() == "handled builtins.ValueError"
    assert attempts == [1]
    run = app.list_runs(workflow=wf.name)[0]
    (step,) = app.list_steps(run.run_id)
    assert step.status == "FAILED"
    assert step.error is not None and step.error["message"] == "bad claim number"


def test_unhandled_step_failure_fails_the_run_with_its_reason(app: Aevos) -> None:
    @app.step()
    def boom(ctx: StepContext) -> None:
        raise KeyError("policy_number")

    @app.workflow()
    def wf(ctx: WorkflowContext) -> None:
        boom(ctx)

    with pytest.raises(StepFailedError, match="KeyError"):
        wf.run()
    run = app.list_runs(workflow=wf.name)[0]
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error["code"] == "step_failed"
    with pytest.raises(RunFailedError, match=r"step_failed|KeyError"):
        app.handle(run.run_id).result(timeout=1)


def test_step_timeout_is_an_attempt_failure(app: Aevos) -> None:
    import time

    @app.step(timeout=0.05, retries=2)
    def slow(ctx: StepContext) -> None:
        time.sleep(0.5)

    @app.workflow()
    def wf(ctx: WorkflowContext) -> None:
        slow(ctx)

    with pytest.raises(StepTimeoutError, match="timeout"):
        wf.run()
    (step,) = app.list_steps(app.list_runs(workflow=wf.name)[0].run_id)
    assert step.attempts == 2


def test_async_workflows_and_steps(app: Aevos) -> None:
    @app.step(timeout=1)
    async def fetch(ctx: StepContext, x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @app.step()
    def plain(ctx: StepContext, x: int) -> int:
        return x + 1

    @app.workflow()
    async def wf(ctx: WorkflowContext, x: int) -> int:
        doubled = await fetch(ctx, x)
        await ctx.sleep_async(0.01)
        return plain(ctx, doubled)

    assert wf.run(5) == 11

    async def from_loop() -> int:
        return await wf.run_async(1)

    assert asyncio.run(from_loop()) == 3
    run = app.list_runs(workflow=wf.name)[0]
    assert [s.name for s in app.list_steps(run.run_id)] == [fetch.name, "aevos.sleep", plain.name]


def test_unserialisable_input_is_rejected_and_recorded(app: Aevos) -> None:
    @app.workflow()
    def wf(ctx: WorkflowContext, payload: Any) -> None:
        return None

    with pytest.raises(
        SerializationError, match=r"input of workflow .* set at \$\.args\[0\]\.tags"
    ):
        wf.run({"tags": {1, 2}})
    with pytest.raises(SerializationError):
        wf.start(object())
    rejected = app.list_runs(status=[RunStatus.REJECTED])
    assert len(rejected) == 2
    assert all(r.error and r.error["code"] == "not_serializable" for r in rejected)
    assert all(r.input is None for r in rejected)  # the refused input is not stored

    with pytest.raises(DefinitionError, match="bad arguments"):
        wf.run(1, 2)
    assert len(app.list_runs(status=[RunStatus.REJECTED])) == 3


def test_unknown_workflow_name_is_rejected_and_recorded(app: Aevos) -> None:
    with pytest.raises(UnknownWorkflowError, match="no workflow named 'ghost'"):
        app.start("ghost", 1)
    (run,) = app.list_runs(status=[RunStatus.REJECTED])
    assert run.workflow == "ghost"
    assert run.error is not None and run.error["code"] == "unknown_workflow"


def test_unserialisable_step_output_fails_the_step(app: Aevos) -> None:
    @app.step(retries=3)
    def leaky(ctx: StepContext) -> object:
        return {"when": object()}

    @app.workflow()
    def wf(ctx: WorkflowContext) -> None:
        leaky(ctx)

    with pytest.raises(StepFailedError, match="not JSON-serialisable"):
        wf.run()
    (step,) = app.list_steps(app.list_runs(workflow=wf.name)[0].run_id)
    assert step.status == "FAILED" and step.attempts == 1


def test_unserialisable_workflow_output_fails_the_run(app: Aevos) -> None:
    @app.workflow()
    def wf(ctx: WorkflowContext) -> object:
        return object()

    with pytest.raises(SerializationError, match="output of workflow"):
        wf.run()
    assert app.list_runs(workflow=wf.name)[0].status is RunStatus.FAILED


def _crashing_workflow(app: Aevos, effects: list[str], crash_at: str | None) -> Callable[..., Any]:
    @app.step(name="reserve")
    def reserve(ctx: StepContext, order: str) -> str:
        effects.append(f"reserve:{ctx.idempotency_key}")
        return f"r-{order}"

    @app.step(name="charge")
    def charge(ctx: StepContext, order: str) -> str:
        if crash_at == "charge":
            raise Crash()
        effects.append(f"charge:{ctx.idempotency_key}")
        return f"c-{order}"

    @app.step(name="ship")
    def ship(ctx: StepContext, order: str) -> str:
        effects.append(f"ship:{ctx.idempotency_key}")
        return f"s-{order}"

    @app.workflow(name="order")
    def order(ctx: WorkflowContext, order_id: str) -> list[str]:
        return [reserve(ctx, order_id), charge(ctx, order_id), ship(ctx, order_id)]

    return order


def test_crash_mid_run_resumes_elsewhere_without_repeating_steps(
    make_app: Callable[..., Aevos],
) -> None:
    effects: list[str] = []
    first = make_app(lease_seconds=0.5, code_version="v1")
    order = _crashing_workflow(first, effects, crash_at="charge")
    with pytest.raises(Crash):
        order.options(idempotency_key="o-1").run("o-1")
    (run,) = first.list_runs()
    assert run.status is RunStatus.RUNNING  # nobody finished it; its lease will lapse
    assert effects == [f"reserve:{run.run_id}/0"]

    second = make_app(lease_seconds=0.5, code_version="v1")
    _crashing_workflow(second, effects, crash_at=None)
    worker = second.worker().start()
    try:
        assert second.handle(run.run_id).result(timeout=15) == ["r-o-1", "c-o-1", "s-o-1"]
    finally:
        worker.stop()
    assert effects == [
        f"reserve:{run.run_id}/0",
        f"charge:{run.run_id}/1",
        f"ship:{run.run_id}/2",
    ]
    info = second.get_run(run.run_id)
    assert info.executions == 2
    # Starting it again by key returns the recorded result and runs nothing.
    assert order.options(idempotency_key="o-1").run("o-1") == ["r-o-1", "c-o-1", "s-o-1"]
    assert len(effects) == 3


def test_incompatible_code_change_fails_loudly_and_fork_continues(
    make_app: Callable[..., Aevos],
) -> None:
    effects: list[str] = []
    old = make_app(lease_seconds=0.3, code_version="v1")
    order = _crashing_workflow(old, effects, crash_at="charge")
    with pytest.raises(Crash):
        order.run("o-2")
    (run,) = old.list_runs()

    # v2 validates before reserving: position 0 now holds a different step.
    new = make_app(lease_seconds=0.3, code_version="v2")
    validated: list[str] = []

    @new.step(name="validate")
    def validate(ctx: StepContext, order_id: str) -> bool:
        validated.append(order_id)
        return True

    @new.step(name="reserve")
    def reserve(ctx: StepContext, order_id: str) -> str:
        effects.append("reserve-again")
        return f"r-{order_id}"

    @new.workflow(name="order")
    def order_v2(ctx: WorkflowContext, order_id: str) -> str:
        validate(ctx, order_id)
        return reserve(ctx, order_id)

    worker = new.worker().start()
    try:
        with pytest.raises(RunFailedError, match=r"replay_mismatch|cannot be replayed"):
            new.handle(run.run_id).result(timeout=15)
        failed = new.get_run(run.run_id)
        assert failed.error is not None and failed.error["code"] == "replay_mismatch"
        assert "position 0 holds a result of 'reserve'" in failed.error["message"]
        assert validated == [] and effects == [f"reserve:{run.run_id}/0"]

        forked = new.fork(run.run_id, from_step=0)
        assert forked.result(timeout=15) == "r-o-2"
        assert new.get_run(forked.run_id).code_version == "v2"
    finally:
        worker.stop()


def test_resume_a_failed_run_keeps_completed_steps(app: Aevos) -> None:
    calls: dict[str, int] = {"a": 0, "b": 0}
    broken = {"b": True}

    @app.step()
    def a(ctx: StepContext) -> int:
        calls["a"] += 1
        return 1

    @app.step()
    def b(ctx: StepContext) -> int:
        calls["b"] += 1
        if broken["b"]:
            raise RuntimeError("dependency down")
        return 2

    @app.workflow()
    def wf(ctx: WorkflowContext) -> int:
        return a(ctx) + b(ctx)

    handle = wf.start()
    worker = app.worker().start()
    try:
        with pytest.raises(RunFailedError):
            handle.result(timeout=10)
        broken["b"] = False
        app.resume(handle.run_id)
        assert handle.result(timeout=10) == 3
    finally:
        worker.stop()
    assert calls == {"a": 1, "b": 2}


def test_large_outputs_are_stored_by_reference(make_app: Callable[..., Aevos]) -> None:
    small = make_app(blob_threshold=1024)
    big = "x" * 50_000

    @small.step()
    def produce(ctx: StepContext) -> str:
        return big

    @small.workflow()
    def wf(ctx: WorkflowContext) -> int:
        return len(produce(ctx))

    assert wf.run() == 50_000
    run = small.list_runs(workflow=wf.name)[0]
    assert run.executions == 1
    (step,) = small.list_steps(run.run_id)
    assert step.output_ref is not None and step.output == big
    # The same large value is stored once, whatever the number of runs that produced it.
    wf.run()
    from sqlalchemy import func, select

    from aevos.storage.schema import blobs

    with small.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(blobs)).scalar_one() == 1


def test_an_orphaned_run_lapses_while_its_process_heartbeats_others(
    make_app: Callable[..., Aevos],
) -> None:
    import threading

    effects: list[str] = []
    first = make_app(lease_seconds=0.4, code_version="v1")
    order = _crashing_workflow(first, effects, crash_at="charge")
    release = threading.Event()

    @first.workflow(name="busy")
    def busy(ctx: WorkflowContext) -> None:
        release.wait(20)  # keeps this process heartbeating while the orphan should lapse

    with pytest.raises(Crash):
        order.run("o-3")
    orphan = next(r for r in first.list_runs() if r.workflow == "order")
    busy_thread = threading.Thread(target=busy.run)
    busy_thread.start()
    second = make_app(lease_seconds=0.4, code_version="v1")
    _crashing_workflow(second, effects, crash_at=None)
    worker = second.worker().start()
    try:
        assert second.handle(orphan.run_id).result(timeout=10) == ["r-o-3", "c-o-3", "s-o-3"]
    finally:
        release.set()
        busy_thread.join()
        worker.stop()


def test_a_lapsed_lease_is_not_re_claimed_by_the_process_executing_the_run(
    make_app: Callable[..., Aevos],
) -> None:
    """A heartbeat late past the lease (a loaded host) must not let this same process claim
    the run again: the fence cannot tell its threads apart, so the step would run twice."""
    import threading

    app = make_app(lease_seconds=0.3, poll_interval=0.02)
    # Extends nothing, says nothing is lost: the leases lapse under a live process.
    stalled = Beat([], 0.0)
    app.store.heartbeat = lambda owner, run_ids, lease_seconds: stalled  # type: ignore[method-assign]
    effects: list[str] = []

    @app.step(name="slow")
    def slow(ctx: StepContext) -> str:
        effects.append(ctx.idempotency_key)
        threading.Event().wait(1.2)  # four leases: the worker scans for lapsed ones meanwhile
        return "done"

    @app.workflow(name="long")
    def long(ctx: WorkflowContext) -> str:
        return slow(ctx)

    handle = long.start()
    worker = app.worker(concurrency=4).start()
    try:
        assert handle.result(timeout=15) == "done"
    finally:
        worker.stop()
    assert effects == [f"{handle.run_id}/0"]
    assert app.get_run(handle.run_id).executions == 1


def test_a_run_resumed_while_its_thread_winds_down_is_claimed_once(
    make_app: Callable[..., Aevos],
) -> None:
    """Cancel a run mid-step and resume it at once: the worker must not claim it while the
    old thread still holds it (that claim would execute nothing and leave the run parked on
    our lease until it lapsed), but right after the old thread lets go."""
    import threading

    app = make_app(lease_seconds=30.0, poll_interval=0.02)
    inside, leave = threading.Event(), threading.Event()
    effects: list[str] = []

    @app.step(name="work")
    def work(ctx: StepContext, n: int) -> int:
        effects.append(f"{ctx.idempotency_key}")
        if n == 0 and not leave.is_set():
            inside.set()
            leave.wait(10)
        return n

    @app.workflow(name="job")
    def job(ctx: WorkflowContext) -> list[int]:
        return [work(ctx, 0), work(ctx, 1)]

    handle = job.start()
    worker = app.worker(concurrency=4).start()
    try:
        assert inside.wait(10)
        app.cancel(handle.run_id)
        app.resume(handle.run_id)
        threading.Event().wait(0.3)  # several claim rounds while the old thread holds it
        leave.set()
        assert handle.result(timeout=10) == [0, 1]  # long before a 30 s lease could lapse
    finally:
        worker.stop()
    info = app.get_run(handle.run_id)
    assert info.executions == 2  # the first claim, and one after the resume
    assert effects.count(f"{handle.run_id}/1") == 1


def test_two_threads_starting_one_key_execute_it_once(make_app: Callable[..., Aevos]) -> None:
    import threading

    app = make_app()
    effects: list[str] = []
    entered = threading.Event()

    @app.step(name="charge")
    def charge(ctx: StepContext, order: str) -> str:
        effects.append(order)
        entered.set()
        threading.Event().wait(0.5)
        return f"charged {order}"

    @app.workflow(name="pay")
    def pay(ctx: WorkflowContext, order: str) -> str:
        return charge(ctx, order)

    results: list[str] = []
    first = threading.Thread(
        target=lambda: results.append(pay.options(idempotency_key="o-9").run("o-9"))
    )
    first.start()
    assert entered.wait(10)
    # The same key while the first thread is inside the step: the run is this process's own
    # (same owner), yet it must be awaited, not executed a second time.
    results.append(pay.options(idempotency_key="o-9").run("o-9"))
    first.join()
    assert results == ["charged o-9", "charged o-9"] and effects == ["o-9"]


def test_large_inputs_are_stored_by_reference_and_start_once(
    make_app: Callable[..., Aevos],
) -> None:
    small = make_app(blob_threshold=1024)

    @small.workflow()
    def measure(ctx: WorkflowContext, text: str) -> int:
        return len(text)

    assert measure.run("y" * 70_000) == 70_000
    (run,) = small.list_runs(workflow=measure.name)
    assert run.input == {"args": ["y" * 70_000], "kwargs": {}}
    assert run.executions == 1  # created by this call, not found and taken over
