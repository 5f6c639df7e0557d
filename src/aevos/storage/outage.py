"""Logging a storage outage as an operator needs it: one warning when it starts (naming its
cause and what happens next) and one when it ends; a line at info level when its cause
changes, the back-offs in between at debug level. A traceback is logged once per distinct error, not per retry.
"""

from __future__ import annotations

import logging
import threading
import time


class Outage:
    """The state of one thing that waits for storage (the claim loop, the heartbeat)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self._since: float | None = None
        self._cause: str | None = None

    @property
    def ongoing(self) -> bool:
        with self._lock:
            return self._since is not None

    def failed(self, cause: str, next_step: str) -> None:
        """Storage failed (again); ``next_step`` says what happens now ("retrying in 2 s")."""
        with self._lock:
            started = self._since is None
            changed = not started and cause != self._cause
            if started:
                self._since = time.monotonic()
            self._cause = cause
        if started:
            self._log.warning("%s: storage unavailable: %s; %s", self._what, cause, next_step)
        elif changed:
            # Informative (shutting down, then refused, then starting up) but the same outage:
            # below the warnings an operator is alerted by.
            self._log.info(
                "%s: storage still unavailable, now: %s; %s", self._what, cause, next_step
            )
        else:
            self._log.debug("%s: storage still unavailable; %s", self._what, next_step)

    def ended(self) -> float | None:
        """Storage answers again: the outage's length in seconds, logged; None if there was
        no outage."""
        with self._lock:
            since, self._since, self._cause = self._since, None, None
        if since is None:
            return None
        seconds = time.monotonic() - since
        self._log.warning("%s: storage available again after %.1f s", self._what, seconds)
        return seconds


class Tracebacks:
    """Logs an unexpected error with its traceback the first time, and without it after."""

    def __init__(self, log: logging.Logger, limit: int = 256) -> None:
        self._log = log
        self._seen: set[tuple[type[BaseException], str]] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def error(self, exc: BaseException, message: str, *args: object) -> None:
        key = (type(exc), str(exc))
        with self._lock:
            first = key not in self._seen
            if first and len(self._seen) < self._limit:
                self._seen.add(key)
        if first:
            self._log.error(message, *args, exc_info=exc)
        else:
            self._log.error(
                message + " (%s: %s; traceback logged before)", *args, type(exc).__name__, exc
            )


def seconds(delay: float) -> str:
    """``delay`` as the log lines say it: "0.5 s", "2 s"."""
    if delay >= 1.5:
        return f"{delay:.0f} s"
    return f"{delay:.1f} s" if delay >= 0.1 else f"{delay:.2f} s"
