"""What a rollout is, as the service hands it out: :class:`Rollout` and :class:`Transition`,
and the checks a rollout's definition must pass (each refusal names its field)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import AevosError, RolloutInputError
from ..records.rollout import ACTIVE_STATES, RolloutRecord
from .analysis import Criteria

DEFAULT_STEPS = (0, 5, 25, 50, 100)
MAX_STEPS = 20
#: The longest a step may wait for its evidence: a week.
MAX_STEP_MINUTES = 7 * 24 * 60.0


def step_name(share: int) -> str:
    return "shadow" if share == 0 else f"canary {share}%"


@dataclass(frozen=True)
class Rollout:
    """A candidate version exposed step by step (see :mod:`aevos.rollouts`)."""

    rollout_id: str
    tenant: str
    model: str
    version: int
    champion: int | None
    steps: tuple[int, ...]
    step: int
    state: str
    criteria: Criteria
    step_started_at: float
    deadline: float | None  # None while paused: nothing is due until someone decides
    created_by: str
    created_at: float
    updated_at: float
    reason: str
    last_verdict: dict[str, Any] | None
    replay: bool
    policy: str
    step_minutes: float
    revision: int

    @classmethod
    def of(cls, record: RolloutRecord) -> Rollout:
        return cls(
            rollout_id=record.rollout_id,
            tenant=record.tenant,
            model=record.model,
            version=record.version,
            champion=record.champion,
            steps=record.steps,
            step=record.step,
            state=record.state,
            criteria=_criteria(record.criteria),
            step_started_at=record.step_started_at,
            deadline=record.deadline,
            created_by=record.created_by,
            created_at=record.created_at,
            updated_at=record.updated_at,
            reason=record.reason,
            last_verdict=None if record.last_verdict is None else dict(record.last_verdict),
            replay=record.replay,
            policy=record.policy,
            step_minutes=record.step_seconds / 60.0,
            revision=record.revision,
        )

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def share(self) -> int:
        """The candidate's share of traffic at the current step (0: shadowed only)."""
        return self.steps[self.step]

    @property
    def step_name(self) -> str:
        return "replay" if self.state == "replaying" else step_name(self.share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "champion": self.champion,
            "steps": list(self.steps),
            "step": self.step,
            "step_name": self.step_name,
            "share": self.share,
            "state": self.state,
            "criteria": self.criteria.to_dict(),
            "step_started_at": self.step_started_at,
            "deadline": self.deadline,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "last_verdict": self.last_verdict,
            "replay": self.replay,
            "policy": self.policy,
            "step_minutes": self.step_minutes,
            "revision": self.revision,
        }


@dataclass(frozen=True)
class Transition:
    """One audited transition of a rollout (``rollout.*``), oldest first in a history."""

    at: float
    action: str
    actor: str
    from_step: int | None
    to_step: int | None
    step_name: str
    reason: str
    analysis: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "action": self.action,
            "actor": self.actor,
            "from_step": self.from_step,
            "to_step": self.to_step,
            "step_name": self.step_name,
            "reason": self.reason,
            "analysis": self.analysis,
        }


def _criteria(stored: Mapping[str, Any]) -> Criteria:
    # A row whose criteria this code cannot read (written by hand, or by another version)
    # still reads, showing the defaults; the controller does not judge it: its analysis
    # fails, with the reason recorded, until an operator ends it.
    try:
        return Criteria.from_dict(dict(stored))
    except (AevosError, TypeError, ValueError):
        return Criteria()


# -- checks -----------------------------------------------------------------------------------


def check_steps(steps: object) -> tuple[int, ...]:
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
        raise RolloutInputError("steps must be a list of integer shares, e.g. [0, 5, 100]", "steps")
    values = tuple(steps)
    if not 0 < len(values) <= MAX_STEPS:
        raise RolloutInputError(f"steps must hold 1 to {MAX_STEPS} shares", "steps")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise RolloutInputError(
                f"steps are integer shares from 0 (shadow) to 100, got {value!r}", "steps"
            )
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise RolloutInputError("steps must be strictly increasing", "steps")
    if values[-1] != 100:
        raise RolloutInputError("the last step must be 100 (all traffic)", "steps")
    return values


def check_minutes(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_STEP_MINUTES
    ):
        raise RolloutInputError(
            f"step_minutes must be a number > 0 and at most {MAX_STEP_MINUTES:g}, got {value!r}",
            "step_minutes",
        )
    return float(value)


def check_criteria(value: object) -> Criteria:
    if value is None:
        return Criteria()
    if isinstance(value, Criteria):
        return value
    if isinstance(value, Mapping):
        known = set(Criteria().to_dict())
        for key, item in value.items():
            if key not in known:
                raise RolloutInputError(f"criteria has no field {str(key)[:50]!r}", "criteria")
            if item is not None and (
                isinstance(item, bool)
                or not isinstance(item, int | float)
                or not math.isfinite(item)
                or item < 0
            ):
                raise RolloutInputError(
                    f"criteria.{key} must be a number >= 0 (or null), got {type(item).__name__}",
                    "criteria",
                )
        try:
            return Criteria.from_dict(dict(value))
        except (TypeError, ValueError) as exc:
            raise RolloutInputError(f"criteria: {exc}", "criteria") from None
    raise RolloutInputError("criteria must be a Criteria or a mapping of its fields", "criteria")


def check_text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise RolloutInputError(f"{name} must be a string of 1 to {limit} characters", name)
    return value


def check_reason(value: object) -> str:
    if not isinstance(value, str) or len(value) > 500:
        raise RolloutInputError("reason must be a string of at most 500 characters", "reason")
    return value
