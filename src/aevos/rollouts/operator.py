"""The operator's task for a paused rollout: a small durable workflow.

When a step is inconclusive (its deadline passed with too little evidence) the controller
pauses the rollout and starts ``aevos.rollout.operator``, idempotent by the rollout's id and
the revision it paused at, so many workers open one task. The workflow asks a person in the
``operators`` queue (role ``admin``: the role that both works tasks and may promote) to resume, abort, promote or roll
back, and applies the answer through the service as that person. If the rollout moved
meanwhile (someone acted from the CLI, the API or the console), the answer is stale: it is
returned as not applied and changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ..errors import RolloutConflictError
from ..kernel.workflow import StartOptions
from ..records.task import Field

if TYPE_CHECKING:
    from ..kernel.context import WorkflowContext
    from ..kernel.step import StepContext
    from .actions import RolloutActions

WORKFLOW = "aevos.rollout.operator"
QUEUE = "rollouts"
#: Where the task waits, and who may take it: of the roles that may promote models, only
#: admins work tasks (operators do not), so the task is theirs.
TASK_QUEUE = "operators"
TASK_ROLE = "admin"
ACTIONS = ("resume", "abort", "promote", "rollback")
FORM = [
    Field.choice("action", list(ACTIONS), label="What to do with the rollout"),
    Field.text("note", required=False, max_length=500, label="Why"),
]


def task_key(rollout_id: str, revision: int) -> str:
    return "rollout-op:" + hashlib.sha256(f"{rollout_id}/{revision}".encode()).hexdigest()[:40]


class OperatorTasks:
    """Opens (idempotently) and runs the operator's task of a paused rollout."""

    def __init__(self, service: RolloutActions) -> None:
        self.service = service
        runtime = service.runtime
        if QUEUE not in runtime.queues:
            runtime.queue(QUEUE, worker_concurrency=4)
        self._apply = runtime.step(name=f"{WORKFLOW}.apply")(self._apply_step)
        self.workflow = runtime.workflow(name=WORKFLOW, queue=QUEUE, data_policy="keep")(self._ask)

    def open(self, rollout_id: str, tenant: str, revision: int) -> str:
        """Start the task's workflow for the rollout at ``revision`` (once); its run id."""
        handle = self.service.runtime.enqueue(
            self.workflow,
            (rollout_id, revision),
            {},
            StartOptions(
                tenant=tenant,
                actor="system:rollouts",
                idempotency_key=task_key(rollout_id, revision),
            ),
        )
        return handle.run_id

    def _ask(self, ctx: WorkflowContext, rollout_id: str, revision: int) -> dict[str, Any]:
        rollout = self.service.get(rollout_id, tenant=ctx.tenant)
        decision = ctx.ask_human(
            f"Rollout of {rollout.model}@{rollout.version} paused: decide",
            form=FORM,
            case={
                "rollout_id": rollout.rollout_id,
                "model": rollout.model,
                "version": rollout.version,
                "champion": rollout.champion,
                "step": rollout.step_name,
                "reason": rollout.reason,
                "analysis": rollout.last_verdict,
            },
            queue=TASK_QUEUE,
            role=TASK_ROLE,
        )
        note = decision.get("note") or ""
        return self._apply(
            ctx,
            ctx.tenant,
            rollout_id,
            revision,
            str(decision["action"]),
            decision.reviewer,
            str(note),
        )

    def _apply_step(
        self,
        sctx: StepContext,
        tenant: str,
        rollout_id: str,
        revision: int,
        action: str,
        reviewer: str,
        note: str,
    ) -> dict[str, Any]:
        service = self.service
        current = service.get(rollout_id, tenant=tenant)
        if current.revision != revision or current.state != "paused":
            return {"applied": False, "action": action, "reason": "the rollout moved meanwhile"}
        acts = {
            "resume": service.resume,
            "abort": service.abort,
            "promote": service.promote,
            "rollback": service.rollback,
        }
        try:
            done = acts[action](rollout_id, tenant=tenant, actor=reviewer, reason=note[:500])
        except RolloutConflictError as exc:
            return {"applied": False, "action": action, "reason": exc.message}
        return {"applied": True, "action": action, "state": done.state}
