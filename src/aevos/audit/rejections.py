"""How many refusals of one kind are recorded one by one (a flood of bad requests).

Entry points anyone can reach (a webhook, any API route before its token is checked) record
every refusal with its reason. A flood of bad requests would then write to the database and
the tenant's audit log as fast as an attacker can send. A :class:`RejectionBudget` lets the
first ``limit`` refusals of a key (a webhook source, a tenant's failed sign-ins) in each
window be recorded one by one; past that, refusals are still refused with their own error,
but only counted, by reason, and the count is recorded as one summary when the window ends.

Only refusals that come before anyone is authenticated are budgeted (no token, an unknown
token, a bad signature, an undeclared source): anyone can produce those. A refusal that
names something real (a revoked token, a signed delivery that does not map) is always
recorded one by one.

Nothing is silent: every refusal is either its own record or counted in a summary. The
counts wait in memory until their window ends; summaries are written by the next refusal,
by workers' sweeps, when the server shuts down and by ``Aevos.close``, and a summary whose
write fails is kept for the next try. A process killed before a summary is written loses
its counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

#: Refusals per key recorded one by one in each window, unless the caller says otherwise.
DEFAULT_LIMIT = 60
WINDOW_SECONDS = 60.0


@dataclass
class _Window:
    start: float
    recorded: int = 0
    counted: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Suppressed:
    """Refusals of ``key`` counted, not recorded one by one, in ``[start, end)``."""

    key: Hashable
    start: float
    end: float
    reasons: Mapping[str, int]  # the refusals' error codes, and how many of each

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def describe(self) -> str:
        by_reason = ", ".join(f"{code} {n}" for code, n in sorted(self.reasons.items()))
        return (
            f"{self.count} more refusals in {self.end - self.start:.0f} s were counted, not "
            f"recorded one by one ({by_reason})"
        )


class RejectionBudget:
    """Per key, ``limit`` refusals recorded per window; the rest counted (thread-safe)."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._windows: dict[Hashable, _Window] = {}
        # Ended windows with counts that a new window replaced before anyone took them.
        self._ended: list[tuple[Hashable, _Window]] = []
        self._lock = threading.Lock()

    def admit(self, key: Hashable, reason: str, now: float, limit: int = DEFAULT_LIMIT) -> bool:
        """Whether to record this refusal one by one (else it has been counted)."""
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window.start + self.window:
                if window is not None and window.counted:
                    self._ended.append((key, window))  # still to be taken by due()
                window = self._windows[key] = _Window(now)
            if window.recorded < limit:
                window.recorded += 1
                return True
            window.counted[reason] += 1
            return False

    def put_back(self, summaries: list[Suppressed]) -> None:
        """Keep summaries whose recording failed, for the next :meth:`due` to return."""
        with self._lock:
            for summary in summaries:
                window = _Window(summary.start, counted=Counter(summary.reasons))
                self._ended.append((summary.key, window))

    def due(self, now: float, key: Hashable | None = None) -> list[Suppressed]:
        """Take the windows that ended by ``now`` (of ``key``, or all) and return the ones
        holding counted refusals, to be recorded. ``now=math.inf`` takes every window."""
        with self._lock:
            ended = [(k, w) for k, w in self._ended if key is None or k == key]
            self._ended = [(k, w) for k, w in self._ended if not (key is None or k == key)]
            keys = list(self._windows) if key is None else [key]
            for k in keys:
                window = self._windows.get(k)
                if window is not None and now >= window.start + self.window:
                    ended.append((k, self._windows.pop(k)))
        return [
            Suppressed(k, w.start, min(now, w.start + self.window), dict(w.counted))
            for k, w in ended
            if w.counted
        ]
