"""The audit log: appends, queries, export and verification of per-tenant chains."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import (
    AevosError,
    AuditChainError,
    AuditKeyError,
    InvalidAuditEventError,
    StorageError,
)
from ..storage import Store
from ..storage.fastpath import Compiled
from ..storage.schema import audit, audit_heads
from .anchor import AnchorOutcome, AuditAnchors, SignedAnchor, anchor_chain, anchor_parts
from .record import (
    _BATCH,
    _ROW,
    GENESIS_HASH,
    MIN_KEY_BYTES,
    AuditEvent,
    AuditHead,
    AuditRecord,
    VerifyReport,
    _hasher,
    _message,
    canonical_payload,
    key_from_env,
)
from .verify import _Checker, _export_line, _lenient_text, _parse


class AuditLog:
    """Appends to, queries, verifies and exports the per-tenant audit chains of one store.

    Give ``key`` (or set ``AEVOS_AUDIT_KEY`` and use :meth:`from_env`) to chain with
    HMAC-SHA256: kept outside the database, it makes records unforgeable by anyone without
    it. Every process appending to a chain must use the same key. ``anchors`` (from
    ``AEVOS_AUDIT_ANCHOR_DIR`` with :meth:`from_env`) is where signed heads are published:
    :meth:`verify` checks against the newest, which is what reveals a truncated tail.
    """

    def __init__(
        self, store: Store, key: bytes | None = None, *, anchors: AuditAnchors | None = None
    ) -> None:
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise AuditKeyError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")
        self.store = store
        self.anchors = anchors
        self._key = key
        self._hash = _hasher(key)
        self._sqlite = store.backend == "sqlite"
        head_of_tenant = audit_heads.c.tenant == sa.bindparam("tenant")
        self._head = sa.select(audit_heads.c.seq, audit_heads.c.hash).where(head_of_tenant)
        self._head_for_update = self._head.add_columns(audit_heads.c.updated_at).with_for_update()
        self._new_head = (
            store.dialect.insert(audit_heads)
            .on_conflict_do_nothing(index_elements=["tenant"])
            .returning(audit_heads.c.tenant)  # psycopg's rowcount says nothing here
        )
        self._any_record = (
            sa.select(audit.c.seq).where(audit.c.tenant == sa.bindparam("tenant")).limit(1)
        )
        self._set_head = (
            sa.update(audit_heads)
            .where(audit_heads.c.tenant == sa.bindparam("w_tenant"))
            .values({name: sa.bindparam(f"w_{name}") for name in ("seq", "hash", "updated_at")})
        )
        self._insert = Compiled(audit.insert(), store.engine)
        self._rows = (
            sa.select(*(audit.c[name] for name in _ROW))
            .where(audit.c.tenant == sa.bindparam("tenant"), audit.c.seq > sa.bindparam("after"))
            .order_by(audit.c.seq)
        )

    @classmethod
    def from_env(cls, store: Store, environ: Mapping[str, str] | None = None) -> AuditLog:
        """A log keyed by ``AEVOS_AUDIT_KEY`` when it is set (see :func:`key_from_env`),
        anchored in ``AEVOS_AUDIT_ANCHOR_DIR`` when that is set (see :class:`AuditAnchors`)."""
        return cls(store, key_from_env(environ), anchors=AuditAnchors.from_env(environ))

    @property
    def keyed(self) -> bool:
        return self._key is not None

    # -- appending ---------------------------------------------------------------------------

    def append(self, event: AuditEvent, *, conn: Connection | None = None) -> AuditRecord:
        """Record ``event`` at the end of its tenant's chain.

        With ``conn``, inside the caller's transaction: the record commits or rolls back with
        the caller's state change. The tenant's head row stays locked until then, so keep
        that transaction short (and READ COMMITTED, PostgreSQL's default).
        """
        return self.append_many([event], conn=conn)[0]

    def append_many(
        self, events: Sequence[AuditEvent], *, conn: Connection | None = None
    ) -> list[AuditRecord]:
        """Record several events in one transaction, in order; returns their records."""
        if not events:
            return []
        if conn is not None:
            with self.store._guard():
                return self._append(conn, events)
        with self.store._tx() as tx:
            return self._append(tx, events)

    def _lock_head(self, conn: Connection, tenant: str) -> tuple[int, str, float]:
        # PostgreSQL: the head row's lock serialises appenders of this chain across
        # processes. SQLite: the store's BEGIN IMMEDIATE already holds the write lock.
        row = conn.execute(self._head_for_update, {"tenant": tenant}).first()
        if row is None:
            # A new chain. A concurrent first appender's insert makes ours wait and then do
            # nothing; if ours creates the head, there must be no records yet (or the head
            # row was deleted: appending would fork the chain).
            head = {"tenant": tenant, "seq": 0, "hash": GENESIS_HASH, "updated_at": 0.0}
            created = conn.execute(self._new_head, head).first() is not None
            if created and conn.execute(self._any_record, {"tenant": tenant}).first():
                raise AuditChainError(
                    f"the audit chain of tenant {tenant!r} has records but no head row; "
                    "run `aevos audit verify` before appending to it"
                )
            row = conn.execute(self._head_for_update, {"tenant": tenant}).one()
        return int(row.seq), str(row.hash), float(row.updated_at)

    def _append(self, conn: Connection, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        by_tenant: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_tenant.setdefault(event.tenant, []).append(index)
        records: list[AuditRecord | None] = [None] * len(events)
        rows: list[dict[str, Any]] = []
        now = time.time()
        # Heads are locked in one order, so two batches spanning tenants cannot deadlock.
        for tenant in sorted(by_tenant):
            seq, prev_hash, last_at = self._lock_head(conn, tenant)
            # Never before the previous record: seq order and time order agree.
            at = max(now, last_at)
            for index in by_tenant[tenant]:
                event = events[index]
                seq += 1
                payload = canonical_payload(
                    tenant=tenant,
                    seq=seq,
                    at=at,
                    actor=event.actor,
                    action=event.action,
                    subject=event.subject,
                    run_id=event.run_id,
                    data_json=event._data_json,
                )
                digest = self._hash(_message(prev_hash, payload))
                row: dict[str, Any] = {"tenant": tenant, "seq": seq, "at": at, "actor": event.actor}
                row.update(action=event.action, subject=event.subject, run_id=event.run_id)
                row.update(prev_hash=prev_hash, hash=digest)
                records[index] = AuditRecord(**row, data=event._data)
                rows.append({**row, "payload": payload})
                prev_hash = digest
            conn.execute(
                self._set_head,
                {"w_tenant": tenant, "w_seq": seq, "w_hash": prev_hash, "w_updated_at": at},
            )
        # Compiled once: SQLAlchemy's per-row parameter processing cost more than the rest
        # of an append together in large batches.
        conn.exec_driver_sql(self._insert.sql, [self._insert.params(row) for row in rows])
        return [record for record in records if record is not None]

    # -- reading -----------------------------------------------------------------------------

    def head(self, tenant: str) -> AuditHead | None:
        """The chain's end as its head row records it; None for a tenant with no records."""
        with self.store._read() as conn:
            row = conn.execute(self._head, {"tenant": tenant}).first()
        return None if row is None else AuditHead(int(row.seq), str(row.hash))

    def heads(self) -> dict[str, AuditHead]:
        """Every chain's end as its head row records it, by tenant."""
        stmt = sa.select(audit_heads.c.tenant, audit_heads.c.seq, audit_heads.c.hash)
        with self.store._read() as conn:
            rows = conn.execute(stmt.where(audit_heads.c.seq > 0)).all()
        return {str(row.tenant): AuditHead(int(row.seq), str(row.hash)) for row in rows}

    def query(
        self,
        tenant: str,
        *,
        run_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Records of ``tenant`` in seq order; ``since`` inclusive, ``until`` exclusive.

        Page with ``after_seq`` (the last seq of the previous page). Filters use the index
        columns; the records returned are read from the hashed payloads.
        """
        if limit < 1:
            raise InvalidAuditEventError("limit must be at least 1")
        stmt = sa.select(audit).where(audit.c.tenant == tenant, audit.c.seq > after_seq)
        for column, value in ((audit.c.run_id, run_id), (audit.c.action, action)):
            stmt = stmt if value is None else stmt.where(column == value)
        if actor is not None:
            stmt = stmt.where(audit.c.actor == actor)
        if since is not None:
            stmt = stmt.where(audit.c.at >= _timestamp(since))
        if until is not None:
            stmt = stmt.where(audit.c.at < _timestamp(until))
        with self.store._read() as conn:
            rows = conn.execute(stmt.order_by(audit.c.seq).limit(limit)).all()
        return [_record(row) for row in rows]

    @contextmanager
    def _snapshot(
        self, tenant: str, after_seq: int
    ) -> Iterator[tuple[AuditHead | None, Iterable[Sequence[Any]]]]:
        """The head and a stream of the chain's rows, both from one read snapshot.

        One snapshot, so that appends committed meanwhile are neither half-seen nor taken
        for records beyond the head. Rows stream (SQLite steps its cursor; PostgreSQL uses a
        server-side cursor), so memory stays flat however long the chain.
        """
        params = {"tenant": tenant, "after": after_seq}
        if self._sqlite:
            with self._sqlite_snapshot(tenant, params) as result:
                yield result
            return
        with self.store._guard(), self.store.engine.connect() as conn:
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with conn.begin():
                row = conn.execute(self._head, params).first()
                head = None if row is None else AuditHead(int(row.seq), str(row.hash))
                stream = conn.execution_options(yield_per=_BATCH).execute(self._rows, params)
                yield head, stream

    @contextmanager
    def _sqlite_snapshot(
        self, tenant: str, params: dict[str, Any]
    ) -> Iterator[tuple[AuditHead | None, Iterable[Sequence[Any]]]]:
        # A raw connection: the engine's transactions are BEGIN IMMEDIATE, which would hold
        # the write lock (and stall every writer) for the whole scan. A deferred BEGIN in WAL
        # mode is a read snapshot that blocks nobody.
        engine = self.store.engine
        head_sql, rows_sql = Compiled(self._head, engine), Compiled(self._rows, engine)
        with self.store._guard():
            raw = engine.raw_connection()
        driver: Any = raw.driver_connection
        cursor = raw.cursor()
        try:
            cursor.execute("BEGIN")
            row = cursor.execute(head_sql.sql, head_sql.params(params)).fetchone()
            head = None if row is None else AuditHead(int(row[0]), str(row[1]))
            yield head, self._sqlite_rows(cursor, driver, rows_sql, params)
        except driver.Error as exc:
            raise self._storage_error(exc) from None
        finally:
            driver.text_factory = str
            with suppress(driver.Error):  # broken: the pool's reset on return drops it
                if driver.in_transaction:
                    cursor.execute("ROLLBACK")
            cursor.close()
            raw.close()

    @staticmethod
    def _sqlite_rows(
        cursor: Any, driver: Any, rows: Compiled, params: dict[str, Any]
    ) -> Iterator[Sequence[Any]]:
        after = params["after"]
        while True:
            try:
                cursor.execute(rows.sql, rows.params({**params, "after": after}))
                while batch := cursor.fetchmany(_BATCH):
                    yield from batch
                    after = batch[-1][0]
                return
            except driver.OperationalError as exc:
                if driver.text_factory is _lenient_text or "decode" not in str(exc):
                    raise
                # A byte changed into invalid UTF-8 must be reported, not end the scan: read
                # on from the last whole batch, decoding leniently (slower, so not from the
                # start).
                driver.text_factory = _lenient_text

    def _storage_error(self, exc: Exception) -> AevosError:
        classified = self.store.dialect.classify(exc, self.store.safe_url)
        if classified is not None:
            return classified
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        return StorageError(
            f"database error on {self.store.safe_url}: "
            f"{reason[0] if reason else type(exc).__name__}"
        )

    def verify(
        self,
        tenant: str,
        *,
        anchor: AuditHead | SignedAnchor | None = None,
        since: AuditHead | SignedAnchor | None = None,
        use_anchors: bool = True,
        max_problems: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check the whole chain of ``tenant`` and name every record that does not fit.

        Streams the chain in seq order and checks, for each record: its seq follows the
        previous one, its payload names this seq and tenant and agrees with the index
        columns, its prev_hash is the previous record's hash, and its hash; then that the
        head row points at the last record, and that the chain still reaches ``anchor``
        with the anchored hash. Without ``anchor``, a log with :attr:`anchors` checks
        against the tenant's newest signed anchor (unless ``use_anchors`` is False), and
        reports anchor files newer than it that are not valid anchors (kind
        ``anchor_invalid``); without either, a tail cut together with its head row goes
        unnoticed.

        ``since`` (an anchor checked before) skips the records below it: the record at its
        seq must still have its hash, and every record after it is checked. ``progress`` is
        called with the count checked so far, every 65,536 records.
        """
        scan = None
        if since is not None:
            anchor = since
        elif anchor is None and use_anchors and self.anchors is not None:
            # Listed before the snapshot is taken: an anchor found was signed from a state
            # committed before it, so one written meanwhile cannot pass for a truncation.
            scan = self.anchors.newest(tenant)
            anchor = scan.anchor
        mark, label, anchor_file = anchor_parts(anchor)
        # From the very bottom, unless told where to start: a row forged below seq 1 must be
        # seen too.
        after = -(2**63) if since is None else since.seq - 1
        with self._snapshot(tenant, after) as (head, rows):
            checker = _Checker(
                tenant,
                self._key,
                start=1 if since is None else since.seq,
                start_prev=GENESIS_HASH if since is None else None,
                limit=head.seq if head is not None else None,
                anchor=mark,
                anchor_label=label,
                progress=progress,
            )
            checker.max_problems = max_problems
            checker.feed(rows)
        report = checker.finish(head=head, head_known=True)
        if anchor_file is not None:
            report = dataclasses.replace(report, anchor_file=anchor_file)
        return report if scan is None else scan.apply(report)

    def anchor(self, tenant: str) -> AnchorOutcome:
        """Sign ``tenant``'s head into :attr:`anchors` if it moved since the newest anchor,
        after verifying the chain from that anchor on (see :func:`anchor_chain`)."""
        return anchor_chain(self, tenant)

    def export_jsonl(self, tenant: str, out: IO[str], *, after_seq: int = 0) -> int:
        """Write the chain after ``after_seq`` to ``out``, one JSON object per line.

        Each line is a record's hashed payload with ``hash`` and ``prev_hash`` added, so
        :func:`verify_jsonl` (``aevos audit verify-file``) can check it without the database.
        Returns the number of records written.
        """
        count = 0
        with self._snapshot(tenant, after_seq) as (_head, rows):
            for seq, *_, payload, prev_hash, digest in rows:
                out.write(_export_line(str(payload), str(prev_hash), str(digest), int(seq)))
                count += 1
        return count


def _timestamp(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidAuditEventError("since/until must be timezone-aware datetimes")
        return value.timestamp()
    return float(value)


def _record(row: Any) -> AuditRecord:
    # The hashed payload is the record; the columns are only its index.
    parsed = _parse(row.payload) or {}
    data = parsed.get("data")
    return AuditRecord(
        tenant=row.tenant,
        seq=int(row.seq),
        at=float(parsed.get("at", row.at)),
        actor=str(parsed.get("actor", row.actor)),
        action=str(parsed.get("action", row.action)),
        subject=parsed.get("subject", row.subject),
        run_id=parsed.get("run_id", row.run_id),
        data=data if isinstance(data, dict) else {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
