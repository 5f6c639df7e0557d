"""Monitors: how a model is watched (its configuration, versioned), what each check found,
and the alerts it raised.

A :class:`MonitorConfig` says which window of recent traffic is compared with which
reference, the thresholds, what an alert does (start a retraining, ask an operator) and how
often workers check. A :class:`MonitorResult` is one monitor's figure at one check (or a
"no data" result); an :class:`Alert` the figures that crossed a threshold, open until an
operator acknowledges it or the monitor recovers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The monitors a check computes, in order.
MONITORS = (
    "input_drift",
    "prediction_drift",
    "label_drift",
    "confidence_drift",
    "override_rate",
    "qa_precision",
    "estimated_accuracy",
)

#: Thresholds by default; a configuration overrides any of them.
DEFAULT_THRESHOLDS: dict[str, float] = {
    # A statistical test flags a difference below this p-value (not 0.05: a monitor checks
    # again and again, and at 0.05 one check in twenty of a steady model would alarm) ...
    "p_value": 0.01,
    # ... and a drift is called only when its size is at least (the effect size rule).
    "tabular_distance": 0.1,  # normalised Wasserstein (numeric), Jensen-Shannon (categorical)
    "tabular_drift_share": 0.5,  # the share of drifted features that is input drift
    "text_distance": 0.01,  # token Jensen-Shannon distance above its sampling noise
    "prediction_distance": 0.01,  # Jensen-Shannon distance of predicted classes above noise
    "new_class_share": 0.02,  # the window's share of classes the reference never saw, ditto
    "label_distance": 0.01,  # Jensen-Shannon distance of people's labels above noise
    "new_label_share": 0.05,  # the labels' share of classes the reference's never held, ditto
    "confidence_distance": 0.05,  # Wasserstein distance of confidences (on [0, 1])
    # Alert when the window's Wilson interval lies above the reference's override rate plus
    # this: a person overrides the uncertain suggestions they see often in any steady state.
    "max_override_increase": 0.1,
    # Alert when the Wilson interval of the automated decisions' precision lies below it.
    "min_precision": 0.9,
    "max_accuracy_drop": 0.05,  # estimated accuracy vs the reference's estimate
    # The accuracy estimate is over the newest this many calls (at least the window): its
    # own sampling error is about sqrt(a(1 - a) / n), 3 points at 200 calls, 1.4 at 1,000.
    "estimate_window": 1000,
    "min_window": 30,  # fewer observations than this: "no data"
    # An alert that stays open after its retraining ended without a better champion (its
    # candidate was not certified, or its rollout was rolled back) retrains again, at most
    # this many times in all, and not sooner than retrain_after seconds after the last one.
    "max_retrainings": 3,
    "retrain_after": 300,
    # While label drift names classes the model never saw, a drift retraining waits until
    # they hold this many labels each (the median of them): a candidate trained on one or
    # two examples of a class does not learn it, and once it is champion the monitors
    # compare against its own traffic, where those classes are no longer new.
    "min_new_class_labels": 5,
}


@dataclass(frozen=True)
class MonitorConfig:
    """How ``model`` of ``tenant`` is monitored (config version ``version``).

    The window is the newest ``window_cases`` calls of the monitored version (the champion),
    within the last ``window_seconds`` when set (either or both). The reference is the first
    ``reference_cases`` calls after that version became champion, or, when
    ``reference_since``/``reference_until`` are set, its calls in that time range.
    """

    tenant: str
    model: str
    version: int
    window_cases: int | None = 500
    window_seconds: float | None = None
    reference_cases: int = 500
    reference_since: float | None = None
    reference_until: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    retrain: bool = False
    task: bool = False
    interval: float = 300.0
    updated_by: str = "system"
    updated_at: float = 0.0

    def threshold(self, name: str) -> float:
        return float(self.thresholds.get(name, DEFAULT_THRESHOLDS[name]))

    def settings(self) -> dict[str, Any]:
        """What the configuration row keeps as JSON."""
        return {
            "window_cases": self.window_cases,
            "window_seconds": self.window_seconds,
            "reference_cases": self.reference_cases,
            "reference_since": self.reference_since,
            "reference_until": self.reference_until,
            "thresholds": dict(self.thresholds),
            "on_alert": {"retrain": self.retrain, "task": self.task},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            **self.settings(),
            "thresholds": {**DEFAULT_THRESHOLDS, **dict(self.thresholds)},
            "interval": self.interval,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class MonitorResult:
    """One monitor's figure at one check. ``status`` is ``ok``, ``alert`` or ``no_data``
    (too little traffic: ``figures["reason"]`` says what was missing)."""

    tenant: str
    model: str
    version: int | None
    monitor: str
    status: str
    value: float | None
    threshold: float | None
    p_value: float | None
    alert: bool
    n: int
    since: float | None
    until: float | None
    figures: Mapping[str, Any]
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "monitor": self.monitor,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "alert": self.alert,
            "n": self.n,
            "window": [self.since, self.until],
            "figures": dict(self.figures),
            "at": self.at,
        }


@dataclass(frozen=True)
class Alert:
    """An alert: ``status`` ``open``, ``acknowledged`` or ``resolved`` (the monitor
    recovered, or an operator dismissed it); ``actions`` what on_alert did."""

    alert_id: str
    tenant: str
    model: str
    version: int | None
    monitor: str
    status: str
    figures: Mapping[str, Any]
    since: float | None
    until: float | None
    actions: Mapping[str, Any]
    opened_at: float
    closed_at: float | None = None
    closed_by: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "monitor": self.monitor,
            "status": self.status,
            "figures": dict(self.figures),
            "window": [self.since, self.until],
            "actions": dict(self.actions),
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "reason": self.reason,
        }
