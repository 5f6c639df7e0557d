"""What the executor writes for one completed step, apart from the store that writes it.

Its own module, below :mod:`~aevos.storage.store` and the repositories, so that the run
repository can take one without importing the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """What the executor writes for one completed step."""

    seq: int
    name: str
    status: str
    output_json: str | None
    error: dict[str, Any] | None
    attempts: int
    started_at: float
    finished_at: float
