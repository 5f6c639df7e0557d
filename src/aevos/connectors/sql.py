"""The SQL connector: write a step's result to the user's own database, once.

Writes are keyed by the step's idempotency key (a unique column of the user's table,
``aevos_key`` by default): a retried or replayed step updates the row it wrote instead of
adding another. The database is reached through a SQLAlchemy URL given directly or read
from an environment variable; the SQL itself lives in :mod:`aevos.storage.external`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConnectorConfigError
from ..storage.external import ExternalDatabase
from .spans import call_span

if TYPE_CHECKING:
    from ..kernel.step import StepContext
    from ..kernel.tracing import Attribute

DEFAULT_KEY_COLUMN = "aevos_key"


class SqlConnector:
    """A user's database (``url``, or the URL in environment variable ``url_env``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        url_env: str | None = None,
        key_column: str = DEFAULT_KEY_COLUMN,
        connect_timeout: float = 10.0,
    ) -> None:
        if (url is None) == (url_env is None):
            raise ConnectorConfigError("give the SQL connector url= or url_env=, exactly one")
        if url is None:
            assert url_env is not None
            url = os.environ.get(url_env)
            if not url:
                raise ConnectorConfigError(f"environment variable {url_env} is not set")
        self.key_column = key_column
        self._db = ExternalDatabase(url, connect_timeout=connect_timeout)

    def __repr__(self) -> str:
        return f"SqlConnector({self._db.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The database's URL without its password."""
        return self._db.safe_url

    def close(self) -> None:
        self._db.close()

    def upsert(self, sctx: StepContext, table: str, values: Mapping[str, Any]) -> str:
        """Write ``values`` to ``table`` in the row keyed by this step's idempotency key
        (inserted the first time, updated on a retry); returns the key."""
        with call_span(sctx, "sql", "upsert", self._attributes("upsert", table)):
            self._db.upsert(table, self.key_column, sctx.idempotency_key, values)
        return sctx.idempotency_key

    def insert(self, sctx: StepContext, table: str, values: Mapping[str, Any]) -> bool:
        """Insert ``values`` into ``table`` keyed by this step's idempotency key, unless a
        previous attempt already did; True if this attempt inserted it."""
        with call_span(sctx, "sql", "insert", self._attributes("insert", table)) as span:
            inserted = self._db.insert_once(table, self.key_column, sctx.idempotency_key, values)
            if span is not None:
                span.set_attribute("aevos.sql.inserted", inserted)
        return inserted

    def query(
        self, sctx: StepContext, sql: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of ``sql`` with ``:name`` parameters bound from ``params``."""
        # The statement is not an attribute: it may hold literals of the user's data.
        with call_span(sctx, "sql", "query", self._attributes("query", None)) as span:
            rows = self._db.query(sql, params)
            if span is not None:
                span.set_attribute("db.response.returned_rows", len(rows))
        return rows

    def _attributes(self, operation: str, table: str | None) -> dict[str, Attribute | None]:
        return {
            "db.system.name": self._db.backend,
            "db.operation.name": operation,
            "db.collection.name": table,
            "server.address": self._db.host,
            "server.port": self._db.port,
        }
