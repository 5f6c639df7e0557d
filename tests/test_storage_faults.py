"""Storage faults never fail a run: a full disk, a read-only or unreachable database, a
restarted PostgreSQL. The run is interrupted, keeps its lease, and continues as soon as the
database answers, with no step's effect applied twice (``docs/operations.md``).

The faults are real: SQLite filled up with ``PRAGMA max_page_count`` (SQLITE_FULL, what a
full disk reports), and a private PostgreSQL server restarted with ``pg_ctl restart`` while
worker processes execute runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.apps import crash_app
from tests.apps.faults import DiskLimit, PrivatePostgres, postgres_bin
from tests.apps.workers import WorkerPool

from aevos import Aevos, StepContext, WorkflowContext
from aevos.errors import RunTimeoutError, StorageUnavailableError
from aevos.kernel.worker import Worker
from aevos.records.status import RunStatus
from aevos.storage.dialect import PostgresDialect, SQLiteDialect
from aevos.storage.schema import runs, steps

# -- classification ------------------------------------------------------------------------


def _sqlite_error(path: Path, sql: str, *, uri: str | None = None) -> sqlite3.Error:
    try:
        conn = sqlite3.connect(uri or str(path), uri=uri is not None, isolation_level=None)
    except sqlite3.Error as exc:
        return exc
    try:
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{sql!r} did not fail")


def test_sqlite_transient_conditions_are_unavailability(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
    full = sqlite3.connect(path, isolation_level=None)
    full.execute("PRAGMA max_page_count=1")
    try:
        full.execute("INSERT INTO t SELECT hex(randomblob(3000))")
        raise AssertionError("the insert did not fill the database")
    except sqlite3.OperationalError as exc:
        disk_full: sqlite3.Error = exc
    finally:
        full.close()
    errors = {
        "disk is full": disk_full,
        "read-only": _sqlite_error(path, "INSERT INTO t VALUES ('x')", uri=f"file:{path}?mode=ro"),
        "cannot open": _sqlite_error(tmp_path / "missing" / "b.db", "SELECT 1"),
        # A failing disk cannot be had on demand; the driver's own error as it reports one.
        "I/O error": sqlite3.OperationalError("disk I/O error"),
    }
    dialect = SQLiteDialect()
    for what, error in errors.items():
        classified = dialect.classify(error, "sqlite:///a.db")
        assert isinstance(classified, StorageUnavailableError), (what, error)
        assert what in classified.message, classified.message
    # What is the caller's fault stays an ordinary error.
    bad_sql = _sqlite_error(path, "SELECT nope FROM t")
    assert dialect.classify(bad_sql, "sqlite:///a.db") is None


@pytest.mark.postgres
def test_postgres_transient_conditions_are_unavailability(postgres_url: str) -> None:
    import psycopg

    dialect = PostgresDialect()
    dsn = postgres_url
    errors: dict[str, Exception] = {}
    with psycopg.connect(dsn, autocommit=True) as holder, psycopg.connect(dsn) as waiter:
        holder.execute("CREATE TEMP TABLE IF NOT EXISTS faults_t (x int)")
        holder.execute("CREATE TABLE IF NOT EXISTS faults_lock (x int)")
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE faults_lock IN ACCESS EXCLUSIVE MODE")
        try:
            waiter.execute("SET lock_timeout = '50ms'")
            waiter.execute("SELECT * FROM faults_lock")
        except psycopg.Error as exc:
            errors["lock wait timed out"] = exc
        waiter.rollback()
        holder.execute("ROLLBACK")
        holder.execute("DROP TABLE faults_lock")
        try:
            waiter.execute("SET statement_timeout = '50ms'")
            waiter.execute("SELECT pg_sleep(2)")
        except psycopg.Error as exc:
            errors["cancelled or timed out"] = exc
        waiter.rollback()
        pid = waiter.info.backend_pid
        holder.execute("SELECT pg_terminate_backend(%s)", (pid,))
        try:
            waiter.execute("SELECT 1")
        except psycopg.Error as exc:
            errors["shutting down|connection"] = exc
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2)
    except psycopg.Error as exc:
        errors["connection"] = exc
    for what, error in errors.items():
        classified = dialect.classify(error, "postgresql://db")
        assert isinstance(classified, StorageUnavailableError), (what, error)
        assert any(word in classified.message for word in what.split("|")), classified.message
    assert set(errors) == {
        "lock wait timed out",
        "cancelled or timed out",
        "shutting down|connection",
        "connection",
    }


# -- SQLite: the disk fills up mid-run -------------------------------------------------------


RUNS = 24


@pytest.fixture
def full_disk_app(tmp_path: Path) -> Iterator[tuple[crash_app.CrashApp, DiskLimit]]:
    # The effects in a database of their own, which keeps its space: the external system.
    effects_url = f"sqlite:///{tmp_path / 'effects.db'}"
    crash_app.reset_tables(effects_url)
    # The default 15 s lease: a run that waited for its lease to lapse would show.
    bundle = crash_app.build(
        f"sqlite:///{tmp_path / 'aevos.db'}", lease_seconds=15.0, effects_url=effects_url
    )
    limit = DiskLimit(bundle.app.store.engine)
    try:
        yield bundle, limit
    finally:
        limit.close()
        bundle.close()


def _statuses(app: Aevos) -> dict[RunStatus, int]:
    return app.store.count_runs()


def _effect_rows(bundle: crash_app.CrashApp) -> list[tuple[str, int]]:
    with bundle.effects.engine.connect() as conn:
        rows = conn.execute(sa.select(crash_app.effects.c.run_id, crash_app.effects.c.seq))
        return [(row.run_id, row.seq) for row in rows]


def test_a_full_disk_interrupts_runs_and_they_finish_when_space_returns(
    full_disk_app: tuple[crash_app.CrashApp, DiskLimit], caplog: pytest.LogCaptureFixture
) -> None:
    bundle, limit = full_disk_app
    app = bundle.app
    caplog.set_level(logging.INFO, logger="aevos")
    handles = [bundle.crash_flow.start(n) for n in range(RUNS)]
    worker = app.worker(concurrency=4).start()
    try:
        deadline = time.monotonic() + 10
        while _statuses(app).get(RunStatus.SUCCEEDED, 0) < 2:
            assert time.monotonic() < deadline, "no run finished before the disk filled"
            time.sleep(0.02)
        limit.fill()
        time.sleep(1.5)
        during = _statuses(app)
        assert during.get(RunStatus.FAILED, 0) == 0, during
        assert during.get(RunStatus.SUCCEEDED, 0) < RUNS, "the disk never filled under a run"
        limit.free()
        freed = time.time()
        for n, handle in enumerate(handles):
            assert handle.result(timeout=15) == crash_app.expected_output(n, crash_app.CRASH_STEPS)
    finally:
        worker.stop(timeout=5)
    assert _statuses(app) == {RunStatus.SUCCEEDED: RUNS}
    finished = max(handle.info().finished_at or 0.0 for handle in handles)
    # Runs resume as soon as a write succeeds again, not a lease (15 s) later.
    assert finished - freed < 4.0, finished - freed
    effects = _effect_rows(bundle)
    assert len(effects) == len(set(effects)) == RUNS * crash_app.CRASH_STEPS
    interrupted = [r for r in caplog.records if "will resume when storage returns" in r.message]
    assert interrupted, "no run was interrupted by the full disk"
    assert all("disk is full" in r.getMessage() for r in interrupted)
    # One line per run interrupted, not one per retry; no traceback for an expected outage.
    assert len(interrupted) == len({r.getMessage().split()[1] for r in interrupted})
    assert not [r for r in caplog.records if r.exc_info], "an outage logged a traceback"


def test_an_inline_run_on_a_full_disk_is_not_failed_and_continues_under_its_key(
    full_disk_app: tuple[crash_app.CrashApp, DiskLimit],
) -> None:
    bundle, limit = full_disk_app
    app = bundle.app
    limit.fill()
    interrupted: StorageUnavailableError | None = None
    for n in range(100):  # until a run's write needs a new page
        flow = bundle.crash_flow.options(idempotency_key=f"inline-{n}")
        try:
            flow.run(n)
        except StorageUnavailableError as exc:
            interrupted = exc
            break
    assert interrupted is not None, "the disk never filled"
    assert "disk is full" in interrupted.message
    (run,) = [r for r in app.list_runs(limit=200) if r.idempotency_key == f"inline-{n}"]
    assert run.status is RunStatus.RUNNING  # interrupted, holding its lease: not FAILED
    assert RunStatus.FAILED not in app.store.count_runs()
    limit.free()
    assert flow.run(n) == crash_app.expected_output(n, crash_app.CRASH_STEPS)
    assert app.handle(run.run_id).status() is RunStatus.SUCCEEDED
    effects = _effect_rows(bundle)
    assert len(effects) == len(set(effects)) == (n + 1) * crash_app.CRASH_STEPS


# -- PostgreSQL: the server restarts under load -----------------------------------------------

PG_RUNS = 60


def longest_stall(engine: sa.Engine) -> float:
    """The longest time any run went between committing one step and the next (seconds)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(steps.c.run_id, steps.c.finished_at).order_by(steps.c.run_id, steps.c.seq)
        ).all()
    longest = 0.0
    for (run_a, at_a), (run_b, at_b) in itertools.pairwise(rows):
        if run_a == run_b:
            longest = max(longest, (at_b or 0.0) - (at_a or 0.0))
    return longest


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PrivatePostgres]:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_postgres(postgres_server: PrivatePostgres) -> PrivatePostgres:
    """The module's private server, running, and a database of this test's own (``url``)."""
    with contextlib.suppress(subprocess.CalledProcessError):  # already running
        postgres_server.start()
    postgres_server.url = postgres_server.new_database()
    return postgres_server


def _counts(engine: sa.Engine) -> dict[str, int]:
    for _ in range(50):
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
                )
                return {str(row[0]): int(row[1]) for row in rows}
        except sa.exc.OperationalError:
            time.sleep(0.1)  # the server is restarting
    raise AssertionError("the private server did not come back")


def test_postgres_restarts_fast_and_immediate_fail_no_run_and_cost_no_lease(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    url = private_postgres.url
    effects_url = f"sqlite:///{tmp_path / 'effects.db'}"
    crash_app.reset_tables(effects_url)
    bundle = crash_app.build(url, lease_seconds=15.0, effects_url=effects_url)
    engine = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
    )
    pool = WorkerPool(
        "tests.apps.crash_app",
        url,
        tmp_path,
        2,
        env={
            "CRASH_EFFECTS_URL": effects_url,
            "CRASH_LEASE_SECONDS": "15",
            "CRASH_WORKER_THREADS": "4",
        },
    )
    try:
        handles = [bundle.crash_flow.start(n) for n in range(PG_RUNS)]
        restarts = []
        for mode, after in (("fast", 6), ("immediate", 24)):
            deadline = time.monotonic() + 20
            while _counts(engine).get("SUCCEEDED", 0) < after:
                assert time.monotonic() < deadline, pool.log_tail()
                time.sleep(0.02)
            restarts.append(private_postgres.restart(mode))
        # Runs started after the database came back run at once (no dead connection to trip on).
        late = [bundle.crash_flow.start(PG_RUNS + n) for n in range(4)]
        for n, handle in enumerate([*handles, *late]):
            assert handle.result(timeout=30) == crash_app.expected_output(
                n, crash_app.CRASH_STEPS
            ), pool.log_tail()
        pool.check_alive()
        counts = _counts(engine)
        assert counts == {"SUCCEEDED": PG_RUNS + 4}, counts
        # No run stalled between two of its steps for much longer than a restart took: an
        # interrupted run was resumed when the server answered, not a lease (15 s) later.
        stall = longest_stall(engine)
        assert stall < max(restarts) + 3.0, (stall, restarts, pool.log_tail())
        for handle in late:
            # Executed once: no step of it tripped on a connection the restart had killed.
            assert handle.info().executions == 1
        effects = _effect_rows(bundle)
        assert len(effects) == len(set(effects)) == (PG_RUNS + 4) * crash_app.CRASH_STEPS
        assert not pool.log_grep("Traceback"), pool.log_tail()
    finally:
        pool.close()
        engine.dispose()
        bundle.close()


def test_an_inline_run_after_a_restart_does_not_trip_on_a_dead_connection(
    private_postgres: PrivatePostgres,
) -> None:
    app = Aevos(private_postgres.url)
    try:

        @app.step()
        def one(ctx: StepContext) -> int:
            return 1

        @app.workflow()
        def flow(ctx: WorkflowContext) -> int:
            return one(ctx) + one(ctx)

        assert flow.run() == 2  # every connection of this thread is open now
        private_postgres.restart("fast")
        assert flow.run() == 2
        private_postgres.restart("immediate")
        assert flow.run() == 2
    finally:
        app.close()


def test_result_waits_through_an_outage_then_says_why(private_postgres: PrivatePostgres) -> None:
    app = Aevos(private_postgres.url)
    try:

        @app.workflow()
        def quick(ctx: WorkflowContext) -> int:
            return 1

        handle = quick.start()
        private_postgres.stop("fast")
        started = time.monotonic()
        with pytest.raises(RunTimeoutError, match=r"has not answered .*connection") as caught:
            handle.result(timeout=1.0)
        assert time.monotonic() - started >= 1.0
        assert isinstance(caught.value.__cause__, StorageUnavailableError)
        # The database returns within the timeout: the wait goes on to the run's result.
        workers = []

        def storage_returns() -> None:
            private_postgres.start()
            workers.append(app.worker().start())

        threading.Timer(0.5, storage_returns).start()
        try:
            assert handle.result(timeout=20) == 1
        finally:
            for worker in workers:
                worker.stop(timeout=5)
    finally:
        app.close()


def test_an_outage_is_logged_once_with_its_cause_and_what_happens_next(
    private_postgres: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    app = Aevos(private_postgres.url, poll_interval=0.02)

    @app.workflow()
    def claimed(ctx: WorkflowContext) -> int:  # so that the worker claims from the database
        return 1

    worker = app.worker().start()
    try:
        caplog.set_level(logging.DEBUG, logger="aevos.worker")
        private_postgres.stop("fast")
        time.sleep(2.0)
        private_postgres.start()
        deadline = time.monotonic() + 10
        while not any("available again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    finally:
        worker.stop(timeout=5)
        app.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(retries) >= 3, "the worker did not back off and retry"
    started = [line for line in lines if "storage unavailable:" in line]
    assert len(started) == 1, lines
    assert any(then in started[0] for then in ("claiming again in", "retried next sweep"))
    # One warning when it starts, one when it ends; a new cause (shutting down, dropped,
    # refused) is a line at info level, retries with the same cause are at debug level.
    assert len(lines) == 2, lines
    assert sum("available again after" in line for line in lines) == 1
    assert not [r for r in caplog.records if r.exc_info]


def test_an_unexpected_error_logs_its_traceback_once_not_per_retry(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Aevos(sqlite_url, poll_interval=0.01)

    def broken_chore() -> None:
        raise RuntimeError("the chore is broken")

    worker = Worker(app.runtime, chores=[broken_chore])
    worker.escalation_interval = 0.0
    caplog.set_level(logging.ERROR, logger="aevos.worker")
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(caplog.records) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        worker.stop(timeout=5)
        app.close()
    failures = [r for r in caplog.records if "claiming failed; retrying in" in r.getMessage()]
    assert len(failures) >= 4
    assert sum(1 for r in failures if r.exc_info) == 1
    assert all("traceback logged before" in r.getMessage() for r in failures[1:])


def test_a_workflow_that_catches_the_storage_error_cannot_fail_or_finish_its_run(
    full_disk_app: tuple[crash_app.CrashApp, DiskLimit],
) -> None:
    bundle, limit = full_disk_app
    app = bundle.app

    @app.step()
    def blob(ctx: StepContext, n: int) -> str:
        return "x" * 3000 + str(n)  # a new page every step or so

    @app.workflow()
    def stubborn(ctx: WorkflowContext, n: int) -> str:
        try:
            blob(ctx, n)
            blob(ctx, n)  # taking this position commits the first one
            return blob(ctx, n)[-2:]
        except Exception as exc:
            # Rewrapped as the workflow's own failure: still not one.
            raise ValueError("storage trouble") from exc

    limit.fill()
    interrupted = 0
    for n in range(10, 30):
        try:
            assert stubborn.options(idempotency_key=f"s-{n}").run(n) == str(n)
        except StorageUnavailableError:
            interrupted += 1
    assert interrupted, "the disk never filled"
    counts = app.store.count_runs()
    assert RunStatus.FAILED not in counts, counts
    limit.free()
    for n in range(10, 30):
        assert stubborn.options(idempotency_key=f"s-{n}").run(n) == str(n)
    assert app.store.count_runs() == {RunStatus.SUCCEEDED: 20}


def test_a_start_that_cannot_be_committed_writes_nothing(
    full_disk_app: tuple[crash_app.CrashApp, DiskLimit],
) -> None:
    bundle, limit = full_disk_app
    app = bundle.app
    limit.fill()
    started: list[str] = []
    refused: str | None = None
    for n in range(200):  # until a start needs a new page
        try:
            started.append(bundle.crash_flow.options(idempotency_key=f"k-{n}").start(n).run_id)
        except StorageUnavailableError as exc:
            assert "disk is full" in exc.message
            refused = f"k-{n}"
            break
    assert refused is not None, "the disk never filled"
    keys = {run.idempotency_key for run in app.list_runs(limit=500)}
    assert refused not in keys and len(keys) == len(started)
    limit.free()
    # The refused start can simply be made again; the earlier ones are not repeated.
    again = bundle.crash_flow.options(idempotency_key=refused).start(0)
    assert again.run_id not in started
    assert len(app.list_runs(limit=500)) == len(started) + 1
    assert app.audit.verify("default").ok  # no audit record without its run, or a gap
