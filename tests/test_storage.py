"""Storage: migrations, schema checks and clear errors for broken or unreachable databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from aevos import (
    Aevos,
    CorruptDatabaseError,
    SchemaError,
    StepContext,
    StorageUnavailableError,
    WorkflowContext,
)
from aevos.records.run import NewRun
from aevos.records.status import RunStatus
from aevos.storage import open_store
from aevos.storage.migration import current_revision, head_revision
from aevos.storage.schema import metadata, steps


def test_migrations_produce_the_declared_schema(database_url: str) -> None:
    store = open_store(database_url)
    try:
        assert current_revision(store.engine) == head_revision()
        inspector = sa.inspect(store.engine)
        for table in metadata.sorted_tables:
            migrated = {c["name"] for c in inspector.get_columns(table.name)}
            assert migrated == {c.name for c in table.columns}, table.name
            declared_ix = {ix.name for ix in table.indexes}
            migrated_ix = {ix["name"] for ix in inspector.get_indexes(table.name)}
            assert declared_ix <= migrated_ix, table.name
    finally:
        store.close()


def test_sqlite_runs_in_wal_with_full_sync(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        store.close()


def _to_revision(url: str, revision: str, *, down: bool) -> None:
    from alembic import command

    from aevos.storage import migration

    engine = sa.create_engine(url)
    try:
        if not down:
            migration.upgrade(engine, revision)
            return
        with engine.begin() as conn:
            config = migration._config()
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_revision_0019_keeps_runs_steps_and_idempotency_both_ways(database_url: str) -> None:
    """0019 rebuilds aevos_runs/aevos_steps on SQLite and swaps the idempotency constraint
    for a partial unique index: rows survive down and up again, and a key still starts one
    run only, while runs without a key do not collide."""

    def new(run_id: str, key: str | None) -> NewRun:
        return NewRun(
            run_id=run_id,
            workflow="wf",
            queue="default",
            input_json="1",
            code_version="v",
            idempotency_key=key,
        )

    store = open_store(database_url)
    try:
        store.insert_run(new("r1", "k1"))
        store.insert_run(new("r2", None))
        store.insert_run(new("r3", None))
        with store.engine.begin() as conn:
            conn.execute(
                steps.insert(),
                [
                    {
                        "run_id": "r1",
                        "seq": seq,
                        "name": "s",
                        "status": "SUCCEEDED",
                        "output": str(seq),
                        "started_at": 1.0,
                        "finished_at": 2.0,
                    }
                    for seq in range(3)
                ],
            )
    finally:
        store.close()
    _to_revision(database_url, "0018", down=True)
    try:
        engine = sa.create_engine(database_url)
        try:
            with engine.connect() as conn:
                assert (
                    conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
                    == "0018"
                )
                count = conn.execute(sa.text("SELECT count(*) FROM aevos_runs")).scalar()
                assert count == 3
        finally:
            engine.dispose()
    finally:
        _to_revision(database_url, "head", down=False)
    store = open_store(database_url)
    try:
        assert current_revision(store.engine) == head_revision()
        indexes = {ix["name"]: ix for ix in sa.inspect(store.engine).get_indexes("aevos_runs")}
        assert indexes["uq_aevos_runs_idempotency"]["unique"]
        assert {r.run_id for r in store.list_runs()} == {"r1", "r2", "r3"}
        assert [step.output for step in store.load_steps("r1").values()] == [0, 1, 2]
        existing, created = store.insert_run(new("r4", "k1"))
        assert (existing.run_id, created) == ("r1", False)
        _, created = store.insert_run(new("r5", None))
        assert created
    finally:
        store.close()


def test_a_newer_schema_is_refused(database_url: str) -> None:
    store = open_store(database_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        store.close()
    try:
        with pytest.raises(SchemaError, match=r"'9999'.*newer aevos"):
            open_store(database_url)
    finally:
        engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))
        engine.dispose()


def test_without_migrate_a_new_database_asks_for_migration(sqlite_url: str) -> None:
    with pytest.raises(SchemaError, match="aevos migrate"):
        open_store(sqlite_url, migrate=False)


def test_tables_without_a_revision_are_called_corrupt(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE aevos_runs (run_id TEXT)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="no schema revision"):
        open_store(sqlite_url)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "aevos.db"
    path.write_bytes(b"this is a spreadsheet, not a database" * 100)
    app = Aevos(f"sqlite:///{path}")

    @app.workflow()
    def wf(ctx: WorkflowContext) -> None:
        return None

    with pytest.raises(CorruptDatabaseError, match="not a valid aevos database"):
        wf.run()


def test_unreachable_postgres_names_the_cause_without_the_password() -> None:
    url = "postgresql://aevos:hunter2@127.0.0.1:1/aevos"
    with pytest.raises(StorageUnavailableError) as caught:
        open_store(url)
    assert "127.0.0.1:1" in caught.value.message
    assert "hunter2" not in str(caught.value)


def test_unparseable_url_is_not_echoed() -> None:
    with pytest.raises(StorageUnavailableError, match="cannot be parsed") as caught:
        open_store("::not a url with secret-pass::")
    assert "secret-pass" not in str(caught.value)


def test_unsupported_url() -> None:
    with pytest.raises(StorageUnavailableError, match="unsupported database URL"):
        open_store("mysql://root@127.0.0.1/test")


def test_a_connection_lost_mid_run_is_replaced_and_the_run_goes_on(postgres_url: str) -> None:
    import uuid

    # A session name of our own, so only this test's connections are terminated.
    session_name = f"aevos-test-{uuid.uuid4().hex[:12]}"
    app = Aevos(
        f"{postgres_url}?application_name={session_name}", lease_seconds=0.5, poll_interval=0.02
    )
    killed: list[int] = []

    @app.step()
    def cut_connection(ctx: StepContext) -> int:
        if not killed:
            # Terminate this process's other sessions (the hot-path one among them) from the
            # server side, as a database restart or a network cut would.
            with app.store.engine.connect() as conn:
                query = sa.text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                )
                pids = list(conn.execute(query, {"name": session_name}).scalars())
                for pid in pids:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                killed.extend(pids)
        return 1

    @app.workflow()
    def wf(ctx: WorkflowContext) -> int:
        return cut_connection(ctx) + 1

    try:
        # The step's commit finds its connection dead and is made again on a fresh one.
        assert wf.run() == 2
        assert killed
        (run,) = app.list_runs(workflow=wf.name)
        assert run.status is RunStatus.SUCCEEDED and run.executions == 1
    finally:
        app.close()


def test_revision_0006_gives_earlier_tasks_one_escalation(sqlite_url: str) -> None:
    """Tasks asked before escalation chains: one escalation if they had an SLA, already made
    if they were escalated."""
    import sqlalchemy as sa

    from aevos.storage.migration import upgrade

    engine = sa.create_engine(sqlite_url)
    upgrade(engine, "0005")
    columns = "task_id, tenant, run_id, workflow, seq, title, queue, role, status, priority, form"
    with engine.begin() as conn:
        for task_id, sla, escalated in (("a", 60.0, None), ("b", 60.0, 1.0), ("c", None, None)):
            conn.execute(
                sa.text(
                    f"INSERT INTO aevos_tasks ({columns}, sla_seconds, escalated_at, created_at, "
                    "updated_at) VALUES (:id, 'default', 'r', 'w', 0, 't', 'q', 'reviewer', "
                    "'OPEN', 0, '[]', :sla, :escalated, 0, 0)"
                ),
                {"id": task_id, "sla": sla, "escalated": escalated},
            )
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT task_id, escalations, escalation_level FROM aevos_tasks ORDER BY 1")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("a", 1, 0), ("b", 1, 1), ("c", 0, 0)]
