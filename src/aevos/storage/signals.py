"""Signals: messages to a run, delivered exactly once to the position that waits for them.

A mixin of :class:`~aevos.storage.store.Store`.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import codec
from ..errors import RunNotFoundError
from .schema import runs, signals, steps


class LeaseLost(Exception):
    """This executor no longer holds the run (cancelled, or taken over); stop executing it."""


class Signals:
    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _fence(self, conn: Connection, run_id: str, owner: str, now: float) -> bool: ...

        def _wake(self, conn: Connection, run_id: str, now: float) -> None: ...

    def send_signal(self, run_id: str, topic: str, payload_json: str) -> None:
        now = time.time()
        with self._tx() as conn:
            status = conn.execute(
                sa.select(runs.c.status).where(runs.c.run_id == run_id)
            ).scalar_one_or_none()
            if status is None:
                raise RunNotFoundError(f"no run with id {run_id!r} to signal")
            conn.execute(
                signals.insert(),
                {"run_id": run_id, "topic": topic, "payload": payload_json, "created_at": now},
            )
            self._wake(conn, run_id, now)

    def consume_signal(
        self, run_id: str, owner: str, seq: int, name: str, topic: str, started_at: float
    ) -> tuple[bool, Any]:
        """Atomically take the oldest signal on ``topic`` and record it as step ``seq``.

        Returns ``(True, payload)`` when one was taken, ``(False, None)`` when none waits;
        raises :class:`LeaseLost` if ``owner`` no longer holds the run.
        """
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(signals.c.id, signals.c.payload)
                .where(signals.c.run_id == run_id, signals.c.topic == topic)
                .order_by(signals.c.id)
                .limit(1)
            ).one_or_none()
            if row is None:
                return False, None
            if not self._fence(conn, run_id, owner, now):
                raise LeaseLost(run_id)
            conn.execute(sa.delete(signals).where(signals.c.id == row.id))
            conn.execute(
                steps.insert(),
                {
                    "run_id": run_id,
                    "seq": seq,
                    "name": name,
                    "status": "SUCCEEDED",
                    "output": row.payload,
                    "attempts": 1,
                    "started_at": started_at,
                    "finished_at": now,
                },
            )
            return True, codec.decode(row.payload)
