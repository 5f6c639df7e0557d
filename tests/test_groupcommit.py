"""Group commit: writes of runs in flight share a commit, and one bad write spoils none.

The batches here are made deterministic with ``GroupCommit.held()``: the writes of several
threads are held back until all have arrived, then committed as one batch. Both backends
(SQLite: one transaction of the writes in turn; PostgreSQL: the batch pipelined in one
round trip, and, when a statement of it fails, in turn).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from aevos import Aevos, StepContext, WorkflowContext
from aevos.errors import StorageError
from aevos.records.run import NewRun
from aevos.records.status import RunStatus
from aevos.storage import LeaseLost, StepRecord, Store, open_store
from aevos.storage.schema import runs, steps


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.truncate_all()
    yield opened
    opened.close()


def start_run(store: Store, run_id: str, owner: str) -> None:
    store.insert_run(
        NewRun(
            run_id=run_id,
            workflow="wf",
            queue="default",
            input_json="{}",
            code_version="v1",
            status=RunStatus.RUNNING,
            owner=owner,
            lease_until=time.time() + 60,
        )
    )


def step(seq: int, output: str = "1") -> StepRecord:
    now = time.time()
    return StepRecord(seq, "s", "SUCCEEDED", output, None, 1, now, now)


def in_threads(
    calls: dict[str, Callable[[], Any]],
) -> tuple[dict[str, Any], list[threading.Thread]]:
    """Start each call in its own thread; the dict fills with each one's result or error."""
    outcomes: dict[str, Any] = {}

    def call(name: str, fn: Callable[[], Any]) -> None:
        try:
            outcomes[name] = fn()
        except BaseException as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=call, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    return outcomes, threads


def test_one_batch_carries_the_writes_of_many_runs(store: Store) -> None:
    for n in range(5):
        start_run(store, f"r{n}", "w1")
    commits, writes = store.group.commits, store.group.writes
    with store.group.held() as held:
        outcomes, threads = in_threads(
            {f"r{n}": lambda n=n: store.record_step(f"r{n}", "w1", step(0)) for n in range(5)}
        )
        held.wait_for(5)
        held.commit()
        for thread in threads:
            thread.join()
    assert outcomes == {f"r{n}": None for n in range(5)}
    assert (store.group.commits - commits, store.group.writes - writes) == (1, 5)
    for n in range(5):
        assert list(store.load_steps(f"r{n}")) == [0]


def test_a_batch_with_a_failing_record_commits_the_others(store: Store) -> None:
    """One record violates the steps' primary key and one has lost its lease: the batch's
    other records still commit, each failing one gets its own clear error."""
    for name in ("ok1", "taken", "ok2"):
        start_run(store, name, "w1")
    start_run(store, "elsewhere", "w2")  # held by another executor: w1's record is fenced out
    store.record_step("taken", "w1", step(0, '"first"'))
    commits, writes = store.group.commits, store.group.writes
    with store.group.held() as held:
        outcomes, threads = in_threads(
            {
                "ok1": lambda: store.record_step("ok1", "w1", step(0)),
                "taken": lambda: store.record_step("taken", "w1", step(0, '"second"')),
                "elsewhere": lambda: store.record_step("elsewhere", "w1", step(0)),
                "ok2": lambda: store.record_step("ok2", "w1", step(0)),
            }
        )
        held.wait_for(4)
        held.commit()
        for thread in threads:
            thread.join()
    assert outcomes["ok1"] is None and outcomes["ok2"] is None
    assert isinstance(outcomes["taken"], StorageError)
    assert "step 0 ('s') of run taken could not be recorded" in str(outcomes["taken"])
    assert "already recorded" in str(outcomes["taken"])
    assert isinstance(outcomes["elsewhere"], LeaseLost)
    # One commit carried the two good records; the failing ones left nothing behind.
    assert (store.group.commits - commits, store.group.writes - writes) == (1, 2)
    assert list(store.load_steps("ok1")) == [0] and list(store.load_steps("ok2")) == [0]
    assert store.load_steps("taken")[0].output == "first"
    assert store.load_steps("elsewhere") == {}


def test_a_run_whose_record_fails_in_a_batch_fails_with_the_cause_recorded(
    database_url: str,
) -> None:
    """Three runs in flight; one's step record is refused by the database in a shared
    commit. The other two complete; that one ends FAILED with the cause in its error."""
    app = Aevos(database_url, lease_seconds=30.0)
    try:
        app.store.truncate_all()

        @app.step(name="gc.s")
        def s(ctx: StepContext, x: int) -> int:
            return x + 1

        @app.workflow(name="gc.wf")
        def wf(ctx: WorkflowContext, x: int) -> int:
            return s(ctx, s(ctx, x))

        # A row at run b's first position, already there before b records its own.
        with app.store.engine.begin() as conn:
            conn.execute(
                sa.insert(steps).values(
                    run_id="b",
                    seq=0,
                    name="gc.s",
                    status="SUCCEEDED",
                    output="0",
                    attempts=1,
                    started_at=0.0,
                    finished_at=0.0,
                )
            )
        group = app.store.group
        with group.held() as held:
            outcomes, threads = in_threads(
                {name: lambda name=name: wf.options(run_id=name).run(1) for name in "abc"}
            )
            # Starts, then first steps' records (one of them refused), then completions:
            # each stage one batch of three writes.
            for _ in range(3):
                held.wait_for(3)
                held.commit()
            for thread in threads:
                thread.join()
        assert outcomes["a"] == 3 and outcomes["c"] == 3
        assert isinstance(outcomes["b"], StorageError)
        failed = app.store.get_run("b")
        assert failed.status is RunStatus.FAILED
        assert failed.error is not None
        assert "step 0 ('gc.s') of run b could not be recorded" in failed.error["message"]
        for name in "ac":
            assert app.store.get_run(name).status is RunStatus.SUCCEEDED
            assert list(app.store.load_steps(name)) == [0, 1]
    finally:
        app.close()


@pytest.mark.postgres
def test_a_heartbeat_waits_for_a_commit_in_flight_without_deadlocking_with_it(
    postgres_url: str,
) -> None:
    """A batch in flight holds the rows of its runs, locked in its own order, until it
    commits. The heartbeat over all of the owner's runs must never hold one of those rows
    while it waits for another: it did, PostgreSQL found the deadlock and failed one side,
    the heartbeat (its leases lapsed and live runs were taken over) or the whole batch (the
    steps of all its runs ran again)."""
    store = open_store(postgres_url)
    engine = sa.create_engine(sa.make_url(postgres_url).set(drivername="postgresql+psycopg"))
    try:
        for run_id in ("run-a", "run-b"):
            start_run(store, run_id, "w1")
        with engine.connect() as batch, engine.connect() as observer:
            tx = batch.begin()
            # The batch fences run-b first...
            batch.execute(sa.update(runs).where(runs.c.run_id == "run-b").values(updated_at=1.0))
            outcomes, threads = in_threads(
                {"beat": lambda: store.heartbeat("w1", ["run-a", "run-b"], 60.0)}
            )
            mine = batch.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            waiting = sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> :mine"
            )
            deadline = time.monotonic() + 30
            while not observer.execute(waiting, {"mine": mine}).scalar_one():
                observer.rollback()  # pg_stat_activity is read once per transaction
                assert "beat" not in outcomes, outcomes  # it must wait for run-b's row
                assert time.monotonic() < deadline, "the heartbeat never waited for run-b"
                time.sleep(0.01)
            # ...then run-a, while the heartbeat waits for run-b: no lock of run-a may be
            # held by the heartbeat now, or this is a deadlock.
            batch.execute(sa.update(runs).where(runs.c.run_id == "run-a").values(updated_at=1.0))
            tx.commit()
            for thread in threads:
                thread.join(30)
        beat = outcomes["beat"]
        assert not isinstance(beat, BaseException), beat
        assert beat.lost == []
        with engine.connect() as conn:
            leases = dict(conn.execute(sa.select(runs.c.run_id, runs.c.lease_until)).all())
        assert all(until >= beat.until for until in leases.values()), leases
        assert beat.until > time.time() + 30  # extended, both of them
    finally:
        engine.dispose()
        store.close()
