"""The inbox: how people claim, release, reassign and decide human tasks (``app.tasks``).

This is the ungoverned service, like ``app.store``: it trusts its caller about who is
acting. Requests that carry a token go through :class:`~aevos.access.Access`, which checks
the role and the tenant first. Every action is audited in the same transaction as the
change it records.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import codec
from ..audit import AuditEvent
from ..errors import AevosError, TaskConflictError
from ..records.task import Feedback, Task, TaskStatus, overridden
from ..storage.tasks import refusal
from .labelling import label_from_decision, record_label

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage import Store, UnitOfWork

log = logging.getLogger("aevos.tasks")
# How often "next" looks again after losing its candidate to another reviewer.
_CLAIM_NEXT_TRIES = 20


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

    def _audit(self, uow: UnitOfWork, action: str, actor: str, task: Task, **data: Any) -> None:
        """Audit ``action`` on ``task`` in the unit of work that changed it."""
        level = {"escalation_level": task.escalation_level} if task.escalated else {}
        event = AuditEvent(
            action=action,
            actor=actor,
            tenant=task.tenant,
            subject=f"task:{task.task_id}",
            run_id=task.run_id,
            data={"queue": task.queue, "status": task.status.value, **level, **data},
        )
        self.audit.append(event, uow=uow)

    # -- reads --------------------------------------------------------------------------------

    def get(self, task_id: str, *, tenant: str | None = None) -> Task:
        with self.store.reading() as uow:
            return uow.tasks.get(task_id, tenant=tenant)

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
        with self.store.reading() as uow:
            return uow.tasks.find(
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
        with self.store.reading() as uow:
            return uow.tasks.find_feedback(
                tenant, model=model, workflow=workflow, since=since, limit=limit, offset=offset
            )

    # -- actions ------------------------------------------------------------------------------

    def claim(self, task_id: str, *, actor: str, tenant: str = "default") -> Task:
        """Claim an OPEN task; claiming one's own claimed task again changes nothing."""
        with self.store.transaction() as uow:
            current = uow.tasks.get(task_id, tenant=tenant)
            if current.status is TaskStatus.CLAIMED and current.assignee == actor:
                return current
            task = uow.tasks.claim(task_id, tenant, actor, time.time())
            self._audit(uow, "task.claimed", actor, task)
            return task

    def claim_next(
        self,
        *,
        actor: str,
        roles: Sequence[str],
        tenant: str = "default",
        queue: str | None = None,
    ) -> Task | None:
        """Claim the next task in inbox order that one of ``roles`` may work.

        Many reviewers pressing "next" at once each get a different task: a candidate lost
        to another is passed over (a new unit of work looks again)."""
        for _ in range(_CLAIM_NEXT_TRIES):
            try:
                with self.store.transaction() as uow:
                    task = uow.tasks.claim_next(tenant, actor, roles, queue, time.time())
                    if task is not None:
                        self._audit(uow, "task.claimed", actor, task, next=True)
                    return task
            except TaskConflictError:
                continue
        return None

    def release(
        self, task_id: str, *, actor: str, tenant: str = "default", anyone: bool = False
    ) -> Task:
        with self.store.transaction() as uow:
            task = uow.tasks.release(task_id, tenant, actor, time.time(), anyone=anyone)
            self._audit(uow, "task.released", actor, task)
            return task

    def reassign(
        self,
        task_id: str,
        *,
        by: str,
        tenant: str = "default",
        queue: str | None = None,
        assignee: str | None = None,
    ) -> Task:
        with self.store.transaction() as uow:
            task = uow.tasks.reassign(task_id, tenant, time.time(), queue=queue, assignee=assignee)
            self._audit(uow, "task.reassigned", by, task, assignee=assignee)
            return task

    def submit(
        self,
        task_id: str,
        values: Mapping[str, Any],
        *,
        actor: str,
        tenant: str = "default",
    ) -> tuple[Task, Feedback]:
        """Decide a task: ``values`` are checked against its form (TaskInputError names the
        field), then the task, its feedback record, the run's wake-up and the audit record
        commit together, and the waiting run resumes. A second submission, or one after the
        run was cancelled, raises TaskConflictError and changes nothing."""
        task = self.get(task_id, tenant=tenant)
        if task.status.closed or (task.status is TaskStatus.CLAIMED and task.assignee != actor):
            raise refusal(task, actor)
        decision = task.form.validate(values)
        changed = overridden(task.suggestion, decision)
        result_json = codec.encode(decision, f"the decision on task {task_id}")
        now = time.time()
        with self.store.transaction() as uow:
            done, record = uow.tasks.submit(task_id, tenant, actor, result_json, changed, now)
            if done.purpose != "qa":
                # Nobody waits for a QA answer: its run moved on (or ended) when it asked.
                uow.runs.wake(done.run_id, now)
            new_label = label_from_decision(done, record)
            label = None if new_label is None else record_label(uow, self.audit, new_label)[0]
            self.audit.append(
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
                        "purpose": done.purpose,
                        "label_id": None if label is None else label.id,
                        "decision_digest": codec.digest(decision),
                    },
                ),
                uow=uow,
            )
        if done.purpose != "qa":
            self._wake(done.run_id)
        return done, record

    def escalate_overdue(self, now: float | None = None) -> builtins.list[Task]:
        """Escalate every live task past its SLA one level (all tenants); workers call this.

        Each escalation is its own unit of work, conditional on the level it started from,
        so sweeps on many hosts escalate a task once."""
        moment = time.time() if now is None else now
        actor = f"system:{self._owner}"
        with self.store.reading() as uow:
            due = uow.tasks.overdue(moment)
        done: builtins.list[Task] = []
        for task_id, tenant, level in due:
            try:
                with self.store.transaction() as uow:
                    task = uow.tasks.escalate(task_id, tenant, level, moment)
                    if task is not None:
                        self._audit(uow, "task.escalated", actor, task)
            except AevosError as exc:
                # One task that cannot be escalated must not hold up every other tenant's.
                log.error("escalating task %s failed: %s", task_id, exc.code)
                continue
            if task is not None:
                done.append(task)
        return done
