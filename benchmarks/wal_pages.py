"""WAL written per sequential 3-step workflow, the same workflow as kernel_steps.py.

SQLite: WAL frames (one frame = one page written) per workflow, counted with
``PRAGMA wal_checkpoint`` after a measured batch small enough that no automatic checkpoint
runs in between. PostgreSQL: bytes of WAL per workflow (``pg_current_wal_lsn()`` before and
after), also shown in 8 KiB pages. A backlog of runs is started first so the indexes have
their working depth, as in a database that has been in use.

    python benchmarks/wal_pages.py [--postgres-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

import sqlalchemy as sa

from aevos import Aevos, StepContext, WorkflowContext


def _app(url: str) -> tuple[Aevos, object]:
    app = Aevos(url)

    @app.step(name="bench.s")
    def s(ctx: StepContext, x: int) -> int:
        return x + 1

    @app.workflow(name="bench.wf")
    def wf(ctx: WorkflowContext, x: int) -> int:
        y = s(ctx, x)
        y = s(ctx, y)
        return s(ctx, y)

    return app, wf


def sqlite_pages(backlog: int, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wal.db")
        app, wf = _app(f"sqlite:///{path}")
        for i in range(backlog):
            wf.run(i)  # type: ignore[attr-defined]
        side = sqlite3.connect(path)
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for i in range(n):
            wf.run(i)  # type: ignore[attr-defined]
        _busy, frames, _done = side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        side.close()
        app.close()
        return float(frames) / n


def postgres_wal(url: str, backlog: int, n: int) -> tuple[float, float]:
    """WAL bytes and records per workflow that touch this database's relations (the server
    may be shared: pg_walinspect lets the records of other databases be left out)."""
    app, wf = _app(url)
    app.store.truncate_all()
    for i in range(backlog):
        wf.run(i)  # type: ignore[attr-defined]
    with app.store.engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_walinspect"))
    with app.store.engine.connect() as conn:
        conn.execute(sa.text("CHECKPOINT"))
        before = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
    for i in range(n):
        wf.run(i)  # type: ignore[attr-defined]
    with app.store.engine.connect() as conn:
        after = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
        written, records = conn.execute(
            sa.text(
                "SELECT coalesce(sum(record_length), 0), count(*) "
                "FROM pg_get_wal_records_info(:b, :a) "
                "WHERE block_ref LIKE '%/' || (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) || '/%'"
            ),
            {"a": after, "b": before},
        ).one()
    app.close()
    return float(written) / n, float(records) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--n", type=int, default=50, help="SQLite: keep n*pages < 1000")
    parser.add_argument("--pg-n", type=int, default=500)
    parser.add_argument("--postgres-url")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    started = time.time()
    pages = sqlite_pages(args.backlog, args.n)
    print(f"WAL pages per workflow (SQLite): {pages:.1f}")
    if not args.skip_postgres and args.postgres_url:
        per, records = postgres_wal(args.postgres_url, args.backlog, args.pg_n)
        print(f"WAL per workflow (PostgreSQL): {per:,.0f} bytes in {records:.1f} records")
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
