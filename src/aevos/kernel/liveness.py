"""This process's proof of life, and the search for the runs of owners that died.

A process holds its liveness lock (see :mod:`aevos.storage.liveness`) from before it first
executes a run until it closes. Every worker looks, every :data:`SWEEP_INTERVAL` seconds,
for registered owners whose lock is free, and hands their running runs back to the queues:
another worker resumes the runs of one killed with SIGKILL within about a second instead
of a lease later, with no coordinator. Leases stay the fallback for a process that is alive
but stalled, and for whatever this mechanism cannot observe.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from ..errors import AevosError

if TYPE_CHECKING:
    from ..storage import Store
    from ..storage.liveness import OwnerLock

#: How often a worker looks for dead owners (one cheap query, a lock probe per owner).
SWEEP_INTERVAL = 0.5
#: How long after failing to take its lock (the database unreachable) a process tries again;
#: meanwhile its runs are recovered by lease, as without this mechanism.
RETRY_INTERVAL = 2.0

log = logging.getLogger("aevos.liveness")


class Holder(Protocol):
    """Whose liveness this is (the kernel's runtime)."""

    owner: str

    @property
    def store(self) -> Store: ...


class Liveness:
    """Holds this process's liveness lock; finds owners that died and frees their runs."""

    def __init__(self, runtime: Holder) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._held: OwnerLock | None = None
        self._unobservable = False
        self._closed = False
        self._retry_at = 0.0
        self._next_sweep = 0.0

    @property
    def held(self) -> bool:
        """Whether this process holds its lock (others would see its death at once)."""
        return self._held is not None

    def ensure(self) -> None:
        """Hold this process's lock from now on: called before it executes runs. Cheap once
        held; a failure is logged and tried again later, never raised."""
        if self._held is not None or self._unobservable or self._closed:
            return
        with self._lock:
            now = time.monotonic()
            if self._held is not None or self._unobservable or self._closed:
                return
            if now < self._retry_at:
                return
            runtime = self._runtime
            try:
                held = runtime.store.hold_owner(runtime.owner)
            except AevosError as exc:
                self._retry_at = now + RETRY_INTERVAL
                log.warning(
                    "liveness lock not taken (%s); this process's runs would be recovered "
                    "by lease if it died; trying again in %.0f s",
                    exc.message,
                    RETRY_INTERVAL,
                )
                return
            except OSError as exc:
                # The lock file cannot be made (a read-only directory): that will not pass.
                self._unobservable = True
                log.warning(
                    "liveness lock file not usable (%s: %s); this process's runs would be "
                    "recovered by lease if it died",
                    type(exc).__name__,
                    exc.strerror or exc,
                )
                return
            if held is None:
                self._unobservable = True
                log.debug("liveness cannot be observed on this database; leases only")
            self._held = held

    def sweep(self, *, force: bool = False) -> int:
        """Hand back the running runs of every owner found dead since the last look (at
        most every :data:`SWEEP_INTERVAL` seconds unless ``force``); returns how many.
        Storage errors are raised, for the caller's outage handling."""
        now = time.monotonic()
        if not force and now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_INTERVAL
        self.ensure()
        runtime = self._runtime
        taken = runtime.store.take_back_dead(runtime.owner)
        for owner, count in taken.items():
            if not count:
                log.info("owner %s is gone (its liveness lock is free); it held no run", owner)
                continue
            log.warning(
                "owner %s is gone (its liveness lock is free): %d running run(s) handed "
                "back to their queues",
                owner,
                count,
            )
        return sum(taken.values())

    def close(self, *, holding_runs: bool) -> None:
        """Release the lock. An owner still holding runs stays registered, so the next
        worker that looks finds it gone and hands them back at once."""
        with self._lock:
            held, self._held = self._held, None
            self._closed = True
        if held is not None:
            held.close(forget=not holding_runs)
