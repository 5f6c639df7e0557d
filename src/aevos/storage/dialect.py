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
        text = str(getattr(error, "orig", error))
        if "file is not a database" in text or "database disk image is malformed" in text:
            return CorruptDatabaseError(f"{url} is not a valid aevos database: {text}")
        if "unable to open database file" in text:
            return StorageUnavailableError(f"cannot open the database {url}: {text}")
        if "database is locked" in text or "database is busy" in text:
            # Another process held the write lock past busy_timeout: transient, retry later.
            return StorageUnavailableError(f"the database {url} stayed locked: {text}")
        return None


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

        if isinstance(
            error,
            sa.exc.OperationalError
            | sa.exc.InterfaceError
            | psycopg.OperationalError
            | psycopg.InterfaceError,
        ) or (isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated):
            reason = str(getattr(error, "orig", error)).strip().splitlines()[0:1]
            return StorageUnavailableError(
                f"lost or could not open the connection to {url}: "
                f"{reason[0] if reason else type(error).__name__}"
            )
        if "cannot contain NUL" in str(getattr(error, "orig", error)):
            # SQLite stores U+0000 in text; PostgreSQL refuses it. Either way it is the
            # caller's value at fault, never a fault of the database.
            return SerializationError(
                "a text value contains a NUL (U+0000) character, which PostgreSQL cannot "
                "store; remove it or encode the value"
            )
        return None


def dialect_for(url: URL) -> Dialect:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return SQLiteDialect()
    if backend in ("postgresql", "postgres"):
        return PostgresDialect()
    raise StorageUnavailableError(
        f"unsupported database URL {redact_url(url)}: use sqlite:///path or postgresql://..."
    )
