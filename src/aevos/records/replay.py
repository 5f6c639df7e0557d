"""Replay: a candidate model version re-deciding the kept cases of a window.

A :class:`Replay` is one replay (the durable workflow run that does it has the same id):
which candidate, against which champion, what it was asked (window, limit, rate,
criteria), and what it came to — its figures and whether they meet the criteria.

Statuses: ``running`` until the workflow ends; then ``passed`` (every criterion met),
``failed`` (one was not), ``inconclusive`` (too few cases could be decided to judge:
``passed`` stays None) or ``error`` (the replay itself could not finish, ``reason`` says
why). Anything but ``passed`` is not a passing replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The statuses a replay has, ``running`` first.
STATUSES = ("running", "passed", "failed", "inconclusive", "error")
FINISHED = frozenset(STATUSES[1:])


@dataclass(frozen=True)
class Replay:
    """One replay of ``model@version`` (the candidate) of ``tenant``."""

    replay_id: str
    tenant: str
    model: str
    version: int
    champion: int | None
    status: str
    criteria: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    reason: str | None = None
    since: float | None = None
    limit: int = 1000
    rate: float = 20.0
    requested_by: str = "system"
    started_at: float = 0.0
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "champion": self.champion,
            "status": self.status,
            "criteria": dict(self.criteria),
            "figures": dict(self.figures),
            "passed": self.passed,
            "reason": self.reason,
            "since": self.since,
            "limit": self.limit,
            "rate": self.rate,
            "requested_by": self.requested_by,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def evidence(self) -> dict[str, Any]:
        """What a promotion policy sees of it (``replay.*``): the figures, ``passed``
        (False unless it passed), ``status`` and its id."""
        return {
            **dict(self.figures),
            "passed": self.passed is True,
            "status": self.status,
            "replay_id": self.replay_id,
        }
