"""What differs between SQLite and PostgreSQL: engine setup, locking, error classification,
JSON operators.

Everything else (every query) lives once, in :mod:`aevos.storage.store` and the
repositories beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url

from ..errors import (
    AevosError,
    CorruptDatabaseError,
    SerializationError,
    StorageError,
    StorageUnavailableError,
)

InsertFactory = Callable[[sa.Table], Any]
# The execution option marking a connection whose transactions only read (Store._read).
READ_ONLY = "aevos_read_only"


def redact_url(url: str | URL) -> str:
    """The URL with its password hidden, safe for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def parse_url(url: str | URL) -> URL:
    """``url`` parsed; ValueError, which does not quote it (it may hold a password), if it
    cannot be."""
    try:
        return make_url(url)
    except Exception:
        raise ValueError("the database URL cannot be parsed") from None


def url_password(url: str) -> str | None:
    """The password in ``url``, if it has one (to scrub it from messages that are not
    ours); None for a URL that cannot be parsed."""
    try:
        return make_url(url).password
    except Exception:
        return None


def check_url(url: str) -> None:
    """Raise ValueError if ``url`` cannot be parsed, StorageUnavailableError if no backend
    serves its scheme; opens no connection."""
    dialect_for(parse_url(url))


@contextmanager
def classified(dialect: Dialect, safe_url: str) -> Iterator[None]:
    """Driver and SQLAlchemy errors raised inside, as the aevos errors they mean."""
    try:
        yield
    except AevosError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        known = dialect.classify(exc, safe_url)
        if known is not None:
            raise known from None
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise StorageError(
            f"database error on {safe_url}: "
            f"{type(getattr(exc, 'orig', exc)).__name__}: {reason[0] if reason else ''}"
        ) from exc


class Dialect(Protocol):
    name: str
    skip_locked: bool

    def create_engine(self, url: URL) -> Engine: ...

    def insert(self, table: sa.Table) -> Any: ...

    def lock_queue(self, conn: Connection, queue: str) -> None: ...

    def classify(self, error: Exception, url: str) -> AevosError | None: ...

    def json_field(self, column: Any, *path: str) -> Any:
        """``column`` (JSON text) at ``path``, as a JSON expression (``.as_string()`` ...)."""
        ...


class SQLiteDialect:
    name = "sqlite"
    skip_locked = False

    def create_engine(self, url: URL) -> Engine:
        engine = sa.create_engine(
            url,
            # One connection per thread; the default QueuePool is fine for files.
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=32,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let us issue BEGIN ourselves: pysqlite's implicit transactions would defer
            # taking the write lock and deadlock-retry under concurrency.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed step survives power loss, not only a process crash.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        # IMMEDIATE transactions serialise writers up front, so two processes claiming the
        # same run cannot both read it as free and then fight over the upgrade to a write lock.
        # Read-only transactions (Store._read) begin DEFERRED: in WAL mode a reader neither
        # waits for nor blocks the writer, so API reads do not queue behind step commits.
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            read = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def lock_queue(self, conn: Connection, queue: str) -> None:
        # BEGIN IMMEDIATE already holds the database write lock.
        return None

    def json_field(self, column: Any, *path: str) -> Any:
        # JSON1's json_extract over the text as stored.
        return sa.type_coerce(column, sa.JSON)[path]

    def classify(self, error: Exception, url: str) -> AevosError | None:
        orig = getattr(error, "orig", error)
        text = str(orig)
        # The primary result code (the low byte of an extended one such as IOERR_WRITE).
        code = (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF
        if code in _SQLITE_CORRUPT or any(phrase in text for phrase in _SQLITE_CORRUPT_TEXT):
            return CorruptDatabaseError(f"{url} is not a valid aevos database: {text}")
        for codes, phrases, what in _SQLITE_TRANSIENT:
            if code in codes or any(phrase in text for phrase in phrases):
                return StorageUnavailableError(f"{what} ({url}): {text}")
        return None


# SQLite conditions that pass when the operator (or the other process) acts: the run must
# wait for them, never fail. SQLITE_FULL is also what PRAGMA max_page_count reports.
_SQLITE_TRANSIENT: tuple[tuple[frozenset[int], tuple[str, ...], str], ...] = (
    (frozenset({13}), ("database or disk is full",), "the database's disk is full"),
    (frozenset({10}), ("disk I/O error",), "disk I/O error on the database"),
    (
        frozenset({8}),
        ("attempt to write a readonly database", "read-only file system"),
        "the database is read-only",
    ),
    (frozenset({14}), ("unable to open database file",), "cannot open the database"),
    # Another process held the write lock past busy_timeout.
    (frozenset({5, 6}), ("database is locked", "database is busy"), "the database stayed locked"),
)
_SQLITE_CORRUPT = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_CORRUPT_TEXT = ("file is not a database", "database disk image is malformed")


class PostgresDialect:
    name = "postgresql"
    skip_locked = True

    def create_engine(self, url: URL) -> Engine:
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if "application_name" not in url.query:
            # Makes aevos's sessions recognisable in pg_stat_activity.
            connect_args["application_name"] = "aevos"
        return sa.create_engine(
            url, pool_size=8, max_overflow=32, pool_pre_ping=True, connect_args=connect_args
        )

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def lock_queue(self, conn: Connection, queue: str) -> None:
        # The queue row is a per-queue mutex: claims on one queue serialise, so counting the
        # running runs and claiming new ones cannot race past the concurrency limit.
        from .schema import queues

        conn.execute(sa.select(queues.c.name).where(queues.c.name == queue).with_for_update())

    def json_field(self, column: Any, *path: str) -> Any:
        # The text column parsed as JSONB, then the #> path operator.
        return sa.cast(column, postgresql.JSONB)[path]

    def classify(self, error: Exception, url: str) -> AevosError | None:
        import psycopg

        orig = getattr(error, "orig", error)
        lines = str(orig).strip().splitlines()
        reason = lines[0] if lines else type(orig).__name__
        state = getattr(orig, "sqlstate", None) or ""
        what = _PG_TRANSIENT.get(state) or _PG_TRANSIENT.get(state[:2])
        if what is not None:
            return StorageUnavailableError(f"{what} ({url}): {reason}")
        if isinstance(
            error,
            sa.exc.OperationalError
            | sa.exc.InterfaceError
            | psycopg.OperationalError
            | psycopg.InterfaceError,
        ) or (isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated):
            return StorageUnavailableError(
                f"lost or could not open the connection to {url}: {reason}"
            )
        if "cannot contain NUL" in str(orig):
            # SQLite stores U+0000 in text; PostgreSQL refuses it. Either way it is the
            # caller's value at fault, never a fault of the database.
            return SerializationError(
                "a text value contains a NUL (U+0000) character, which PostgreSQL cannot "
                "store; remove it or encode the value"
            )
        return None


# PostgreSQL conditions (SQLSTATE, or its two-character class) that end when the server,
# the network or the competing transaction does: the run waits for them, never fails.
_PG_TRANSIENT = {
    "08": "lost or could not open the connection",
    "57P01": "the server is shutting down",
    "57P02": "the server crashed",
    "57P03": "the server is starting up or recovering",
    "57014": "a statement was cancelled or timed out",
    "55P03": "a lock wait timed out",
    "40001": "a serialization conflict",
    "40P01": "a deadlock",
    "53": "the server is out of resources (disk, memory or connections)",
    "25006": "the server is read-only (a standby)",
    "25P03": "an idle transaction timed out",
}


def dialect_for(url: URL) -> Dialect:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return SQLiteDialect()
    if backend in ("postgresql", "postgres"):
        return PostgresDialect()
    raise StorageUnavailableError(
        f"unsupported database URL {redact_url(url)}: use sqlite:///path or postgresql://..."
    )
