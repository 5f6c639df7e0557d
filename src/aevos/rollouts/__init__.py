"""Changing models safely: replay of kept cases before a candidate sees live traffic
(:mod:`.replay`)."""

from __future__ import annotations

from ..records.replay import Replay
from .replay import Replays
from .replay_figures import ReplayCriteria

__all__ = ["Replay", "ReplayCriteria", "Replays"]
