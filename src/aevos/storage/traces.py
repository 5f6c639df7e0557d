"""Run traces: the trace context a traced run's executions continue (``aevos_run_traces``).

Written with the run's row when tracing is on (:mod:`aevos.telemetry.tracing`), read when
a worker executes the run, so that a run parked on one host and resumed on another stays
one trace. Nothing is written for runs started without tracing.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from .repository import Repository, StoreHandle
from .schema import run_traces


def _insert(store: StoreHandle) -> Any:
    return store.dialect.insert(run_traces).on_conflict_do_nothing(index_elements=["run_id"])


class TraceRepository(Repository):
    """Runs' trace contexts, in the unit of work it is bound to."""

    def add(self, run_id: str, traceparent: str, tracestate: str | None = None) -> None:
        """Remember a run's trace context; a run keeps the first one it was given."""
        self.conn.execute(
            self.uow.prepared(_insert),
            {
                "run_id": run_id,
                "traceparent": traceparent,
                "tracestate": tracestate,
                "created_at": time.time(),
            },
        )

    def get(self, run_id: str) -> tuple[str, str | None] | None:
        """``(traceparent, tracestate)`` of a run, or None when it was started untraced."""
        row = self.conn.execute(
            sa.select(run_traces.c.traceparent, run_traces.c.tracestate).where(
                run_traces.c.run_id == run_id
            )
        ).one_or_none()
        return None if row is None else (row.traceparent, row.tracestate)
