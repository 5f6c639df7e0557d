"""Circuit breakers: one per model version, so a failing version stops being called.

The defaults are LiteLLM's router defaults: a version opens after 3 consecutive failures, or
when at least half of at least 5 calls within a minute failed; it stays open (every call is
rejected at once, and the gateway's fallbacks answer instead) for a 5 second cooldown, then
lets exactly one trial call through (half-open): success closes it, failure opens it again.

Breaker state is kept in-process, deliberately: it protects this process from waiting on a
failing model, it must cost nothing on the hot path, and every process observes a failing
model for itself within a few calls. Budgets, which must hold across processes, live in the
database instead (:mod:`aevos.models.budget`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from ..errors import DefinitionError

_BUCKETS = 60  # the failure-rate window is counted in this many time slices


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """When a version's breaker opens, and for how long.

    ``consecutive_failures``: open after this many failures in a row. ``failure_rate`` and
    ``min_calls``: open when at least this share of at least ``min_calls`` calls within the
    last ``window`` seconds failed. ``cooldown``: seconds open before one trial call.
    """

    consecutive_failures: int = 3
    failure_rate: float = 0.5
    min_calls: int = 5
    window: float = 60.0
    cooldown: float = 5.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.min_calls < 1:
            raise DefinitionError("breaker consecutive_failures and min_calls must be >= 1")
        if not 0.0 < self.failure_rate <= 1.0:
            raise DefinitionError("breaker failure_rate must be in (0, 1]")
        if self.window <= 0 or self.cooldown < 0:
            raise DefinitionError("breaker window must be > 0 and cooldown >= 0")


class CircuitBreaker:
    """The breaker of one model version. Thread-safe; every method is O(1) but ``failure``,
    which sums the window's slices."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._trial = False  # half-open: the one trial call is in flight
        self._consecutive = 0
        self._slice = config.window / _BUCKETS
        # A ring of per-slice counts; a slot is reused once its slice left the window.
        self._epoch = [-1] * _BUCKETS
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self.opened = 0  # times it opened (metrics, tests)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state is BreakerState.OPEN and time.monotonic() >= self._open_until:
                return BreakerState.HALF_OPEN
            return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._open_until - time.monotonic())

    def allow(self) -> bool:
        """May a call go to this version now? A True from a half-open breaker makes the
        caller the trial: it must report ``success``, ``failure`` or ``cancel``."""
        with self._lock:
            state = self._state
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.OPEN:
                if time.monotonic() < self._open_until:
                    return False
                self._state = BreakerState.HALF_OPEN
                self._trial = False
            if self._trial:
                return False  # one trial at a time
            self._trial = True
            return True

    def cancel(self) -> None:
        """The allowed call was not made (e.g. its budget refused it)."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._trial = False

    def success(self) -> None:
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._close()
                return
            self._consecutive = 0
            self._count(failed=False)

    def failure(self) -> None:
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._open()
                return
            if self._state is BreakerState.OPEN:
                return  # a call admitted before it opened, finishing late
            self._consecutive += 1
            self._count(failed=True)
            config = self.config
            if self._consecutive >= config.consecutive_failures:
                self._open()
                return
            calls, failures = self._window_totals()
            if calls >= config.min_calls and failures >= config.failure_rate * calls:
                self._open()

    # -- internals (lock held) ----------------------------------------------------------------

    def _count(self, *, failed: bool) -> None:
        epoch = int(time.monotonic() / self._slice)
        slot = epoch % _BUCKETS
        if self._epoch[slot] != epoch:
            self._epoch[slot] = epoch
            self._calls[slot] = 0
            self._failures[slot] = 0
        self._calls[slot] += 1
        if failed:
            self._failures[slot] += 1

    def _window_totals(self) -> tuple[int, int]:
        oldest = int(time.monotonic() / self._slice) - _BUCKETS + 1
        calls = failures = 0
        for slot in range(_BUCKETS):
            if self._epoch[slot] >= oldest:
                calls += self._calls[slot]
                failures += self._failures[slot]
        return calls, failures

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._open_until = time.monotonic() + self.config.cooldown
        self._trial = False
        self.opened += 1

    def _close(self) -> None:
        # A fresh start: failures from before the outage must not reopen it at once.
        self._state = BreakerState.CLOSED
        self._trial = False
        self._consecutive = 0
        self._epoch = [-1] * _BUCKETS


class Breakers:
    """The breakers of one gateway, created on first use per (tenant, model, version)."""

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._breakers: dict[tuple[str, str, int], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, model: str, version: int) -> CircuitBreaker:
        key = (tenant, model, version)
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(key, CircuitBreaker(self.config))
        return breaker

    def states(self) -> dict[str, BreakerState]:
        """``tenant/name@version`` -> state, for every version called so far."""
        with self._lock:
            items = list(self._breakers.items())
        return {f"{t}/{m}@{v}": breaker.state for (t, m, v), breaker in items}
