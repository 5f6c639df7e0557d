"""Audit records that may be written a moment later, in batches, by a background thread.

For events on a hot path whose state change is already durable elsewhere (an inline run's
row exists before its first step runs): a durable audit commit per event would double the
cost of starting a run. Events are built (and their digests computed) in the flusher
thread, from the zero-argument factories the hot path hands over. A process that dies
loses at most the last ``interval`` seconds of these records, never the runs themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import AevosError
from ..storage.outage import Outage, seconds
from .log import AuditLog
from .record import AuditEvent

log = logging.getLogger("aevos.audit")

EventFactory = Callable[[], AuditEvent]


class AuditBuffer:
    def __init__(self, audit: AuditLog, *, interval: float = 0.2, batch: int = 1000) -> None:
        self._audit = audit
        self._interval = interval
        self._batch = batch
        self._pending: list[EventFactory] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = Outage(log, "audit buffer")

    def add(self, factory: EventFactory) -> None:
        with self._lock:
            self._pending.append(factory)
            full = len(self._pending) >= self._batch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="aevos-audit-buffer", daemon=True
                )
                self._thread.start()
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered now; returns how many records were appended."""
        with self._lock:
            factories, self._pending = self._pending, []
        if not factories:
            return 0
        events = [factory() for factory in factories]
        try:
            self._audit.append_many(events)
        except AevosError as exc:
            # Kept for the next attempt rather than dropped: the log must stay complete.
            with self._lock:
                self._pending[:0] = factories
            self._outage.failed(
                f"[{exc.code}] {exc.message}",
                f"{len(factories)} records kept, retried every {seconds(self._interval)}",
            )
            return 0
        self._outage.ended()
        return len(events)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()
