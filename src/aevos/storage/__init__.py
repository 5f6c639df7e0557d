"""Storage backends: SQLite (embedded default) and PostgreSQL, chosen by URL."""

from __future__ import annotations

from .store import LeaseLost, StepRecord, Store, open_store

__all__ = ["LeaseLost", "StepRecord", "Store", "open_store"]
