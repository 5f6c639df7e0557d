"""The audit log: appends, queries, export and verification of per-tenant chains."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from ..errors import AuditKeyError, InvalidAuditEventError
from ..storage.audit import AuditRow, read_chain
from .anchor import AnchorOutcome, AuditAnchors, SignedAnchor, anchor_chain, anchor_parts
from .record import (
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
from .verify import _Checker, _export_line, _parse

if TYPE_CHECKING:
    from ..storage import Store, UnitOfWork


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

    @classmethod
    def from_env(cls, store: Store, environ: Mapping[str, str] | None = None) -> AuditLog:
        """A log keyed by ``AEVOS_AUDIT_KEY`` when it is set (see :func:`key_from_env`),
        anchored in ``AEVOS_AUDIT_ANCHOR_DIR`` when that is set (see :class:`AuditAnchors`)."""
        return cls(store, key_from_env(environ), anchors=AuditAnchors.from_env(environ))

    @property
    def keyed(self) -> bool:
        return self._key is not None

    # -- appending ---------------------------------------------------------------------------

    def append(self, event: AuditEvent, *, uow: UnitOfWork | None = None) -> AuditRecord:
        """Record ``event`` at the end of its tenant's chain.

        With ``uow``, inside the caller's unit of work: the record commits or rolls back with
        the caller's state change. The tenant's head row stays locked until then, so keep
        that unit of work short (and READ COMMITTED, PostgreSQL's default).
        """
        return self.append_many([event], uow=uow)[0]

    def append_many(
        self, events: Sequence[AuditEvent], *, uow: UnitOfWork | None = None
    ) -> list[AuditRecord]:
        """Record several events in one unit of work, in order; returns their records."""
        if not events:
            return []
        if uow is not None:
            return self._append(uow, events)
        with self.store.transaction() as own:
            return self._append(own, events)

    def _append(self, uow: UnitOfWork, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        by_tenant: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_tenant.setdefault(event.tenant, []).append(index)
        records: list[AuditRecord | None] = [None] * len(events)
        rows: list[dict[str, Any]] = []
        now = time.time()
        chains = uow.audit
        # Heads are locked in one order, so two batches spanning tenants cannot deadlock.
        for tenant in sorted(by_tenant):
            seq, prev_hash, last_at = chains.lock_head(tenant)
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
            chains.move_head(tenant, seq, prev_hash, at)
        chains.insert(rows)
        return [record for record in records if record is not None]

    # -- reading -----------------------------------------------------------------------------

    def head(self, tenant: str) -> AuditHead | None:
        """The chain's end as its head row records it; None for a tenant with no records."""
        with self.store.reading() as uow:
            head = uow.audit.head(tenant)
        return None if head is None else AuditHead(head.seq, head.hash)

    def heads(self) -> dict[str, AuditHead]:
        """Every chain's end as its head row records it, by tenant."""
        with self.store.reading() as uow:
            heads = uow.audit.heads()
        return {tenant: AuditHead(head.seq, head.hash) for tenant, head in heads.items()}

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
        with self.store.reading() as uow:
            rows = uow.audit.query(
                tenant,
                run_id=run_id,
                action=action,
                actor=actor,
                since=None if since is None else _timestamp(since),
                until=None if until is None else _timestamp(until),
                after_seq=after_seq,
                limit=limit,
            )
        return [_record(row) for row in rows]

    @contextmanager
    def _snapshot(
        self, tenant: str, after_seq: int
    ) -> Iterator[tuple[AuditHead | None, Iterable[Sequence[Any]]]]:
        """The head and a stream of the chain's rows, both from one read snapshot."""
        with read_chain(self.store, tenant, after_seq) as (head, rows):
            yield (None if head is None else AuditHead(head.seq, head.hash)), rows

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


def _record(row: AuditRow) -> AuditRecord:
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
