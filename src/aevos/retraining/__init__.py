"""Retraining: models retrained from their labels by a durable workflow (``app.retraining``).

Above :mod:`aevos.evolution` (recipes, certification, labels, datasets), which it calls and
which never calls it, and above the kernel, whose workflow it is: a retraining is a run of
``aevos.retraining`` on a worker (see :mod:`aevos.retraining.service` and
``docs/evolution.md``).
"""

from __future__ import annotations

from .data import LabelledCases, Split, TrainingData, reserved, split, split_by_time
from .service import QUEUE, RUN_TAG, WORKFLOW, Retraining

__all__ = [
    "QUEUE",
    "RUN_TAG",
    "WORKFLOW",
    "LabelledCases",
    "Retraining",
    "Split",
    "TrainingData",
    "reserved",
    "split",
    "split_by_time",
]
