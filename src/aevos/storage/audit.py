"""The audit log's rows: per-tenant chains of records and the head row of each chain.

What a record says and how it is hashed is :mod:`aevos.audit`'s business; this repository
only stores and reads rows. An append locks the tenant's head row first (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite's write transaction holds the database lock already), so the
appenders of one chain are serialised across processes and the records commit with the
change they record, in the caller's unit of work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..errors import AevosError, AuditChainError, StorageError
from .fastpath import Compiled
from .repository import Repository, StoreHandle
from .schema import audit, audit_heads

#: The columns of a chain's rows, in the order :func:`read_chain` yields them.
CHAIN_COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "subject",
    "run_id",
    "payload",
    "prev_hash",
    "hash",
)
#: Rows fetched per round trip when a chain is streamed.
CHAIN_BATCH = 10_000
# The hash a chain starts from (the "previous hash" of its first record).
_GENESIS = "0" * 64


class Head(NamedTuple):
    """Where a chain ends, as its head row records it."""

    seq: int
    hash: str


class LockedHead(NamedTuple):
    seq: int
    hash: str
    updated_at: float


@dataclass(frozen=True)
class AuditRow:
    """One stored record: its index columns and its hashed payload."""

    tenant: str
    seq: int
    at: float
    actor: str
    action: str
    subject: str | None
    run_id: str | None
    payload: str
    prev_hash: str
    hash: str


class _Sql:
    """The statements of an append and a chain scan, built once per store."""

    def __init__(self, store: StoreHandle) -> None:
        head_of_tenant = audit_heads.c.tenant == sa.bindparam("tenant")
        self.head = sa.select(audit_heads.c.seq, audit_heads.c.hash).where(head_of_tenant)
        self.head_for_update = self.head.add_columns(audit_heads.c.updated_at).with_for_update()
        self.new_head = (
            store.dialect.insert(audit_heads)
            .on_conflict_do_nothing(index_elements=["tenant"])
            .returning(audit_heads.c.tenant)  # psycopg's rowcount says nothing here
        )
        self.any_record = (
            sa.select(audit.c.seq).where(audit.c.tenant == sa.bindparam("tenant")).limit(1)
        )
        self.set_head = (
            sa.update(audit_heads)
            .where(audit_heads.c.tenant == sa.bindparam("w_tenant"))
            .values({name: sa.bindparam(f"w_{name}") for name in ("seq", "hash", "updated_at")})
        )
        # Compiled once: SQLAlchemy's per-row parameter processing cost more than the rest
        # of an append together in large batches.
        self.insert = Compiled(audit.insert(), store.engine)
        self.rows = (
            sa.select(*(audit.c[name] for name in CHAIN_COLUMNS))
            .where(audit.c.tenant == sa.bindparam("tenant"), audit.c.seq > sa.bindparam("after"))
            .order_by(audit.c.seq)
        )


class AuditRepository(Repository):
    """Appends to and reads the chains, in its unit of work."""

    @property
    def _sql(self) -> _Sql:
        return self.uow.prepared(_Sql)

    def lock_head(self, tenant: str) -> LockedHead:
        """Lock the tenant's head row until the unit of work ends, creating it for a new
        chain; raises :class:`AuditChainError` when the chain has records but no head row
        (appending would fork it)."""
        sql, conn = self._sql, self.conn
        row = conn.execute(sql.head_for_update, {"tenant": tenant}).first()
        if row is None:
            # A new chain. A concurrent first appender's insert makes ours wait and then do
            # nothing; if ours creates the head, there must be no records yet (or the head
            # row was deleted: appending would fork the chain).
            head = {"tenant": tenant, "seq": 0, "hash": _GENESIS, "updated_at": 0.0}
            created = conn.execute(sql.new_head, head).first() is not None
            if created and conn.execute(sql.any_record, {"tenant": tenant}).first():
                raise AuditChainError(
                    f"the audit chain of tenant {tenant!r} has records but no head row; "
                    "run `aevos audit verify` before appending to it"
                )
            row = conn.execute(sql.head_for_update, {"tenant": tenant}).one()
        return LockedHead(int(row.seq), str(row.hash), float(row.updated_at))

    def move_head(self, tenant: str, seq: int, digest: str, at: float) -> None:
        """Point the (locked) head row of ``tenant`` at its new last record."""
        self.conn.execute(
            self._sql.set_head,
            {"w_tenant": tenant, "w_seq": seq, "w_hash": digest, "w_updated_at": at},
        )

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert records (every column of ``aevos_audit``), in one round trip."""
        if rows:
            insert = self._sql.insert
            self.conn.exec_driver_sql(insert.sql, [insert.params(row) for row in rows])

    def head(self, tenant: str) -> Head | None:
        """The chain's end as its head row records it; None for a tenant with no records."""
        row = self.conn.execute(self._sql.head, {"tenant": tenant}).first()
        return None if row is None else Head(int(row.seq), str(row.hash))

    def heads(self) -> dict[str, Head]:
        """Every chain's end that has records, by tenant."""
        h = audit_heads.c
        rows = self.conn.execute(sa.select(h.tenant, h.seq, h.hash).where(h.seq > 0))
        return {str(tenant): Head(int(seq), str(digest)) for tenant, seq, digest in rows}

    def last_seq(self, tenant: str) -> int:
        """The highest seq stored for ``tenant`` (0 for none), read from the records."""
        return int(
            self.conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(audit.c.seq), 0)).where(
                    audit.c.tenant == tenant
                )
            ).scalar_one()
        )

    def query(
        self,
        tenant: str,
        *,
        run_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditRow]:
        """Rows of ``tenant`` after ``after_seq`` in seq order; ``since`` inclusive,
        ``until`` exclusive."""
        c = audit.c
        stmt = sa.select(audit).where(c.tenant == tenant, c.seq > after_seq)
        for column, value in ((c.run_id, run_id), (c.action, action), (c.actor, actor)):
            stmt = stmt if value is None else stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(c.at >= since)
        if until is not None:
            stmt = stmt.where(c.at < until)
        rows = self.conn.execute(stmt.order_by(c.seq).limit(limit)).all()
        return [AuditRow(**row._mapping) for row in rows]


@contextmanager
def read_chain(
    store: StoreHandle, tenant: str, after_seq: int
) -> Iterator[tuple[Head | None, Iterable[Sequence[Any]]]]:
    """The head and a stream of the chain's rows after ``after_seq`` (as
    :data:`CHAIN_COLUMNS`), both from one read snapshot.

    One snapshot, so that appends committed meanwhile are neither half-seen nor taken for
    records beyond the head. Rows stream (SQLite steps its cursor; PostgreSQL uses a
    server-side cursor), so memory stays flat however long the chain. Text that is not
    valid UTF-8 (a tampered byte) is read leniently rather than ending the scan.
    """
    sql = store.prepared(_Sql)
    params = {"tenant": tenant, "after": after_seq}
    if store.backend == "sqlite":
        with _sqlite_snapshot(store, sql, params) as result:
            yield result
        return
    with store._guard(), store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            row = conn.execute(sql.head, params).first()
            head = None if row is None else Head(int(row.seq), str(row.hash))
            stream = conn.execution_options(yield_per=CHAIN_BATCH).execute(sql.rows, params)
            yield head, stream


@contextmanager
def _sqlite_snapshot(
    store: StoreHandle, sql: _Sql, params: dict[str, Any]
) -> Iterator[tuple[Head | None, Iterable[Sequence[Any]]]]:
    # A raw connection: the engine's transactions are BEGIN IMMEDIATE, which would hold
    # the write lock (and stall every writer) for the whole scan. A deferred BEGIN in WAL
    # mode is a read snapshot that blocks nobody.
    engine = store.engine
    head_sql, rows_sql = Compiled(sql.head, engine), Compiled(sql.rows, engine)
    with store._guard():
        raw = engine.raw_connection()
    driver: Any = raw.driver_connection
    cursor = raw.cursor()
    try:
        cursor.execute("BEGIN")
        row = cursor.execute(head_sql.sql, head_sql.params(params)).fetchone()
        head = None if row is None else Head(int(row[0]), str(row[1]))
        yield head, _sqlite_rows(cursor, driver, rows_sql, params)
    except driver.Error as exc:
        raise _storage_error(store, exc) from None
    finally:
        driver.text_factory = str
        with suppress(driver.Error):  # broken: the pool's reset on return drops it
            if driver.in_transaction:
                cursor.execute("ROLLBACK")
        cursor.close()
        raw.close()


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _sqlite_rows(
    cursor: Any, driver: Any, rows: Compiled, params: dict[str, Any]
) -> Iterator[Sequence[Any]]:
    after = params["after"]
    while True:
        try:
            cursor.execute(rows.sql, rows.params({**params, "after": after}))
            while batch := cursor.fetchmany(CHAIN_BATCH):
                yield from batch
                after = batch[-1][0]
            return
        except driver.OperationalError as exc:
            if driver.text_factory is _lenient_text or "decode" not in str(exc):
                raise
            # A byte changed into invalid UTF-8 must be reported, not end the scan: read on
            # from the last whole batch, decoding leniently (slower, so not from the start).
            driver.text_factory = _lenient_text


def _storage_error(store: StoreHandle, exc: Exception) -> AevosError:
    classified = store.dialect.classify(exc, store.safe_url)
    if classified is not None:
        return classified
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()
    return StorageError(
        f"database error on {store.safe_url}: {reason[0] if reason else type(exc).__name__}"
    )
