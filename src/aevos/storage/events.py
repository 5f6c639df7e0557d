"""Received events: one ``aevos_events`` row per event (webhook delivery, NATS message,
HTTP signal), accepted or not.

A delivery is recorded with its audit record in one unit of work (:mod:`aevos.webhook`);
the body itself is never stored, only its digest and size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .repository import Repository
from .schema import events, runs, signals


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
    channel: str = "webhook"


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
        channel: str = "webhook",
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
            "channel": channel,
        }
        new_id = self.conn.execute(events.insert().returning(events.c.id), values).scalar_one()
        return EventRow(id=int(new_id), **values)

    def find(
        self,
        tenant: str,
        *,
        source: str | None = None,
        statuses: Iterable[str] | None = None,
        channel: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRow]:
        """The tenant's deliveries, newest first."""
        stmt = sa.select(events).where(events.c.tenant == tenant)
        if channel is not None:
            stmt = stmt.where(events.c.channel == channel)
        if source is not None:
            stmt = stmt.where(events.c.source == source)
        if statuses is not None:
            stmt = stmt.where(events.c.status.in_(list(statuses)))
        stmt = stmt.order_by(events.c.received_at.desc(), events.c.id.desc())
        rows = self.conn.execute(stmt.limit(limit).offset(offset))
        return [EventRow(**row._mapping) for row in rows]

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """Record many events (the keyword arguments of :meth:`insert`) in one statement."""
        if rows:
            self.conn.execute(events.insert(), rows)

    def seen(self, tenant: str, channel: str, source: str, event_id: str) -> EventRow | None:
        """The first record of this event that did something (ACCEPTED or SIGNALLED)."""
        row = self.conn.execute(
            sa.select(events)
            .where(
                events.c.tenant == tenant,
                events.c.channel == channel,
                events.c.source == source,
                events.c.event_id == event_id,
                events.c.status.in_(["ACCEPTED", "SIGNALLED"]),
            )
            .order_by(events.c.id)
            .limit(1)
        ).one_or_none()
        return None if row is None else EventRow(**row._mapping)

    def run_of(
        self, tenant: str, key: str, *, lock: bool = False, by_key: bool = True
    ) -> tuple[str, str] | None:
        """``(run_id, status)`` of the tenant's run whose idempotency key (else run id) is
        ``key`` (only its run id without ``by_key``); with ``lock`` its row stays locked
        until the unit of work ends, so two signals to one run serialise."""
        columns = (runs.c.idempotency_key, runs.c.run_id) if by_key else (runs.c.run_id,)
        for column in columns:
            stmt = sa.select(runs.c.run_id, runs.c.status).where(
                runs.c.tenant == tenant, column == key
            )
            if lock:
                stmt = stmt.with_for_update()
            row = self.conn.execute(stmt).one_or_none()
            if row is not None:
                return str(row.run_id), str(row.status)
        return None

    def signal(self, run_id: str, topic: str, payload_json: str, now: float) -> None:
        """Queue a signal for the run and wake it, in this unit of work (so the event's
        record and its signal commit together)."""
        self.conn.execute(
            signals.insert(),
            {"run_id": run_id, "topic": topic, "payload": payload_json, "created_at": now},
        )
        self.uow.store._wake(self.conn, run_id, now)
