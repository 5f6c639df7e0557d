"""Contract tests of queues: global and per-worker concurrency, priorities, rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from aevos import Aevos, DefinitionError, Queue, RunStatus, StepContext, WorkflowContext


class Gauge:
    """Counts runs inside a step at once, across every worker thread of the test."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def test_global_concurrency_holds_across_workers(make_app: Callable[..., Aevos]) -> None:
    gauge = Gauge()
    apps = [make_app(code_version="v") for _ in range(3)]
    handles = []
    for application in apps:
        application.queue("ocr", concurrency=2)

        @application.step(name="busy")
        def busy(ctx: StepContext) -> None:
            with gauge:
                time.sleep(0.05)

        @application.workflow(name="job", queue="ocr")
        def job(ctx: WorkflowContext, n: int) -> int:
            busy(ctx)
            return n

        if application is apps[0]:
            handles = [job.start(i) for i in range(12)]

    workers = [a.worker(["ocr"], concurrency=4).start() for a in apps]
    try:
        assert [h.result(timeout=30) for h in handles] == list(range(12))
    finally:
        for w in workers:
            w.stop()
    assert gauge.peak == 2


def test_worker_concurrency_limits_one_worker(app: Aevos) -> None:
    gauge = Gauge()
    app.queue("mail", worker_concurrency=3)

    @app.step()
    def send(ctx: StepContext) -> None:
        with gauge:
            time.sleep(0.05)

    @app.workflow(queue="mail")
    def notify(ctx: WorkflowContext) -> None:
        send(ctx)

    handles = [notify.start() for _ in range(10)]
    worker = app.worker(["mail"], concurrency=8).start()
    try:
        for h in handles:
            h.result(timeout=30)
    finally:
        worker.stop()
    assert gauge.peak == 3


def test_smaller_priority_number_runs_first(app: Aevos) -> None:
    order: list[str] = []

    @app.workflow()
    def task(ctx: WorkflowContext, label: str) -> None:
        order.append(label)

    handles = [task.options(priority=5).start(f"low-{i}") for i in range(3)]
    handles += [task.options(priority=1).start(f"high-{i}") for i in range(3)]
    worker = app.worker(concurrency=1).start()
    try:
        for h in handles:
            h.result(timeout=10)
    finally:
        worker.stop()
    assert order == ["high-0", "high-1", "high-2", "low-0", "low-1", "low-2"]


def test_rate_limit_bounds_starts_per_period(app: Aevos) -> None:
    app.queue("api", rate_limit=3, rate_period=0.5)

    @app.workflow(queue="api")
    def call(ctx: WorkflowContext) -> None:
        return None

    handles = [call.start() for _ in range(9)]
    worker = app.worker(["api"], concurrency=8).start()
    try:
        for h in handles:
            h.result(timeout=30)
    finally:
        worker.stop()
    starts = sorted(app.get_run(h.run_id).claimed_at or 0 for h in handles)
    # In any window of one period at most three runs started.
    for i in range(len(starts) - 3):
        assert starts[i + 3] - starts[i] >= 0.5 - 1e-6


def test_queue_definitions_are_validated() -> None:
    with pytest.raises(DefinitionError, match="concurrency must be >= 1"):
        Queue("q", concurrency=0)
    with pytest.raises(DefinitionError, match="exceeds the global concurrency"):
        Queue("q", concurrency=2, worker_concurrency=3)
    with pytest.raises(DefinitionError, match="queue name"):
        Queue("_internal")


def test_a_worker_only_claims_workflows_it_knows(make_app: Callable[..., Aevos]) -> None:
    producer = make_app()

    @producer.workflow(name="only-here")
    def only_here(ctx: WorkflowContext) -> str:
        return "ok"

    handle = only_here.start()
    stranger = make_app()

    @stranger.workflow(name="something-else")
    def other(ctx: WorkflowContext) -> None:
        return None

    worker = stranger.worker().start()
    time.sleep(0.3)
    worker.stop()
    assert handle.status() is RunStatus.ENQUEUED
    worker = producer.worker().start()
    try:
        assert handle.result(timeout=10) == "ok"
    finally:
        worker.stop()


def test_a_corrupt_run_is_failed_and_the_queue_keeps_moving(app: Aevos) -> None:
    import sqlalchemy as sa

    from aevos.storage.schema import runs, steps

    @app.step()
    def one(ctx: StepContext) -> int:
        return 1

    @app.workflow()
    def wf(ctx: WorkflowContext, n: int) -> int:
        return one(ctx) + n

    bad_input = wf.start(1)
    bad_history = wf.start(2)
    with app.store.engine.begin() as conn:
        conn.execute(
            sa.update(runs).where(runs.c.run_id == bad_input.run_id).values(input="{not json")
        )
        conn.execute(
            steps.insert().values(
                run_id=bad_history.run_id,
                seq=0,
                name=one.name,
                status="SUCCEEDED",
                output="[truncated",
                attempts=1,
                started_at=0.0,
                finished_at=0.0,
            )
        )
    good = wf.start(3)
    worker = app.worker().start()
    try:
        assert good.result(timeout=10) == 4
        for handle, code in ((bad_input, "corrupt_run"), (bad_history, "corrupt_history")):
            with pytest.raises(Exception, match="cannot be decoded"):
                handle.result(timeout=10)
            info = app.get_run(handle.run_id)
            assert info.status is RunStatus.FAILED
            assert info.error is not None and info.error["code"] == code
        assert app.list_steps(bad_history.run_id)[0].output is None  # inspectable, not raising
    finally:
        worker.stop()
