"""Dead letters: events that were authenticated but failed validation or mapping, kept with
their body (``aevos_dead_letters``) until they are replayed.

One row per event (tenant, channel, source, event id): a redelivery of the same malformed
message finds the row there and adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from .repository import Repository
from .schema import dead_letters

DEAD = "DEAD"
REPLAYED = "REPLAYED"


@dataclass(frozen=True)
class DeadLetterRow:
    """A dead letter as stored."""

    id: int
    tenant: str
    channel: str
    source: str
    event_id: str
    status: str
    code: str
    reason: str
    payload: bytes
    payload_digest: str
    size: int
    meta: str
    attempts: int
    run_id: str | None
    created_at: float
    updated_at: float


def _row(row: sa.Row[tuple[object, ...]]) -> DeadLetterRow:
    values = dict(row._mapping)
    values["payload"] = bytes(values["payload"])
    return DeadLetterRow(**values)


class DeadLetterRepository(Repository):
    """Dead letters of every tenant, in the unit of work it is bound to."""

    def add(
        self,
        *,
        tenant: str,
        channel: str,
        source: str,
        event_id: str,
        code: str,
        reason: str,
        payload: bytes,
        payload_digest: str,
        meta: str,
        now: float,
    ) -> DeadLetterRow:
        """Keep a failed event; the existing row when this event is already kept (a
        redelivery), with its reason brought up to date if it is still DEAD."""
        values = {
            "tenant": tenant,
            "channel": channel,
            "source": source,
            "event_id": event_id,
            "status": DEAD,
            "code": code[:64],
            "reason": reason,
            "payload": payload,
            "payload_digest": payload_digest,
            "size": len(payload),
            "meta": meta,
            "attempts": 0,
            "run_id": None,
            "created_at": now,
            "updated_at": now,
        }
        stmt = (
            self.uow.store.dialect.insert(dead_letters)
            .on_conflict_do_nothing(index_elements=["tenant", "channel", "source", "event_id"])
            .returning(dead_letters.c.id)
        )
        if self.conn.execute(stmt, values).first() is None:
            cond = sa.and_(
                dead_letters.c.tenant == tenant,
                dead_letters.c.channel == channel,
                dead_letters.c.source == source,
                dead_letters.c.event_id == event_id,
            )
            self.conn.execute(
                sa.update(dead_letters)
                .where(cond, dead_letters.c.status == DEAD)
                .values(code=code[:64], reason=reason, updated_at=now)
            )
            return _row(self.conn.execute(sa.select(dead_letters).where(cond)).one())
        return _row(
            self.conn.execute(
                sa.select(dead_letters).where(
                    dead_letters.c.tenant == tenant,
                    dead_letters.c.channel == channel,
                    dead_letters.c.source == source,
                    dead_letters.c.event_id == event_id,
                )
            ).one()
        )

    def get(self, tenant: str, letter_id: int, *, lock: bool = False) -> DeadLetterRow | None:
        """The tenant's dead letter ``letter_id`` (with ``lock``, its row locked until the
        unit of work ends, so two replays of it serialise)."""
        stmt = sa.select(dead_letters).where(
            dead_letters.c.tenant == tenant, dead_letters.c.id == letter_id
        )
        if lock:
            # SQLite compiles no FOR UPDATE: its write transaction already holds the lock.
            stmt = stmt.with_for_update()
        row = self.conn.execute(stmt).one_or_none()
        return None if row is None else _row(row)

    def find(
        self,
        tenant: str,
        *,
        source: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeadLetterRow]:
        """The tenant's dead letters, newest first."""
        stmt = sa.select(dead_letters).where(dead_letters.c.tenant == tenant)
        if source is not None:
            stmt = stmt.where(dead_letters.c.source == source)
        if statuses is not None:
            stmt = stmt.where(dead_letters.c.status.in_(list(statuses)))
        stmt = stmt.order_by(dead_letters.c.created_at.desc(), dead_letters.c.id.desc())
        return [_row(row) for row in self.conn.execute(stmt.limit(limit).offset(offset))]

    def count(self, tenant: str, status: str = DEAD) -> int:
        """How many of the tenant's dead letters are in ``status``."""
        stmt = sa.select(sa.func.count()).where(
            dead_letters.c.tenant == tenant, dead_letters.c.status == status
        )
        return int(self.conn.execute(stmt).scalar_one())

    def replayed(self, letter_id: int, run_id: str, now: float) -> bool:
        """Mark a DEAD letter REPLAYED with the run it started; False if it was not DEAD."""
        result = self.conn.execute(
            sa.update(dead_letters)
            .where(dead_letters.c.id == letter_id, dead_letters.c.status == DEAD)
            .values(
                status=REPLAYED,
                run_id=run_id,
                attempts=dead_letters.c.attempts + 1,
                updated_at=now,
            )
        )
        return bool(result.rowcount)

    def failed_again(self, letter_id: int, code: str, reason: str, now: float) -> None:
        """A replay failed: the letter stays DEAD with the new reason."""
        self.conn.execute(
            sa.update(dead_letters)
            .where(dead_letters.c.id == letter_id, dead_letters.c.status == DEAD)
            .values(
                code=code[:64],
                reason=reason,
                attempts=dead_letters.c.attempts + 1,
                updated_at=now,
            )
        )
