"""The inbox: how people claim, release, reassign and decide human tasks (``app.tasks``).

This is the ungoverned service, like ``app.store``: it trusts its caller about who is
acting. Requests that carry a token go through :class:`~aevos.access.Access`, which checks
the role and the tenant first. Every action is audited in the same transaction as the
change it records.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from .. import codec
from ..audit import AuditEvent
from ..records.task import Feedback, Task, TaskStatus, overridden

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage import Store


class Inbox:
    """The reviewer inbox (``app.tasks``). ``wake(run_id)`` tells the kernel that a run
    waiting on a task has its answer."""

    def __init__(
        self, store: Store, audit: AuditLog, wake: Callable[[str], None], owner: str
    ) -> None:
        self.store = store
        self.audit = audit
        self._wake = wake
        self._owner = owner

    def _audited(self, action: str, actor: str, **data: Any) -> Any:
        """An ``also`` callback that audits ``action`` on the task it is given."""
        audit = self.audit

        def append(conn: Connection, task: Task, *_: Any) -> None:
            level = {"escalation_level": task.escalation_level} if task.escalated else {}
            event = AuditEvent(
                action=action,
                actor=actor,
                tenant=task.tenant,
                subject=f"task:{task.task_id}",
                run_id=task.run_id,
                data={"queue": task.queue, "status": task.status.value, **level, **data},
            )
            audit.append(event, conn=conn)

        return append

    # -- reads --------------------------------------------------------------------------------

    def get(self, task_id: str, *, tenant: str | None = None) -> Task:
        return self.store.get_task(task_id, tenant=tenant)

    def list(
        self,
        *,
        tenant: str = "default",
        status: Sequence[TaskStatus] | None = None,
        queue: str | None = None,
        assignee: str | None = None,
        roles: Sequence[str] | None = None,
        run_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Task]:
        return self.store.list_tasks(
            tenant,
            status=status,
            queue=queue,
            assignee=assignee,
            roles=roles,
            run_id=run_id,
            limit=limit,
            offset=offset,
        )

    def feedback(
        self,
        *,
        tenant: str = "default",
        model: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Feedback]:
        return self.store.list_feedback(
            tenant, model=model, workflow=workflow, since=since, limit=limit, offset=offset
        )

    # -- actions ------------------------------------------------------------------------------

    def claim(self, task_id: str, *, actor: str, tenant: str = "default") -> Task:
        return self.store.claim_task(task_id, tenant, actor, self._audited("task.claimed", actor))

    def claim_next(
        self,
        *,
        actor: str,
        roles: Sequence[str],
        tenant: str = "default",
        queue: str | None = None,
    ) -> Task | None:
        """Claim the next task in inbox order that one of ``roles`` may work."""
        return self.store.claim_next(
            tenant, actor, roles, queue, self._audited("task.claimed", actor, next=True)
        )

    def release(
        self, task_id: str, *, actor: str, tenant: str = "default", anyone: bool = False
    ) -> Task:
        return self.store.release_task(
            task_id, tenant, actor, self._audited("task.released", actor), anyone=anyone
        )

    def reassign(
        self,
        task_id: str,
        *,
        by: str,
        tenant: str = "default",
        queue: str | None = None,
        assignee: str | None = None,
    ) -> Task:
        return self.store.reassign_task(
            task_id,
            tenant,
            queue=queue,
            assignee=assignee,
            also=self._audited("task.reassigned", by, assignee=assignee),
        )

    def submit(
        self,
        task_id: str,
        values: Mapping[str, Any],
        *,
        actor: str,
        tenant: str = "default",
    ) -> tuple[Task, Feedback]:
        """Decide a task: ``values`` are checked against its form (TaskInputError names the
        field), then the task, its feedback record and the audit record commit together and
        the waiting run resumes. A second submission, or one after the run was cancelled,
        raises TaskConflictError and changes nothing."""
        task = self.store.get_task(task_id, tenant=tenant)
        if task.status.closed or (task.status is TaskStatus.CLAIMED and task.assignee != actor):
            from ..storage.tasks import _refusal

            raise _refusal(task, actor)
        decision = task.form.validate(values)
        changed = overridden(task.suggestion, decision)
        result_json = codec.encode(decision, f"the decision on task {task_id}")
        audit = self.audit

        def also(conn: Connection, done: Task, record: Feedback) -> None:
            audit.append(
                AuditEvent(
                    action="task.submitted",
                    actor=actor,
                    tenant=done.tenant,
                    subject=f"task:{done.task_id}",
                    run_id=done.run_id,
                    # The decision as a digest: free-text fields may hold personal data.
                    data={
                        "queue": done.queue,
                        "feedback_id": record.id,
                        "overridden": changed,
                        "model_version": done.model_version,
                        "call_id": done.call_id,
                        "decision_digest": codec.digest(decision),
                    },
                ),
                conn=conn,
            )

        done, record = self.store.submit_task(task_id, tenant, actor, result_json, changed, also)
        self._wake(done.run_id)
        return done, record

    def escalate_overdue(self, now: float | None = None) -> builtins.list[Task]:
        """Escalate every live task past its SLA one level (all tenants); workers call this."""
        return self.store.escalate_overdue(
            time.time() if now is None else now,
            self._audited("task.escalated", f"system:{self._owner}"),
        )
