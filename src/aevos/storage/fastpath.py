"""Hot-path execution of Core statements compiled once.

A step commit is on every workflow's critical path, and SQLAlchemy's per-execution work
(cache-key generation, parameter processing, result set-up) cost several times the fsync
itself. The statements stay SQLAlchemy Core (one definition for both dialects); they are
compiled once per dialect here and run on a per-thread DBAPI connection from the engine's
pool, so connection set-up (pragmas, BEGIN IMMEDIATE) is identical to the slow path.
"""

from __future__ import annotations

import operator
import threading
from contextlib import suppress
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.sql import ClauseElement


class Compiled:
    """A statement compiled for one dialect; ``params`` maps names to the driver's style."""

    def __init__(self, stmt: ClauseElement, engine: Engine) -> None:
        compiled = stmt.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        # Every bind with its compiled default (None where the caller must supply it).
        self.defaults = dict(compiled.params)
        self.positional = engine.dialect.paramstyle in ("qmark", "numeric", "format")
        self.names = list(getattr(compiled, "positiontup", None) or [])
        # itemgetter builds the positional tuple in C: this runs for every step.
        self._get = operator.itemgetter(*self.names) if len(self.names) > 1 else None

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        if not self.positional:
            return merged
        if self._get is not None:
            return self._get(merged)
        return tuple(merged[name] for name in self.names)


class Transaction:
    """Context manager for one hot-path transaction (a class, not a generator: it runs for
    every step, and a generator-based context manager costs several times more)."""

    __slots__ = ("_conns", "_cursor", "_single")

    def __init__(self, conns: RawConnections, single: bool) -> None:
        self._conns = conns
        self._single = single
        self._cursor: Any = None

    def __enter__(self) -> Any:
        cursor = self._conns._connection().cursor()
        self._cursor = cursor
        if not self._single:
            try:
                cursor.execute(self._conns._begin_sql)
            except BaseException:
                cursor.close()
                raise
        return cursor

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        cursor = self._cursor
        broken = False
        try:
            if self._single:
                return
            if kind is None:
                try:
                    cursor.execute("COMMIT")
                except BaseException:
                    with suppress(Exception):
                        cursor.execute("ROLLBACK")
                    raise
                return
            try:
                cursor.execute("ROLLBACK")
            except Exception:
                # SQLite has already rolled back after some errors (a full disk); any other
                # failure may have broken the connection. A fresh one is safe either way.
                broken = True
        finally:
            # Never let closing the cursor hide the error that ended the transaction.
            with suppress(Exception):
                cursor.close()
            if broken:
                self._conns.discard()


class _Slot:
    """One connection for every thread (see ``RawConnections(shared=True)``)."""

    conn: Any = None


class RawConnections:
    """One pooled DBAPI connection per thread, kept for the thread's life; or, ``shared``,
    one for all threads, for a caller that lets only one thread at a time use it (the group
    commit's leader), so that many threads in flight do not hold a connection each.

    The connections run in autocommit mode: a single-statement write is then one round trip
    and still one durable commit, while multi-statement writes issue BEGIN/COMMIT explicitly.
    """

    def __init__(
        self, engine: Engine, begin_sql: str, *, always_begin: bool, shared: bool = False
    ) -> None:
        self._engine = engine
        self._begin_sql = begin_sql
        # SQLite: an autocommit write that finds the snapshot stale fails with
        # SQLITE_BUSY_SNAPSHOT without waiting; BEGIN IMMEDIATE takes the lock up front.
        self._always_begin = always_begin
        self._local: Any = _Slot() if shared else threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._engine.raw_connection()
            driver = conn.driver_connection
            if driver is not None and hasattr(driver, "autocommit"):
                driver.autocommit = True  # psycopg; sqlite3 is already isolation_level=None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def discard(self) -> bool:
        """Drop this thread's connection after an error that may have broken it; True if
        the driver found it closed (the server restarted or the network cut it), so the
        statement that failed never reached a live session."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        driver = None if conn is None else conn.driver_connection
        # psycopg marks a connection it found dead `broken`/`closed`; sqlite3 has neither.
        lost = bool(getattr(driver, "broken", False) or getattr(driver, "closed", False))
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            with suppress(Exception):  # already broken; nothing more to release
                conn.invalidate()
        return lost

    def transaction(self, single: bool = False) -> Transaction:
        """A cursor in a transaction; ``single`` means one statement, committed by itself."""
        return Transaction(self, single and not self._always_begin)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                driver = conn.driver_connection
                if driver is not None and hasattr(driver, "autocommit"):
                    driver.autocommit = False  # the pool's other users expect transactions
                conn.close()
            except Exception:  # closing a dead connection at shutdown
                pass
