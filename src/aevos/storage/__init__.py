"""Storage backends: SQLite (embedded default) and PostgreSQL, chosen by URL."""

from __future__ import annotations

from .signals import LeaseLost
from .step_record import StepRecord
from .store import Store, open_store
from .unit import UnitOfWork
from .versions import VersionRuns

__all__ = ["LeaseLost", "StepRecord", "Store", "UnitOfWork", "VersionRuns", "open_store"]
