"""The rollout service (``app.rollouts``): start, read and act on rollouts
(:mod:`.actions`), the controller workers run (:mod:`.controller`, ``tick``) and the
operator task of an inconclusive step (:mod:`.operator`).

Each transition is one unit of work: the rollout's row changes only if it is still at the
revision the actor read (so of two operators or two workers acting at once, one wins and
the other gets :class:`~aevos.errors.RolloutConflictError`), and its ``rollout.*`` audit
record commits with it.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .actions import ReplayHook, RolloutActions
from .controller import tick
from .operator import OperatorTasks

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..kernel.runtime import Runtime
    from ..models.promotion import PromotionGate
    from ..models.registry import ModelRegistry
    from ..people.approvals import Approvals
    from ..storage import Store


class Rollouts(RolloutActions):
    """Rollouts of candidate model versions (``app.rollouts``, one per app). Building it
    registers the operator task's workflow and its queue."""

    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        audit: AuditLog,
        registry: ModelRegistry,
        *,
        promotions: Callable[[], PromotionGate],
        approvals: Callable[[], Approvals],
        replays: Callable[[], ReplayHook | None] | None = None,
    ) -> None:
        super().__init__(
            runtime,
            store,
            audit,
            registry,
            promotions=promotions,
            approvals=approvals,
            replays=replays,
        )
        self.operators = OperatorTasks(self)

    def tick(self, now: float | None = None) -> builtins.list[str]:
        """Move every active rollout on its evidence (workers run this between claims);
        returns the ids of the rollouts that changed state or step."""
        return tick(self, self.operators, time.time() if now is None else now)
