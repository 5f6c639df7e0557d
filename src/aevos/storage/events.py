"""Received events: one ``aevos_events`` row per webhook delivery, accepted or not.

A delivery is recorded with its audit record in one unit of work (:mod:`aevos.webhook`);
the body itself is never stored, only its digest and size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .repository import Repository
from .schema import events


@dataclass(frozen=True)
class EventRow:
    """A delivery as stored."""

    id: int
    tenant: str
    source: str
    event_id: str | None
    status: str
    reason: str | None
    run_id: str | None
    payload_digest: str | None
    size: int
    received_at: float


class EventRepository(Repository):
    """Deliveries of every tenant, in the unit of work it is bound to."""

    def insert(
        self,
        *,
        tenant: str,
        source: str,
        event_id: str | None,
        status: str,
        reason: str | None,
        run_id: str | None,
        payload_digest: str | None,
        size: int,
        received_at: float,
    ) -> EventRow:
        """Record a delivery; returns it with its id."""
        values: dict[str, Any] = {
            "tenant": tenant,
            "source": source,
            "event_id": event_id,
            "status": status,
            "reason": reason,
            "run_id": run_id,
            "payload_digest": payload_digest,
            "size": size,
            "received_at": received_at,
        }
        new_id = self.conn.execute(events.insert().returning(events.c.id), values).scalar_one()
        return EventRow(id=int(new_id), **values)

    def find(
        self,
        tenant: str,
        *,
        source: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRow]:
        """The tenant's deliveries, newest first."""
        stmt = sa.select(events).where(events.c.tenant == tenant)
        if source is not None:
            stmt = stmt.where(events.c.source == source)
        if statuses is not None:
            stmt = stmt.where(events.c.status.in_(list(statuses)))
        stmt = stmt.order_by(events.c.received_at.desc(), events.c.id.desc())
        rows = self.conn.execute(stmt.limit(limit).offset(offset))
        return [EventRow(**row._mapping) for row in rows]
