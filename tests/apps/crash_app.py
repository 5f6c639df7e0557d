"""The application that the crash and multi-worker tests run in worker subprocesses.

``python -m tests.apps.crash_app`` builds it on ``AEVOS_DATABASE_URL`` and runs a worker until
SIGTERM; the tests SIGKILL it instead, at random moments. Each step performs its side effect
as an idempotent connector would, ``INSERT .. ON CONFLICT DO NOTHING`` keyed by
``ctx.idempotency_key``, into a table of the same database, and appends to a journal one
``enter`` row when an attempt starts and one ``exit`` row (in the effect's transaction) when
its effect is committed. The tests read both back to prove what ran, where and when.

Names are explicit so that the workers (``tests.apps.crash_app``) and the test process agree
on them however pytest imported this module.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aevos import Aevos, Step, StepContext, Workflow, WorkflowContext

CRASH_WORKFLOW = "crash.flow"
CRASH_STEPS = 4
# Long enough that most SIGKILLs land inside a step (the case where re-execution is allowed).
CRASH_PAUSE = (0.005, 0.08)

LIMITED_WORKFLOW = "limited.flow"
LIMITED_STEPS = 2
LIMITED_PAUSE = (0.005, 0.03)
LIMITED_QUEUE = "limited"
LIMITED_CONCURRENCY = 6
LIMITED_WORKER_CONCURRENCY = 3

metadata = sa.MetaData()

effects = sa.Table(
    "crash_effects",
    metadata,
    # The idempotency key is the conflict target, as an external system keyed by it would do.
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("value", sa.Integer, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

journal = sa.Table(
    "crash_journal",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("event", sa.String(8), nullable=False),  # "enter" | "exit"
    # exit only: False when the key had been applied already (a deduplicated re-execution).
    sa.Column("applied", sa.Boolean, nullable=True),
    sa.Column("ts", sa.Float, nullable=False),
)


def create_engine(url: str) -> sa.Engine:
    """An engine on the aevos database for the side-effect tables (not the kernel's)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})

        # WAL, as the kernel's own: the effects of several worker processes in a database of
        # their own (the storage-fault tests) would otherwise queue behind each other's locks.
        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchall()

        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, pool_size=8, max_overflow=8)


def reset_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
    finally:
        engine.dispose()


def drop_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        metadata.drop_all(engine)
    finally:
        engine.dispose()


class Effects:
    """Performs and journals the side effects of steps in one worker process."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        insert: Any = (
            sqlite.insert(effects)
            if self.engine.dialect.name == "sqlite"
            else postgresql.insert(effects)
        )
        # RETURNING tells whether this attempt applied the effect (rowcount is unreliable
        # for INSERT .. ON CONFLICT on some drivers).
        self._apply = insert.on_conflict_do_nothing(index_elements=["key"]).returning(effects.c.key)

    def perform(self, ctx: StepContext, value: int, pause: tuple[float, float]) -> int:
        pid = os.getpid()
        key = ctx.idempotency_key
        row = {"run_id": ctx.run_id, "seq": ctx.seq, "step": ctx.step, "key": key, "pid": pid}
        with self.engine.begin() as conn:
            conn.execute(
                journal.insert(), {**row, "event": "enter", "applied": None, "ts": time.time()}
            )
        time.sleep(random.uniform(*pause))
        with self.engine.begin() as conn:
            applied = conn.execute(
                self._apply,
                {
                    "key": key,
                    "run_id": ctx.run_id,
                    "seq": ctx.seq,
                    "step": ctx.step,
                    "value": value,
                    "pid": pid,
                    "created_at": time.time(),
                },
            ).first()
            conn.execute(
                journal.insert(),
                {**row, "event": "exit", "applied": applied is not None, "ts": time.time()},
            )
        return value

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class CrashApp:
    app: Aevos
    effects: Effects
    crash_flow: Workflow[[int], list[int]]
    limited_flow: Workflow[[int], list[int]]

    def close(self) -> None:
        self.app.close()
        self.effects.close()


def expected_output(n: int, steps: int) -> list[int]:
    return [n * 10 + seq for seq in range(steps)]


def build(
    url: str,
    *,
    lease_seconds: float = 1.0,
    poll_interval: float = 0.02,
    effects_url: str | None = None,
) -> CrashApp:
    """The app on ``url``; its steps' effects go to ``effects_url`` (default: ``url``), a
    database of its own when the test takes the aevos one away (the storage-fault tests)."""
    app = Aevos(url, lease_seconds=lease_seconds, poll_interval=poll_interval)
    app.queue(
        LIMITED_QUEUE,
        concurrency=LIMITED_CONCURRENCY,
        worker_concurrency=LIMITED_WORKER_CONCURRENCY,
    )
    fx = Effects(effects_url or url)

    def make_step(name: str, pause: tuple[float, float]) -> Step[[int], int]:
        def body(ctx: StepContext, value: int) -> int:
            return fx.perform(ctx, value, pause)

        return app.step(name=name)(body)

    crash_steps = [make_step(f"crash.step{i}", CRASH_PAUSE) for i in range(CRASH_STEPS)]
    limited_steps = [make_step(f"limited.step{i}", LIMITED_PAUSE) for i in range(LIMITED_STEPS)]

    @app.workflow(name=CRASH_WORKFLOW)
    def crash_flow(ctx: WorkflowContext, n: int) -> list[int]:
        return [step(ctx, n * 10 + seq) for seq, step in enumerate(crash_steps)]

    @app.workflow(name=LIMITED_WORKFLOW, queue=LIMITED_QUEUE)
    def limited_flow(ctx: WorkflowContext, n: int) -> list[int]:
        return [step(ctx, n * 10 + seq) for seq, step in enumerate(limited_steps)]

    return CrashApp(app, fx, crash_flow, limited_flow)


def _exit_with_parent() -> None:
    """Stop this worker when the test that started it is gone (killed, say): an orphaned
    worker would go on claiming the next test's runs from the shared database."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    _exit_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    bundle = build(
        os.environ["AEVOS_DATABASE_URL"],
        lease_seconds=float(os.environ.get("CRASH_LEASE_SECONDS", "1.0")),
        effects_url=os.environ.get("CRASH_EFFECTS_URL") or None,
    )
    try:
        bundle.app.worker(concurrency=int(os.environ.get("CRASH_WORKER_THREADS", "4"))).run()
    finally:
        bundle.close()


if __name__ == "__main__":
    main()
