"""Changing models safely: replay of kept cases before a candidate sees live traffic
(``app.replays``, :mod:`.replay`), and rollouts: a candidate version exposed step by step,
promoted or rolled back on evidence (``app.rollouts``).

A rollout's state lives in the database (``aevos_rollouts``): its steps (0 = shadow, then
canary shares in percent, the last 100), the step reached, its state, deadline and last
verdict. The gateway routes each model by its active rollout read from the database, so
every process follows a change within seconds. The controller (:meth:`Rollouts.tick`, run
by workers) judges each step on its analysis (:mod:`aevos.rollouts.analysis`) and advances,
rolls back, or pauses it with a task for an operator.
"""

from __future__ import annotations

from ..records.replay import Replay
from .analysis import Criteria, Figures, Verdict, judge, measure
from .model import DEFAULT_STEPS, Rollout, Transition
from .replay import Replays
from .replay_figures import ReplayCriteria
from .service import Rollouts

__all__ = [
    "DEFAULT_STEPS",
    "Criteria",
    "Figures",
    "Replay",
    "ReplayCriteria",
    "Replays",
    "Rollout",
    "Rollouts",
    "Transition",
    "Verdict",
    "judge",
    "measure",
]
