"""Storage backends: SQLite (embedded default) and PostgreSQL, chosen by URL."""

from __future__ import annotations

from .signals import LeaseLost
from .store import StepRecord, Store, open_store

__all__ = ["LeaseLost", "StepRecord", "Store", "open_store"]
