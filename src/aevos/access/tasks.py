"""Human tasks: the tenant's inbox, worked by the roles the tasks ask for."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import AuthorizationError
from ..identity import Permission, Principal, Role
from ..records.task import Feedback, Task, TaskStatus
from .guard import Guard

if TYPE_CHECKING:
    from ..people.inbox import Inbox


class Services(Protocol):
    @property
    def tasks(self) -> Inbox: ...


class Tasks:
    """Human tasks, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def _own(self, principal: Principal, task_id: str) -> Task:
        task = self.services.tasks.get(task_id)  # TaskNotFoundError for unknown ids
        self.guard.own(principal, "task", task_id, task.tenant)
        return task

    def list(
        self,
        principal: Principal,
        *,
        status: Sequence[TaskStatus] | None = None,
        queue: str | None = None,
        mine: bool = False,
        workable: bool = False,
        run_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Task]:
        """The tenant's tasks in inbox order; ``mine`` those claimed by the principal,
        ``workable`` those its role may work."""
        self.guard.allow(principal, Permission.TASKS_READ, "read tasks")
        return self.services.tasks.list(
            tenant=principal.tenant,
            status=status,
            queue=queue,
            assignee=principal.actor if mine else None,
            roles=self._roles_for(principal) if workable else None,
            run_id=run_id,
            limit=limit,
            offset=offset,
        )

    def get(self, principal: Principal, task_id: str) -> Task:
        self.guard.allow(principal, Permission.TASKS_READ, "read tasks")
        return self._own(principal, task_id)

    def claim(self, principal: Principal, task_id: str) -> Task:
        task = self._own(principal, task_id)
        self._may_work(principal, task, "claim this task")
        return self.services.tasks.claim(task_id, actor=principal.actor, tenant=principal.tenant)

    def claim_next(self, principal: Principal, *, queue: str | None = None) -> Task | None:
        """Claim the next task in inbox order that the principal's role may work."""
        self.guard.allow(principal, Permission.TASKS_WORK, "claim tasks")
        return self.services.tasks.claim_next(
            actor=principal.actor,
            roles=self._roles_for(principal),
            tenant=principal.tenant,
            queue=queue,
        )

    def release(self, principal: Principal, task_id: str) -> Task:
        """Give a claimed task back to its queue: one's own claim, or anyone's for a
        principal who may reassign tasks."""
        task = self._own(principal, task_id)
        anyone = principal.can(Permission.TASKS_ASSIGN)
        if not anyone:
            self._may_work(principal, task, "release this task")
        return self.services.tasks.release(
            task_id, actor=principal.actor, tenant=principal.tenant, anyone=anyone
        )

    def reassign(
        self,
        principal: Principal,
        task_id: str,
        *,
        queue: str | None = None,
        assignee: str | None = None,
    ) -> Task:
        self.guard.allow(principal, Permission.TASKS_ASSIGN, "reassign tasks")
        self._own(principal, task_id)
        return self.services.tasks.reassign(
            task_id, by=principal.actor, tenant=principal.tenant, queue=queue, assignee=assignee
        )

    def submit(
        self, principal: Principal, task_id: str, values: Mapping[str, Any]
    ) -> tuple[Task, Feedback]:
        """Decide a task (the form checks the values; the decision is audited and becomes a
        feedback record; the waiting run resumes)."""
        task = self._own(principal, task_id)
        self._may_work(principal, task, "decide this task")
        return self.services.tasks.submit(
            task_id, values, actor=principal.actor, tenant=principal.tenant
        )

    def feedback(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Feedback]:
        """Human decisions on suggestions (labelled data), oldest first."""
        self.guard.allow(principal, Permission.TASKS_READ, "read feedback")
        return self.services.tasks.feedback(
            tenant=principal.tenant,
            model=model,
            workflow=workflow,
            since=since,
            limit=limit,
            offset=offset,
        )

    @staticmethod
    def _roles_for(principal: Principal) -> builtins.list[str]:
        """The task roles a principal may work: its own; an admin's, every role."""
        if principal.role is Role.ADMIN:
            return [role.value for role in Role]
        return [principal.role.value]

    def _may_work(self, principal: Principal, task: Task, action: str) -> None:
        self.guard.allow(principal, Permission.TASKS_WORK, action)
        if task.role not in self._roles_for(principal):
            raise AuthorizationError(
                f"task {task.task_id} is for role {task.role!r}; this token's role "
                f"{principal.role.value!r} may not {action}"
            )
