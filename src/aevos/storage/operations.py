"""Operator actions on runs: cancel (with children), resume, fork.

A mixin of :class:`~aevos.storage.store.Store`, kept apart because these are rare,
human-initiated transitions, while the store module holds the executor's hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import InvalidRunStateError, RunNotFoundError
from ..records.run import RunInfo
from ..records.status import RunStatus
from .schema import runs, steps
from .unit import UnitOfWork


class OperatorActions:
    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[UnitOfWork]: ...

        def _run_info(self, conn: Connection, row: Any, *, strict: bool = True) -> RunInfo: ...

    def cancel(
        self, run_id: str, *, also: Callable[[UnitOfWork, RunStatus], object] | None = None
    ) -> RunStatus:
        """Cancel a run and its unfinished children; returns the run's resulting status.

        ``also(uow, status)`` (the audit record of who asked) commits with it, also when the
        run had already ended and nothing changed."""
        now = time.time()
        with self.transaction() as uow:
            conn = uow.conn
            row = conn.execute(
                sa.select(runs.c.status).where(runs.c.run_id == run_id)
            ).scalar_one_or_none()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r}")
            if RunStatus(row).terminal:
                if also is not None:
                    also(uow, RunStatus(row))
                return RunStatus(row)
            pending = [run_id]
            while pending:
                # A person can no longer decide for a cancelled run: close its tasks with it.
                uow.tasks.cancel_for_runs(pending, now)
                conn.execute(
                    sa.update(runs)
                    .where(
                        runs.c.run_id.in_(pending),
                        runs.c.status.in_(["ENQUEUED", "RUNNING", "WAITING"]),
                    )
                    .values(status="CANCELLED", updated_at=now, finished_at=now, wake_at=None)
                )
                pending = list(
                    conn.execute(
                        sa.select(runs.c.run_id).where(
                            runs.c.parent_run_id.in_(pending),
                            runs.c.status.in_(["ENQUEUED", "RUNNING", "WAITING"]),
                        )
                    ).scalars()
                )
            if also is not None:
                also(uow, RunStatus.CANCELLED)
            return RunStatus.CANCELLED

    def resume(self, run_id: str, *, also: Callable[[UnitOfWork], object] | None = None) -> RunInfo:
        """Re-enqueue a FAILED or CANCELLED run; its recorded steps are kept and replayed.
        ``also(uow)`` (its audit record) commits with it."""
        now = time.time()
        with self.transaction() as uow:
            conn = uow.conn
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).one_or_none()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r}")
            if row.status not in ("FAILED", "CANCELLED"):
                raise InvalidRunStateError(
                    f"run {run_id} is {row.status}; only FAILED or CANCELLED runs can be resumed"
                )
            # The tasks its cancellation closed wait for a person again.
            uow.tasks.reopen_cancelled(run_id, now)
            # A failed step is recorded as a result; drop the failure so it runs again.
            conn.execute(
                sa.delete(steps).where(steps.c.run_id == run_id, steps.c.status == "FAILED")
            )
            conn.execute(
                sa.update(runs)
                .where(runs.c.run_id == run_id)
                .values(
                    status="ENQUEUED",
                    error=None,
                    owner=None,
                    lease_until=None,
                    wake_at=None,
                    finished_at=None,
                    updated_at=now,
                )
            )
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).one()
            if also is not None:
                also(uow)
            return self._run_info(conn, row)

    def fork(
        self,
        run_id: str,
        from_seq: int,
        new_run_id: str,
        code_version: str,
        queue: str,
        *,
        also: Callable[[UnitOfWork, RunInfo], object] | None = None,
    ) -> RunInfo:
        """A new run with the same input and the steps before ``from_seq`` copied over;
        ``also(uow, run)`` (its audit record) commits with it."""
        now = time.time()
        with self.transaction() as uow:
            conn = uow.conn
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).one_or_none()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r}")
            if from_seq < 0:
                raise InvalidRunStateError(f"cannot fork from step {from_seq}: must be >= 0")
            conn.execute(
                runs.insert(),
                {
                    "run_id": new_run_id,
                    "tenant": row.tenant,
                    "workflow": row.workflow,
                    "status": "ENQUEUED",
                    "queue": queue,
                    "priority": row.priority,
                    "idempotency_key": None,
                    "input": row.input,
                    "input_ref": row.input_ref,
                    "code_version": code_version,
                    "parent_run_id": row.parent_run_id,
                    "executions": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            copied = conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id, steps.c.seq < from_seq)
            ).all()
            if copied:
                conn.execute(
                    steps.insert(),
                    [{**r._asdict(), "run_id": new_run_id} for r in copied],
                )
            new_row = conn.execute(sa.select(runs).where(runs.c.run_id == new_run_id)).one()
            info = self._run_info(conn, new_row)
            if also is not None:
                also(uow, info)
            return info
