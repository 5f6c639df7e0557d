"""The leases this process holds: one heartbeat thread keeps every executing run's alive.

A run's lease lives in its database row (see :mod:`aevos.storage.claims`). While this
process executes a run, the heartbeat extends it every ``lease_seconds / 3``; a run the
heartbeat finds cancelled or taken over is stopped before its next step.
"""

from __future__ import annotations

import logging
import threading
import time
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
        # When each held run's lease runs out, as last set by its claim or a heartbeat.
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = Outage(log, "heartbeat")
        # The lock whose release tells other workers at once that this process died.
        self.liveness = Liveness(runtime)

    def add(self, run_id: str, cancel: threading.Event, lease_until: float | None = None) -> bool:
        """Hold ``run_id`` for the thread about to execute it; False if another thread of
        this process executes it already. The fence cannot tell two threads apart (they
        share the owner), so this is what keeps a run executed once per process: a lease
        that lapsed under load and was re-claimed by this same process, or two threads
        starting the same idempotency key, find the run held and wait for it instead.
        ``lease_until`` is when the lease the run was taken with runs out."""
        self.liveness.ensure()
        if lease_until is None:
            lease_until = time.time() + self._runtime.lease_seconds
        with self._lock:
            if run_id in self._runs:
                return False
            self._runs[run_id] = cancel
            self._until[run_id] = lease_until
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
            self._until.pop(run_id, None)

    def overdue(self, run_id: str) -> float | None:
        """How long ago the lease of held ``run_id`` ran out, as far as this process knows;
        None if it has not (or the run is not held)."""
        with self._lock:
            until = self._until.get(run_id)
        late = None if until is None else time.time() - until
        return late if late is not None and late > 0 else None

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
                due = {run_id: self._until[run_id] for run_id in self._runs}
            if not due:
                continue
            run_ids = list(due)
            try:
                beat = runtime.store.heartbeat(runtime.owner, run_ids, runtime.lease_seconds)
            except AevosError as exc:
                self._outage.failed(
                    f"[{exc.code}] {exc.message}",
                    f"trying again every {seconds(interval)}; leases lapse if this lasts "
                    f"{seconds(runtime.lease_seconds)}",
                )
                continue
            done = time.time()
            self._outage.ended()
            lost = set(beat.lost)
            with self._lock:
                for run_id in run_ids:
                    if run_id in self._until and run_id not in lost:
                        self._until[run_id] = beat.until
            lapsed = sorted(run_id for run_id, until in due.items() if until < done)
            if lapsed:
                # A stalled heartbeat (a loaded host, a database slow to grant it the lock):
                # another worker may have taken these runs over, and repeats the step each
                # one was in. Named, so that a repeated step can be told from a lost one.
                log.warning(
                    "heartbeat late: the leases of %d run(s) ran out %s before this heartbeat "
                    "(lease %s); other workers may take them over: %s",
                    len(lapsed),
                    seconds(done - min(due[run_id] for run_id in lapsed)),
                    seconds(runtime.lease_seconds),
                    " ".join(lapsed),
                )
            for run_id in beat.lost:
                # Cancelled or taken over: stop before the next step instead of running it
                # only to have its commit refused.
                self.cancel_local(run_id)
