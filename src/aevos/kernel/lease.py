"""The leases this process holds: one heartbeat thread keeps every executing run's alive.

A run's lease lives in its database row (see :mod:`aevos.storage.claims`). While this
process executes a run, the heartbeat extends it every ``lease_seconds / 3``; a run the
heartbeat finds cancelled or taken over is stopped before its next step.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol

from ..errors import AevosError
from ..storage.outage import Outage, seconds
from .liveness import Liveness

if TYPE_CHECKING:
    from ..storage import Store


class Holder(Protocol):
    """Whose leases these are (the kernel's runtime)."""

    owner: str
    lease_seconds: float

    @property
    def store(self) -> Store: ...


log = logging.getLogger("aevos")


class Leases:
    """Keeps this process's runs alive: one heartbeat extends every lease it holds."""

    def __init__(self, runtime: Holder) -> None:
        self._runtime = runtime
        self._runs: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = Outage(log, "heartbeat")
        # The lock whose release tells other workers at once that this process died.
        self.liveness = Liveness(runtime)

    def add(self, run_id: str, cancel: threading.Event) -> bool:
        """Hold ``run_id`` for the thread about to execute it; False if another thread of
        this process executes it already. The fence cannot tell two threads apart (they
        share the owner), so this is what keeps a run executed once per process: a lease
        that lapsed under load and was re-claimed by this same process, or two threads
        starting the same idempotency key, find the run held and wait for it instead."""
        self.liveness.ensure()
        with self._lock:
            if run_id in self._runs:
                return False
            self._runs[run_id] = cancel
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="aevos-heartbeat", daemon=True
                )
                self._thread.start()
        return True

    def holds(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def held(self) -> frozenset[str]:
        """The runs that threads of this process are executing now."""
        with self._lock:
            return frozenset(self._runs)

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def cancel_local(self, run_id: str) -> None:
        with self._lock:
            event = self._runs.get(run_id)
        if event is not None:
            event.set()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.liveness.close(holding_runs=bool(self.held()))

    def _loop(self) -> None:
        runtime = self._runtime
        interval = max(0.05, runtime.lease_seconds / 3)
        while not self._stop.wait(interval):
            with self._lock:
                run_ids = list(self._runs)
            if not run_ids:
                continue
            try:
                lost = runtime.store.heartbeat(runtime.owner, run_ids, runtime.lease_seconds)
            except AevosError as exc:
                self._outage.failed(
                    f"[{exc.code}] {exc.message}",
                    f"trying again every {seconds(interval)}; leases lapse if this lasts "
                    f"{seconds(runtime.lease_seconds)}",
                )
                continue
            self._outage.ended()
            for run_id in lost:
                # Cancelled or taken over: stop before the next step instead of running it
                # only to have its commit refused.
                self.cancel_local(run_id)
