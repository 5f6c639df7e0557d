"""A user's own database, reached through a SQLAlchemy URL (the SQL connector's storage).

Kept in ``storage/`` so that SQLAlchemy stays here (import-linter's "only storage speaks
SQL"); :class:`~aevos.connectors.sql.SqlConnector` uses this narrow interface. Errors leave
as connector errors naming the database by its URL without the password: unreachable is
:class:`~aevos.errors.ConnectorUnavailableError` (retried), anything the database refuses
(no such table or column, a constraint, bad SQL) is
:class:`~aevos.errors.ConnectorRejectedError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ..errors import ConnectorConfigError, ConnectorRejectedError, ConnectorUnavailableError
from .dialect import parse_url, redact_url

#: Rows a query may return at most; a bigger result is refused, not held in memory.
MAX_ROWS = 10_000


class ExternalDatabase:
    """One database of the user's, its tables reflected on first use."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        try:
            parsed = parse_url(url)
        except ValueError:
            raise ConnectorConfigError(
                "the SQL connector's URL cannot be parsed; expected a SQLAlchemy URL such as "
                "postgresql://user@host/db or sqlite:///path.db"
            ) from None
        self.safe_url = redact_url(parsed)
        #: The backend's name (``postgresql``, ``sqlite``, ...), for span attributes.
        self.backend = parsed.get_backend_name()
        #: The server's host and port when there is one (never the credentials).
        self.host = parsed.host
        self.port = parsed.port
        self._password = parsed.password
        args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            args["connect_timeout"] = max(1, int(connect_timeout))
        try:
            self._engine: Engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=args)
        except Exception as exc:  # an unknown dialect or a missing driver
            raise ConnectorConfigError(
                f"cannot use the database {self.safe_url}: {type(exc).__name__}: "
                f"{self._clean(str(exc))}"
            ) from None
        self._metadata = sa.MetaData()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._engine.dispose()

    # -- operations -------------------------------------------------------------------------

    def upsert(self, table: str, key_column: str, key: str, values: Mapping[str, Any]) -> None:
        """Insert ``values`` with ``key_column = key``, or update the row that has it: run
        twice with one key, one row holds the last values. ``key_column`` must be unique."""
        with self._connection() as conn:
            t = self._table(conn, table)
            row = self._row(t, {**values, key_column: key})
            backend = self._engine.dialect.name
            updates = {c: row[c] for c in row if c != key_column}
            if backend in ("postgresql", "sqlite"):
                dialect_insert = postgresql.insert if backend == "postgresql" else sqlite.insert
                stmt = dialect_insert(t).values(row)
                stmt = (
                    stmt.on_conflict_do_update(index_elements=[key_column], set_=updates)
                    if updates
                    else stmt.on_conflict_do_nothing(index_elements=[key_column])
                )
                conn.execute(stmt)
                return
            done = conn.execute(sa.update(t).where(t.c[key_column] == key).values(updates))
            if not done.rowcount:
                conn.execute(sa.insert(t).values(row))

    def insert_once(self, table: str, key_column: str, key: str, values: Mapping[str, Any]) -> bool:
        """Insert ``values`` with ``key_column = key`` unless a row has that key already;
        True if this call inserted it."""
        with self._connection() as conn:
            t = self._table(conn, table)
            found = conn.execute(sa.select(t.c[key_column]).where(t.c[key_column] == key))
            if found.first() is not None:
                return False
            conn.execute(sa.insert(t).values(self._row(t, {**values, key_column: key})))
            return True

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of ``sql`` (bound ``:name`` parameters, never formatted in) as dicts."""
        with self._connection() as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            if not result.returns_rows:
                return []
            rows = result.mappings().fetchmany(MAX_ROWS + 1)
            if len(rows) > MAX_ROWS:
                raise ConnectorRejectedError(
                    f"query on {self.safe_url} returned more than {MAX_ROWS} rows; page it"
                )
            return [dict(row) for row in rows]

    # -- plumbing ---------------------------------------------------------------------------

    def _table(self, conn: Connection, name: str) -> sa.Table:
        with self._lock:
            if name in self._metadata.tables:
                return self._metadata.tables[name]
            try:
                return sa.Table(name, self._metadata, autoload_with=conn)
            except sa.exc.NoSuchTableError:
                raise ConnectorRejectedError(
                    f"no table {name!r} in the database {self.safe_url}"
                ) from None

    def _row(self, table: sa.Table, values: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(values) - set(table.c.keys()))
        if unknown:
            raise ConnectorRejectedError(
                f"table {table.name!r} in {self.safe_url} has no column(s) {', '.join(unknown)}"
            )
        return dict(values)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except (ConnectorRejectedError, ConnectorUnavailableError):
            raise
        except sa.exc.DBAPIError as exc:
            detail = self._clean(str(exc.orig).splitlines()[0] if str(exc.orig) else "")
            # OperationalError is also SQLite's "no such table" on a bad statement; a refused
            # connection and a dropped one are the cases worth retrying.
            lost = exc.connection_invalidated or isinstance(
                exc, sa.exc.OperationalError | sa.exc.InterfaceError
            )
            if lost and _unreachable(detail):
                raise ConnectorUnavailableError(
                    f"the database {self.safe_url} cannot be reached: {detail}"
                ) from None
            raise ConnectorRejectedError(
                f"the database {self.safe_url} refused the statement: "
                f"{type(exc.orig).__name__}: {detail}"
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise ConnectorRejectedError(
                f"the database {self.safe_url}: {type(exc).__name__}: {self._clean(str(exc))}"
            ) from None

    def _clean(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text


_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "connection to server",
    "server closed the connection",
    "timeout",
    "timed out",
    "unable to open database file",
    "no route to host",
    "name or service not known",
    "database is locked",
    "terminating connection",
)


def _unreachable(detail: str) -> bool:
    lowered = detail.lower()
    return any(marker in lowered for marker in _UNREACHABLE)
