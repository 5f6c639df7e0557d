"""Monitors: models watched over sliding windows by workers, alerts that act (``app.monitors``).

Above :mod:`aevos.retraining`, which an alert may start, and never on the request path: a
check runs in a worker's chore (or when a person asks for one). See
:mod:`aevos.monitoring.service`, :mod:`aevos.monitoring.statistics` and ``docs/evolution.md``.
"""

from __future__ import annotations

from ..records.monitors import DEFAULT_THRESHOLDS, MONITORS
from .checks import Check
from .service import OPERATOR_QUEUE, QUEUE, WORKFLOW, Monitors
from .statistics import LARGE_REFERENCE, Finding

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LARGE_REFERENCE",
    "MONITORS",
    "OPERATOR_QUEUE",
    "QUEUE",
    "WORKFLOW",
    "Check",
    "Finding",
    "Monitors",
]
