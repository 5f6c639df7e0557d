"""Retraining: how a model is retrained (its configuration, versioned) and each retraining.

A :class:`RetrainingConfig` names the recipe that trains a model and its parameters, what
starts a retraining (every N new labels, an interval) and how the candidate is judged
(holdout, certification target and risk, the promotion policy). Every change is a new
config version; a retraining records the version it ran with.

A :class:`RetrainingRun` is one retraining: the durable workflow run that does it (same id),
what started it, and what it came to — the dataset version, the candidate registered, its
certification and the promotion decision, or the reason it failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RetrainingStatus(StrEnum):
    QUEUED = "queued"  # enqueued; no worker has started it yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # a certified candidate registered (promoted or not, per policy)
    FAILED = "failed"  # see ``reason``; never a half-registered version


class Trigger(StrEnum):
    MANUAL = "manual"
    LABELS = "labels"  # every N new labels
    SCHEDULE = "schedule"  # an interval
    DRIFT = "drift"


@dataclass(frozen=True)
class RetrainingConfig:
    """How ``model`` of ``tenant`` is retrained (config version ``version``).

    ``every_labels``: start a retraining when that many labels arrived since the last one
    (None: no such trigger). ``interval``: start one every that many seconds (None: none).
    ``reserve``: the share of unbiased rows (cases put to a person at random) kept out of
    training for good, chosen by a stable hash of the case, so no candidate ever trains on
    them: the only rows a threshold is certified on, and, once there are ``min_holdout`` of
    them, the rows candidate and champion are compared on. Until then the comparison uses
    the newest ``holdout`` fraction of the other rows (by time). ``target``/``delta``/``min_count``: the
    certification (:func:`aevos.evolution.certify`; ``min_count`` None is its default).
    ``auto_promote``: ask ``policy`` (a ``promotion`` policy) to promote a certified
    candidate; False leaves promotion to a person.
    """

    tenant: str
    model: str
    version: int
    recipe: str
    params: Mapping[str, Any] = field(default_factory=dict)
    every_labels: int | None = None
    interval: float | None = None
    holdout: float = 0.2
    min_holdout: int = 20
    reserve: float = 0.5
    target: float = 0.97
    delta: float = 0.1
    min_count: int | None = None
    auto_promote: bool = True
    policy: str = "retraining-promotion"
    #: None: a promotion the policy allows moves the champion at once. A plan (``{}`` for
    #: the defaults; keys ``steps``, ``step_minutes``, ``replay``, ``criteria``,
    #: ``policy``): the candidate is rolled out instead (``app.rollouts``), and the rollout
    #: promotes it or rolls it back on evidence.
    rollout: Mapping[str, Any] | None = None
    updated_by: str = "system"
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "recipe": self.recipe,
            "params": dict(self.params),
            "every_labels": self.every_labels,
            "interval": self.interval,
            "holdout": self.holdout,
            "min_holdout": self.min_holdout,
            "reserve": self.reserve,
            "target": self.target,
            "delta": self.delta,
            "min_count": self.min_count,
            "auto_promote": self.auto_promote,
            "policy": self.policy,
            "rollout": None if self.rollout is None else dict(self.rollout),
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class RetrainingRun:
    """One retraining of ``model``: the workflow run ``run_id`` and what it came to.

    ``label_count`` is the number of the model's labels when it was started (the every-N
    trigger counts from it). ``candidate`` is the version registered (None until then, or
    when it failed before). ``certified`` is None until certification ran. ``promotion`` is
    the promotion policy's decision (``allow``/``deny``/``approve``), None when not asked.
    ``lineage`` holds the figures: recipe, parameters, rows, metrics of the candidate and
    the champion on the holdout, the certification.
    """

    run_id: str
    tenant: str
    model: str
    trigger: Trigger
    status: RetrainingStatus
    config_version: int
    requested_by: str
    started_at: float
    label_count: int = 0
    reason: str | None = None
    dataset: str | None = None
    parent: int | None = None
    candidate: int | None = None
    certified: bool | None = None
    threshold: float | None = None
    promotion: str | None = None
    lineage: Mapping[str, Any] = field(default_factory=dict)
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "model": self.model,
            "trigger": self.trigger.value,
            "status": self.status.value,
            "config_version": self.config_version,
            "requested_by": self.requested_by,
            "started_at": self.started_at,
            "label_count": self.label_count,
            "reason": self.reason,
            "dataset": self.dataset,
            "parent": self.parent,
            "candidate": self.candidate,
            "certified": self.certified,
            "threshold": self.threshold,
            "promotion": self.promotion,
            "lineage": dict(self.lineage),
            "finished_at": self.finished_at,
        }
