"""Named work queues with concurrency, priority and rate limits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import DefinitionError

INLINE_QUEUE = "_inline"  # runs executed by the caller's own process; no limits apply
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True)
class Queue:
    """A named queue that workers pull runs from.

    ``concurrency`` bounds the runs of this queue executing at once across *all* workers on
    all hosts (enforced in the database at claim time); ``worker_concurrency`` bounds them
    per worker process. ``rate_limit`` runs may start per ``rate_period`` seconds, again
    globally. Runs with a smaller ``priority`` number start first; ties go by age.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float = 1.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DefinitionError(
                f"queue name {self.name!r} must be 1-100 characters of letters, digits, "
                "'_', '.', '-' and not start with '_'"
            )
        for field_name in ("concurrency", "worker_concurrency", "rate_limit"):
            value = getattr(self, field_name)
            if value is not None and value < 1:
                raise DefinitionError(f"queue {self.name!r}: {field_name} must be >= 1")
        if self.rate_period <= 0:
            raise DefinitionError(f"queue {self.name!r}: rate_period must be > 0")
        if (
            self.concurrency is not None
            and self.worker_concurrency is not None
            and self.worker_concurrency > self.concurrency
        ):
            raise DefinitionError(
                f"queue {self.name!r}: worker_concurrency {self.worker_concurrency} exceeds "
                f"the global concurrency {self.concurrency}"
            )
