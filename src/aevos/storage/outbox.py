"""The outbox: messages a run published, kept until the relay has sent them.

A message is inserted in the unit of work that records the run position (or step) that
published it, so it exists exactly when that position committed. The relay takes due
messages with a visibility lease (``due_at`` moves past the lease), so a relay that dies
mid-send leaves them to be taken again once the lease lapses; on PostgreSQL concurrent
relays skip each other's rows (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from .repository import Repository
from .schema import outbox

PENDING = "PENDING"
SENT = "SENT"
DEAD = "DEAD"


@dataclass(frozen=True)
class NewMessage:
    """A message to write to the outbox."""

    message_id: str
    tenant: str
    subject: str
    payload_json: str
    run_id: str | None
    created_at: float


@dataclass(frozen=True)
class OutboxRow:
    """A message as stored."""

    id: int
    message_id: str
    tenant: str
    subject: str
    payload: str
    run_id: str | None
    status: str
    attempts: int
    due_at: float
    destination: str | None
    last_error: str | None
    created_at: float
    sent_at: float | None


class OutboxRepository(Repository):
    """Messages of every tenant, in the unit of work it is bound to."""

    def add(self, messages: Sequence[NewMessage]) -> None:
        """Insert ``messages`` (PENDING, due at once)."""
        if not messages:
            return
        self.conn.execute(
            outbox.insert(),
            [
                {
                    "message_id": m.message_id,
                    "tenant": m.tenant,
                    "subject": m.subject,
                    "payload": m.payload_json,
                    "run_id": m.run_id,
                    "status": PENDING,
                    "attempts": 0,
                    "due_at": m.created_at,
                    "created_at": m.created_at,
                }
                for m in messages
            ],
        )

    def claim(self, now: float, *, limit: int, lease: float) -> list[OutboxRow]:
        """Take up to ``limit`` due messages, oldest first, hidden from other relays for
        ``lease`` seconds; each take counts as an attempt."""
        stmt = (
            sa.select(outbox.c.id)
            .where(outbox.c.status == PENDING, outbox.c.due_at <= now)
            .order_by(outbox.c.due_at, outbox.c.id)
            .limit(limit)
        )
        if self.uow.store.dialect.skip_locked:
            stmt = stmt.with_for_update(skip_locked=True)
        ids = [int(i) for i in self.conn.execute(stmt).scalars()]
        if not ids:
            return []
        self.conn.execute(
            sa.update(outbox)
            .where(outbox.c.id.in_(ids), outbox.c.status == PENDING)
            .values(due_at=now + lease, attempts=outbox.c.attempts + 1)
        )
        rows = self.conn.execute(
            sa.select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
        )
        return [OutboxRow(**row._mapping) for row in rows]

    def mark_sent(self, id: int, *, destination: str, now: float) -> None:
        self.conn.execute(
            sa.update(outbox)
            .where(outbox.c.id == id, outbox.c.status == PENDING)
            .values(status=SENT, destination=destination, sent_at=now, last_error=None)
        )

    def retry_later(self, id: int, *, destination: str | None, error: str, due_at: float) -> None:
        """Record a failed attempt; the message is taken again at ``due_at``."""
        self.conn.execute(
            sa.update(outbox)
            .where(outbox.c.id == id, outbox.c.status == PENDING)
            .values(due_at=due_at, destination=destination, last_error=error)
        )

    def mark_dead(self, id: int, *, destination: str | None, reason: str) -> None:
        """Give up on a message that can never be delivered, keeping why."""
        self.conn.execute(
            sa.update(outbox)
            .where(outbox.c.id == id, outbox.c.status == PENDING)
            .values(status=DEAD, destination=destination, last_error=reason)
        )

    def requeue(self, tenant: str, message_ids: Iterable[str], now: float) -> int:
        """Make DEAD messages PENDING again (after the cause was fixed); how many were."""
        result = self.conn.execute(
            sa.update(outbox)
            .where(
                outbox.c.tenant == tenant,
                outbox.c.message_id.in_(list(message_ids)),
                outbox.c.status == DEAD,
            )
            .values(status=PENDING, attempts=0, due_at=now)
        )
        return int(result.rowcount or 0)

    def find(
        self,
        tenant: str | None = None,
        *,
        status: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[OutboxRow]:
        """Messages, oldest first (``tenant`` None: every tenant's, for operators)."""
        stmt = sa.select(outbox)
        if tenant is not None:
            stmt = stmt.where(outbox.c.tenant == tenant)
        if status is not None:
            stmt = stmt.where(outbox.c.status == status)
        if run_id is not None:
            stmt = stmt.where(outbox.c.run_id == run_id)
        rows = self.conn.execute(stmt.order_by(outbox.c.id).limit(limit))
        return [OutboxRow(**row._mapping) for row in rows]

    def oldest_pending(self, tenant: str | None = None) -> float | None:
        """When the oldest unsent message (of ``tenant``, else of all) was written (the
        relay's lag), or None."""
        query = sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.status == PENDING)
        if tenant is not None:
            query = query.where(outbox.c.tenant == tenant)
        value = self.conn.execute(query).scalar_one_or_none()
        return None if value is None else float(value)
