"""Rollouts: a candidate version exposed step by step (shadow, then canary shares).

A :class:`RolloutRecord` is the state the controller keeps in the database: the candidate
and the champion it is compared with, the plan of steps (0 = shadow, 1..100 = the share of
traffic in percent), the step reached, its state and deadline, the last analysis verdict,
and a ``revision`` that every transition checks and bumps, so two actors (two operators, two
workers) never both move one rollout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: States in which a rollout is active: at most one per (tenant, model).
ACTIVE_STATES = frozenset({"replaying", "progressing", "paused"})
#: Every state a rollout can be in.
STATES = ACTIVE_STATES | {"promoted", "rolled_back", "aborted", "failed"}


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout as stored. ``deadline`` is None while paused (nothing is due)."""

    rollout_id: str
    tenant: str
    model: str
    version: int
    champion: int | None
    steps: tuple[int, ...]
    step: int
    state: str
    criteria: Mapping[str, Any]
    step_seconds: float
    step_started_at: float
    deadline: float | None
    replay: bool
    policy: str
    created_by: str
    created_at: float
    updated_at: float
    reason: str = ""
    last_verdict: Mapping[str, Any] | None = None
    revision: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def share(self) -> int:
        """The candidate's share of traffic at the current step (0: shadow)."""
        return self.steps[self.step]


@dataclass(frozen=True)
class RolloutRouting:
    """What the gateway needs of a model's active rollout: the candidate version and its
    share of traffic (0: shadowed only)."""

    version: int
    share: int
    state: str
    rollout_id: str
