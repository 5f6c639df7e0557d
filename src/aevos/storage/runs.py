"""A run's history inside a unit of work: the slow path of recording a step.

The executor's hot path (one step, one commit, no other write) stays in
:class:`~aevos.storage.store.Store`, compiled once. This repository is for a step that
commits with other writes: a policy decision with its audit record, a human task with the
step that asked for it, a task's outcome.
"""

from __future__ import annotations

from .repository import Repository
from .schema import steps
from .signals import LeaseLost
from .step_record import StepRecord


class RunRepository(Repository):
    def fence(self, run_id: str, owner: str, now: float) -> bool:
        """Touch the run if ``owner`` still holds it; False: it was cancelled or taken over,
        and nothing this unit of work writes for it may commit."""
        return self.uow.store._fence(self.conn, run_id, owner, now)

    def record_step(self, run_id: str, owner: str, step: StepRecord) -> None:
        """Record ``step`` at its position, fenced on ``owner``'s lease: raises
        :class:`LeaseLost` (and the unit of work must roll back) if the run is no longer
        theirs."""
        store = self.uow.store
        if not store._fence(self.conn, run_id, owner, step.finished_at):
            raise LeaseLost(run_id)
        text, ref = store._value(self.conn, step.output_json)
        self.conn.execute(steps.insert(), store._step_values(run_id, step, text, ref))

    def wake(self, run_id: str, now: float) -> None:
        """Make a waiting run claimable now (a parked run whose answer arrived)."""
        self.uow.store._wake(self.conn, run_id, now)
