"""Recovery without waiting for a lease, on both backends, with worker subprocesses.

A worker SIGKILLed inside a step has its run resumed by another worker although its lease
is 60 s: the dead process's liveness lock (a PostgreSQL session's advisory lock, a ``flock``
on SQLite) was free, so the other worker handed the run back at once. A worker stopped with
SIGSTOP is alive (its lock is held): its run is taken over only when its lease lapses, and
once resumed with SIGCONT it finishes its step but cannot commit it (the fence). Nothing is
applied twice, and no committed step runs again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.apps import crash_app, recovery_app
from tests.apps.workers import WorkerPool

from aevos.records.queue import Queue
from aevos.records.run import NewRun
from aevos.records.status import RunStatus
from aevos.storage import open_store
from aevos.storage.schema import runs, steps

MODULE = "tests.apps.recovery_app"


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(0.02)


def attempts(engine: sa.Engine, run_id: str) -> list[Any]:
    j = crash_app.journal
    with engine.connect() as conn:
        return list(conn.execute(sa.select(j).where(j.c.run_id == run_id).order_by(j.c.id)))


def entered(engine: sa.Engine, run_id: str, seq: int, pid: int) -> bool:
    return any(
        a.event == "enter" and a.seq == seq and a.pid == pid for a in attempts(engine, run_id)
    )


def committed(engine: sa.Engine, run_id: str) -> tuple[Any, list[Any]]:
    with engine.connect() as conn:
        run = conn.execute(
            sa.select(runs.c.status, runs.c.output, runs.c.owner).where(runs.c.run_id == run_id)
        ).one()
        rows = conn.execute(
            sa.select(steps.c.seq, steps.c.name, steps.c.finished_at)
            .where(steps.c.run_id == run_id)
            .order_by(steps.c.seq)
        ).all()
    return tuple(run), [tuple(r) for r in rows]


def check_effects_once(engine: sa.Engine, run_id: str) -> list[Any]:
    """Each of the run's three effects applied exactly once; returns its attempts."""
    with engine.connect() as conn:
        keys = sorted(
            conn.execute(
                sa.select(crash_app.effects.c.key).where(crash_app.effects.c.run_id == run_id)
            ).scalars()
        )
    assert keys == [f"{run_id}/{seq}" for seq in range(3)]
    tried = attempts(engine, run_id)
    applied = [a.key for a in tried if a.event == "exit" and a.applied]
    assert sorted(applied) == keys, f"an effect was applied more than once: {applied}"
    return tried


def quiet(engine: sa.Engine, url: str) -> bool:
    """Whether no process holds a transaction open on the database (a process stopped
    inside one would block the takeover the test waits for)."""
    if sa.make_url(url).get_backend_name() == "sqlite":
        probe = sqlite3.connect(str(sa.make_url(url).database), timeout=0.5)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()
    with engine.connect() as conn:
        busy = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                "AND state <> 'idle'"
            )
        ).scalar_one()
    return busy == 0


def stop_outside_transactions(pid: int, engine: sa.Engine, url: str) -> None:
    """SIGSTOP ``pid`` at a moment it holds no transaction open."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        if quiet(engine, url):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("the worker could not be stopped outside a transaction")


@pytest.fixture
def recovery(database_url: str) -> Any:
    crash_app.reset_tables(database_url)
    bundle = recovery_app.build(database_url, lease_seconds=60.0)
    engine = crash_app.create_engine(database_url)
    yield bundle, engine
    engine.dispose()
    bundle.close()
    if sa.make_url(database_url).get_backend_name() != "sqlite":
        crash_app.drop_tables(database_url)


def pool(url: str, log_dir: Path, **env: str) -> WorkerPool:
    log_dir.mkdir()
    return WorkerPool(MODULE, url, log_dir, 1, env=env)


def test_a_sigkilled_worker_is_resumed_without_waiting_for_its_lease(
    database_url: str, recovery: Any, tmp_path: Path
) -> None:
    bundle, engine = recovery
    store = bundle.app.store
    lease = "60"
    victim = pool(
        database_url, tmp_path / "victim", RECOVERY_HOLD="600", RECOVERY_LEASE_SECONDS=lease
    )
    standby: WorkerPool | None = None
    try:
        handle = bundle.flow.start(7)
        pid = victim.procs[0].pid
        wait_for(
            lambda: entered(engine, handle.run_id, recovery_app.HELD_STEP, pid),
            60,
            "the victim entering the held step",
        )
        standby = pool(database_url, tmp_path / "standby", RECOVERY_LEASE_SECONDS=lease)
        wait_for(lambda: len(store.registered_owners()) == 2, 60, "the standby registering")
        victim.kill(0, restart=False)
        # Well inside the 60 s lease: had the standby waited for it, this would time out.
        assert handle.result(timeout=30) == [70, 71, 72]
        standby.check_alive()

        tried = check_effects_once(engine, handle.run_id)
        entries = [(a.seq, a.pid) for a in tried if a.event == "enter"]
        other = standby.procs[0].pid
        # The committed step did not run again; the interrupted one ran again elsewhere.
        assert entries == [(0, pid), (1, pid), (1, other), (2, other)], entries
        # The dead owner was forgotten; the standby is the one registered.
        assert len(store.registered_owners()) == 1
        assert standby.log_grep("is gone (its liveness lock is free): 1 running run(s)")
    finally:
        victim.close()
        if standby is not None:
            standby.close()


def test_a_stalled_worker_is_taken_over_by_lease_and_cannot_commit_after(
    database_url: str, recovery: Any, tmp_path: Path
) -> None:
    bundle, engine = recovery
    store = bundle.app.store
    # The victim holds the step 3 s, longer than its 2 s lease, and is stopped inside it.
    victim = pool(database_url, tmp_path / "victim", RECOVERY_HOLD="3", RECOVERY_LEASE_SECONDS="2")
    standby: WorkerPool | None = None
    pid = victim.procs[0].pid
    try:
        handle = bundle.flow.start(4)
        wait_for(
            lambda: entered(engine, handle.run_id, recovery_app.HELD_STEP, pid),
            60,
            "the victim entering the held step",
        )
        stop_outside_transactions(pid, engine, database_url)
        standby = pool(database_url, tmp_path / "standby", RECOVERY_LEASE_SECONDS="2")
        assert handle.result(timeout=60) == [40, 41, 42]
        # Stopped, not dead: its lock was held, so the takeover waited for the lease.
        assert len(store.registered_owners()) == 2
        assert not standby.log_grep("is gone")
        before = committed(engine, handle.run_id)

        os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: victim.log_grep("is no longer this process's"),
            60,
            "the resumed victim finding its run taken over",
        )
        victim.check_alive()
        # Its step ran to its end (its effect deduplicated by key), but nothing it did after
        # the takeover was committed.
        assert committed(engine, handle.run_id) == before
        tried = check_effects_once(engine, handle.run_id)
        late = [a for a in tried if a.pid == pid and a.event == "exit"]
        assert [(a.seq, a.applied) for a in late] == [(0, True), (1, False)]
        other = standby.procs[0].pid
        entries = [(a.seq, a.pid) for a in tried if a.event == "enter"]
        assert entries == [(0, pid), (1, pid), (1, other), (2, other)], entries
    finally:
        with_cont = victim.procs[0]
        if with_cont.poll() is None:
            os.kill(with_cont.pid, signal.SIGCONT)
        victim.close()
        if standby is not None:
            standby.close()


def test_an_owner_whose_lock_is_free_has_its_runs_handed_back(database_url: str) -> None:
    """The repository contract: a registered owner holding its lock is alive; once the lock
    is released (as a process's death releases it) another store finds it, makes its
    running runs' leases lapse, leaves their owner (the fence) as it was, and forgets it."""
    mine, theirs = open_store(database_url), open_store(database_url)
    try:
        held = theirs.hold_owner("host:1:dead")
        assert held is not None
        later = time.time() + 600
        for n, status in enumerate((RunStatus.RUNNING, RunStatus.RUNNING, RunStatus.ENQUEUED)):
            mine.insert_run(
                NewRun(
                    run_id=f"r{n}",
                    workflow="w",
                    queue="default",
                    input_json="{}",
                    code_version="v",
                    status=status,
                    owner="host:1:dead" if status is RunStatus.RUNNING else None,
                    lease_until=later if status is RunStatus.RUNNING else None,
                )
            )
        assert mine.registered_owners() == ["host:1:dead"]
        assert mine.take_back_dead("host:2:me") == {}  # alive: its lock is held
        assert mine.take_back_dead("host:1:dead") == {}  # nobody judges itself

        held.close(forget=False)  # as its death would
        assert mine.take_back_dead("host:2:me") == {"host:1:dead": 2}
        assert mine.registered_owners() == []
        for n in (0, 1):
            info = mine.get_run(f"r{n}")
            assert info.status is RunStatus.RUNNING and info.owner == "host:1:dead"
            assert info.lease_until is not None and info.lease_until < time.time()
        assert mine.get_run("r2").lease_until is None
        claimed = mine.claim("host:2:me", Queue("default"), ["w"], 10, 15.0)
        assert sorted(i.run_id for i in claimed) == ["r0", "r1", "r2"]
        assert mine.take_back_dead("host:2:me") == {}
    finally:
        mine.close()
        theirs.close()


def test_an_owner_that_stops_holding_no_run_unregisters(database_url: str) -> None:
    store = open_store(database_url)
    try:
        held = store.hold_owner("host:3:done")
        assert held is not None
        assert store.registered_owners() == ["host:3:done"]
        held.close(forget=True)
        assert store.registered_owners() == []
    finally:
        store.close()
