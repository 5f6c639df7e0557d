"""Which code versions runs in flight started on: what ``aevos runs versions`` shows before
an old deployment is retired.

A mixin of :class:`~aevos.storage.store.Store`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..records.status import RunStatus
from .schema import runs

#: A run is in flight until it ends: these are the statuses a worker may still claim it in.
IN_FLIGHT = (RunStatus.ENQUEUED, RunStatus.RUNNING, RunStatus.WAITING)


@dataclass(frozen=True)
class VersionRuns:
    """The runs in flight that started on one code version."""

    code_version: str
    runs: int
    oldest: float  # created_at of the oldest of them
    statuses: dict[str, int] = field(default_factory=dict)
    workflows: dict[str, int] = field(default_factory=dict)


class Versions:
    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[Connection]: ...

    def versions_in_flight(self, *, tenant: str | None = None) -> list[VersionRuns]:
        """Runs not yet ended, per the code version they started on, oldest version first
        (by its oldest run); only ``tenant``'s when given."""
        query = (
            sa.select(
                runs.c.code_version,
                runs.c.workflow,
                runs.c.status,
                sa.func.count(),
                sa.func.min(runs.c.created_at),
            )
            .where(runs.c.status.in_([s.value for s in IN_FLIGHT]))
            .group_by(runs.c.code_version, runs.c.workflow, runs.c.status)
        )
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        with self._read() as conn:
            rows = conn.execute(query).all()
        found: dict[str, VersionRuns] = {}
        for version, workflow, status, count, oldest in rows:
            entry = found.get(version)
            if entry is None:
                entry = found[version] = VersionRuns(version, 0, float(oldest))
            found[version] = VersionRuns(
                version,
                entry.runs + int(count),
                min(entry.oldest, float(oldest)),
                {**entry.statuses, status: entry.statuses.get(status, 0) + int(count)},
                {**entry.workflows, workflow: entry.workflows.get(workflow, 0) + int(count)},
            )
        return sorted(found.values(), key=lambda entry: (entry.oldest, entry.code_version))
