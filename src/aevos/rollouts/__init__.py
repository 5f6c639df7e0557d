"""Rollouts: a candidate version exposed step by step (shadow, then canary shares) and
judged on evidence at every step (:mod:`aevos.rollouts.analysis`)."""

from __future__ import annotations

from .analysis import Criteria, Figures, Verdict, judge, measure

__all__ = ["Criteria", "Figures", "Verdict", "judge", "measure"]
