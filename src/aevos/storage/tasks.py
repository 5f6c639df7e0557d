"""Human tasks and feedback records: the tasks repository.

Every state change is one conditional UPDATE (``WHERE status = ...``), so two reviewers
racing for a task, or a submission racing a cancellation, cannot both win on either
backend; the loser gets :class:`TaskConflictError` and nothing changes. The inbox submits a
decision in one unit of work: the task, its feedback record, the run's wake-up and the audit
record commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from .. import codec
from ..errors import TaskConflictError, TaskNotFoundError
from ..records.task import (
    ESCALATION_BOOST,
    Feedback,
    Form,
    Ranked,
    Task,
    TaskRequest,
    TaskStatus,
    ranked_from_json,
    ranked_to_json,
)
from .repository import Repository
from .schema import feedback, tasks

_LIVE = (TaskStatus.OPEN.value, TaskStatus.CLAIMED.value)


def _json(text: str | None) -> Any:
    return None if text is None else codec.decode(text)


def _ranked_json(request: TaskRequest) -> str | None:
    """The ranked column: the model's top suggestions per field, or NULL."""
    if not request.ranked:
        return None
    return codec.encode(ranked_to_json(request.ranked), "ranked suggestions")


def task_of(row: Any) -> Task:
    form = Form.from_list(codec.decode(row.form))
    ranked: Ranked = {} if row.ranked is None else ranked_from_json(codec.decode(row.ranked))
    return Task(
        task_id=row.task_id,
        tenant=row.tenant,
        run_id=row.run_id,
        workflow=row.workflow,
        seq=row.seq,
        title=row.title,
        queue=row.queue,
        role=row.role,
        status=TaskStatus(row.status),
        priority=row.priority,
        form=form,
        case=_json(row.case_data),
        suggestion=_json(row.suggestion),
        confidence=row.confidence,
        model=row.model,
        model_version=row.model_version,
        input_digest=row.input_digest,
        call_id=row.call_id,
        assignee=row.assignee,
        claimed_at=row.claimed_at,
        sla_seconds=row.sla_seconds,
        due_at=row.due_at,
        escalate_to=row.escalate_to,
        escalated_at=row.escalated_at,
        result=_json(row.result),
        submitted_by=row.submitted_by,
        submitted_at=row.submitted_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        escalation_chain=_chain(row),
        escalations=row.escalations or (0 if row.sla_seconds is None else 1),
        escalation_level=row.escalation_level or (0 if row.escalated_at is None else 1),
        ranked=ranked,
        purpose=row.purpose,
        unbiased=bool(row.unbiased),
        label_field=row.label_field,
    )


def _level() -> Any:
    """A task's escalation level; a task a process older than revision 0006 escalated (its
    level left at 0, ``escalated_at`` set) counts as level 1."""
    c = tasks.c
    return sa.case(
        (sa.and_(c.escalation_level == 0, c.escalated_at.is_not(None)), 1),
        else_=c.escalation_level,
    )


def _escalations() -> Any:
    """How many escalations a task has; one an older process asked (the column's default
    0 with an SLA) has one, as it would have had."""
    c = tasks.c
    return sa.case(
        (sa.and_(c.escalations == 0, c.sla_seconds.is_not(None)), 1), else_=c.escalations
    )


def _chain(row: Any) -> tuple[str, ...]:
    if row.escalation_chain is not None:
        return tuple(codec.decode(row.escalation_chain))
    return () if row.escalate_to is None else (row.escalate_to,)


def feedback_of(row: Any) -> Feedback:
    return Feedback(
        id=row.id,
        tenant=row.tenant,
        task_id=row.task_id,
        run_id=row.run_id,
        workflow=row.workflow,
        seq=row.seq,
        model=row.model,
        model_version=row.model_version,
        input_digest=row.input_digest,
        call_id=row.call_id,
        suggestion=_json(row.suggestion),
        confidence=row.confidence,
        decision=codec.decode(row.decision),
        overridden=bool(row.overridden),
        reviewer=row.reviewer,
        asked_at=row.asked_at,
        decided_at=row.decided_at,
        purpose=row.purpose,
        unbiased=bool(row.unbiased),
    )


class TaskRepository(Repository):
    """Tasks and feedback records, in the unit of work it is bound to."""

    # -- creation and the run's side ---------------------------------------------------------

    def create(
        self,
        request: TaskRequest,
        *,
        task_id: str,
        tenant: str,
        run_id: str,
        workflow: str,
        seq: int,
        created_at: float,
    ) -> None:
        """Store the task ``request`` asks for, OPEN, asked by the run at position ``seq``."""
        self.conn.execute(
            tasks.insert(),
            {
                "task_id": task_id,
                "tenant": tenant,
                "run_id": run_id,
                "workflow": workflow,
                "seq": seq,
                "title": request.title,
                "queue": request.queue,
                "role": request.role,
                "status": TaskStatus.OPEN.value,
                "priority": request.priority,
                "form": codec.encode(request.form.to_list(), "form"),
                "ranked": _ranked_json(request),
                "case_data": codec.encode(request.case, f"the case of task {task_id!r}"),
                "suggestion": None
                if request.suggestion is None
                else codec.encode(request.suggestion, f"the suggestion of task {task_id!r}"),
                "confidence": request.confidence,
                "model": request.model,
                "model_version": request.model_version,
                "input_digest": request.input_digest,
                "call_id": request.call_id,
                "sla_seconds": request.sla_seconds,
                "due_at": None if request.sla_seconds is None else created_at + request.sla_seconds,
                "escalate_to": request.escalate_to[0] if request.escalate_to else None,
                "escalation_chain": (
                    codec.encode(list(request.escalate_to), "escalate_to")
                    if len(request.escalate_to) > 1
                    else None
                ),
                # Past each SLA one escalation, one per queue named (one in place if none).
                "escalations": 0
                if request.sla_seconds is None
                else max(1, len(request.escalate_to)),
                "created_at": created_at,
                "updated_at": created_at,
                "purpose": request.purpose,
                "unbiased": int(request.unbiased),
                "label_field": request.label_field,
            },
        )

    def take(self, task_id: str, deadline: float, now: float) -> tuple[Task, bool]:
        """The task as its run should see it now: a live task past ``deadline`` is marked
        EXPIRED first. Returns ``(task, expired_now)``."""
        task = self.get(task_id)
        if task.status in (TaskStatus.OPEN, TaskStatus.CLAIMED) and now >= deadline:
            expired = self.conn.execute(
                sa.update(tasks)
                .where(tasks.c.task_id == task_id, tasks.c.status.in_(_LIVE))
                .values(status=TaskStatus.EXPIRED.value, updated_at=now)
            )
            # Not expired: submitted in between, so the submission is what the run takes.
            return self.get(task_id), expired.rowcount == 1
        return task, False

    def cancel_for_runs(self, run_ids: Sequence[str], now: float) -> None:
        """Close the live tasks of cancelled runs (in the cancellation's unit of work)."""
        self.conn.execute(
            sa.update(tasks)
            .where(tasks.c.run_id.in_(list(run_ids)), tasks.c.status.in_(_LIVE))
            .values(status=TaskStatus.CANCELLED.value, updated_at=now)
        )

    def reopen_cancelled(self, run_id: str, now: float) -> None:
        """Reopen the tasks a cancellation closed (in the resumption's unit of work)."""
        self.conn.execute(
            sa.update(tasks)
            .where(tasks.c.run_id == run_id, tasks.c.status == TaskStatus.CANCELLED.value)
            .values(status=TaskStatus.OPEN.value, assignee=None, claimed_at=None, updated_at=now)
        )

    # -- reads --------------------------------------------------------------------------------

    def get(self, task_id: str, *, tenant: str | None = None) -> Task:
        """The task (TaskNotFoundError if unknown, or of another ``tenant``)."""
        row = self.conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one_or_none()
        if row is None or (tenant is not None and row.tenant != tenant):
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        return task_of(row)

    def find(
        self,
        tenant: str,
        *,
        status: Sequence[TaskStatus] | None = None,
        queue: str | None = None,
        assignee: str | None = None,
        roles: Iterable[str] | None = None,
        run_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks of ``tenant`` in inbox order: highest priority first, then oldest."""
        query = sa.select(tasks).where(tasks.c.tenant == tenant)
        if status:
            query = query.where(tasks.c.status.in_([TaskStatus(s).value for s in status]))
        if queue is not None:
            query = query.where(tasks.c.queue == queue)
        if assignee is not None:
            query = query.where(tasks.c.assignee == assignee)
        if roles is not None:
            query = query.where(tasks.c.role.in_(list(roles)))
        if run_id is not None:
            query = query.where(tasks.c.run_id == run_id)
        query = (
            query.order_by(tasks.c.priority.desc(), tasks.c.created_at, tasks.c.task_id)
            .limit(limit)
            .offset(offset)
        )
        return [task_of(row) for row in self.conn.execute(query)]

    def count_live(self, tenant: str) -> dict[tuple[str, str], int]:
        """Live (open or claimed) tasks per (queue, status)."""
        query = (
            sa.select(tasks.c.queue, tasks.c.status, sa.func.count())
            .where(tasks.c.tenant == tenant, tasks.c.status.in_(_LIVE))
            .group_by(tasks.c.queue, tasks.c.status)
        )
        return {(q, s): int(n) for q, s, n in self.conn.execute(query)}

    def find_feedback(
        self,
        tenant: str,
        *,
        model: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Feedback]:
        """The tenant's feedback records, oldest first."""
        query = sa.select(feedback).where(feedback.c.tenant == tenant)
        if model is not None:
            query = query.where(feedback.c.model == model)
        if workflow is not None:
            query = query.where(feedback.c.workflow == workflow)
        if since is not None:
            query = query.where(feedback.c.decided_at >= since)
        query = query.order_by(feedback.c.id).limit(limit).offset(offset)
        return [feedback_of(row) for row in self.conn.execute(query)]

    # -- a person's actions ------------------------------------------------------------------

    def _change(
        self,
        task_id: str,
        tenant: str,
        condition: Any,
        values: dict[str, Any],
        refuse: Callable[[Task], TaskConflictError],
    ) -> Task:
        """Apply ``values`` if the task matches ``condition``; otherwise explain why not."""
        result = self.conn.execute(
            sa.update(tasks)
            .where(tasks.c.task_id == task_id, tasks.c.tenant == tenant, condition)
            .values(**values)
        )
        task = self.get(task_id, tenant=tenant)
        if result.rowcount != 1:
            raise refuse(task)
        return task

    def claim(self, task_id: str, tenant: str, actor: str, now: float) -> Task:
        """OPEN -> CLAIMED by ``actor``."""
        return self._change(
            task_id,
            tenant,
            tasks.c.status == TaskStatus.OPEN.value,
            {"status": "CLAIMED", "assignee": actor, "claimed_at": now, "updated_at": now},
            lambda t: refusal(t, actor),
        )

    def claim_next(
        self, tenant: str, actor: str, roles: Sequence[str], queue: str | None, now: float
    ) -> Task | None:
        """Claim the first OPEN task in inbox order that ``roles`` may work; None if none.

        A candidate another reviewer takes first is skipped (SKIP LOCKED on PostgreSQL); if
        one is still lost to a concurrent claim this raises TaskConflictError, and the
        caller tries again in a new unit of work.
        """
        query = sa.select(tasks.c.task_id).where(
            tasks.c.tenant == tenant,
            tasks.c.status == TaskStatus.OPEN.value,
            tasks.c.role.in_(list(roles)),
        )
        if queue is not None:
            query = query.where(tasks.c.queue == queue)
        query = query.order_by(tasks.c.priority.desc(), tasks.c.created_at, tasks.c.task_id).limit(
            1
        )
        if self.uow.store.dialect.skip_locked:
            query = query.with_for_update(skip_locked=True)
        task_id = self.conn.execute(query).scalar_one_or_none()
        if task_id is None:
            return None
        return self._change(
            task_id,
            tenant,
            tasks.c.status == TaskStatus.OPEN.value,
            {"status": "CLAIMED", "assignee": actor, "claimed_at": now, "updated_at": now},
            lambda t: refusal(t, actor),
        )

    def release(
        self, task_id: str, tenant: str, actor: str, now: float, *, anyone: bool = False
    ) -> Task:
        """CLAIMED by ``actor`` (or by anyone, for an operator) -> OPEN."""
        condition = tasks.c.status == TaskStatus.CLAIMED.value
        if not anyone:
            condition = sa.and_(condition, tasks.c.assignee == actor)
        return self._change(
            task_id,
            tenant,
            condition,
            {"status": "OPEN", "assignee": None, "claimed_at": None, "updated_at": now},
            lambda t: refusal(t, actor, releasing=True),
        )

    def reassign(
        self,
        task_id: str,
        tenant: str,
        now: float,
        *,
        queue: str | None,
        assignee: str | None,
    ) -> Task:
        """Move a live task to another queue and/or person (``assignee`` claims it for them;
        None leaves it OPEN for anyone in its queue)."""
        values: dict[str, Any] = {"updated_at": now, "assignee": assignee}
        values.update(
            {"status": "CLAIMED", "claimed_at": now}
            if assignee is not None
            else {"status": "OPEN", "claimed_at": None}
        )
        if queue is not None:
            values["queue"] = queue
        return self._change(
            task_id,
            tenant,
            tasks.c.status.in_(_LIVE),
            values,
            lambda t: TaskConflictError(t.task_id, t.status.value, "it is closed"),
        )

    def submit(
        self,
        task_id: str,
        tenant: str,
        actor: str,
        result_json: str,
        overridden: bool,
        now: float,
    ) -> tuple[Task, Feedback]:
        """Record a decision on a task OPEN, or CLAIMED by ``actor``, and its feedback
        record (the prediction, the decision and their lineage)."""
        task = self._change(
            task_id,
            tenant,
            sa.or_(
                tasks.c.status == TaskStatus.OPEN.value,
                sa.and_(tasks.c.status == TaskStatus.CLAIMED.value, tasks.c.assignee == actor),
            ),
            {
                "status": "SUBMITTED",
                "assignee": actor,
                "result": result_json,
                "submitted_by": actor,
                "submitted_at": now,
                "updated_at": now,
            },
            lambda t: refusal(t, actor),
        )
        values = {
            "tenant": tenant,
            "task_id": task.task_id,
            "run_id": task.run_id,
            "workflow": task.workflow,
            "seq": task.seq,
            "model": task.model,
            "model_version": task.model_version,
            "input_digest": task.input_digest,
            "call_id": task.call_id,
            "suggestion": None if task.suggestion is None else codec.encode(task.suggestion, ""),
            "confidence": task.confidence,
            "decision": result_json,
            "overridden": int(overridden),
            "reviewer": actor,
            "asked_at": task.created_at,
            "decided_at": now,
            "purpose": task.purpose,
            "unbiased": int(task.unbiased),
        }
        inserted = self.conn.execute(feedback.insert().returning(feedback.c.id), values)
        record = Feedback(id=int(inserted.scalar_one()), **_feedback_fields(values))
        return task, record

    # -- escalation ---------------------------------------------------------------------------

    def overdue(self, now: float, *, limit: int = 100) -> list[tuple[str, str, int]]:
        """``(task_id, tenant, level)`` of live tasks past their SLA with an escalation
        left, of every tenant, most overdue first."""
        c = tasks.c
        rows = self.conn.execute(
            sa.select(c.task_id, c.tenant, _level())
            .where(c.status.in_(_LIVE), c.due_at <= now, _level() < _escalations())
            .order_by(c.due_at)
            .limit(limit)
        )
        return [(str(task_id), str(tenant), int(level)) for task_id, tenant, level in rows]

    def escalate(self, task_id: str, tenant: str, level: int, now: float) -> Task | None:
        """Escalate a task from ``level`` one level: back to OPEN in the next queue of its
        chain (its own if none), ahead of every task escalated fewer times; a level with
        another after it gives the task a new SLA. None if it is no longer at ``level``
        (a sweep on another host got here first) or no longer live."""
        c = tasks.c
        task = self.get(task_id, tenant=tenant)
        chain = task.escalation_chain
        queue = chain[level] if level < len(chain) else task.queue
        last = level + 1 >= task.escalations
        result = self.conn.execute(
            sa.update(tasks)
            .where(c.task_id == task_id, c.status.in_(_LIVE), _level() == level)
            .values(
                status="OPEN",
                assignee=None,
                claimed_at=None,
                queue=queue,
                priority=c.priority + ESCALATION_BOOST,
                escalated_at=now,
                escalation_level=level + 1,
                # The next level's SLA starts now; past the last, it stays overdue.
                due_at=c.due_at if last or task.sla_seconds is None else now + task.sla_seconds,
                updated_at=now,
            )
        )
        if result.rowcount != 1:
            return None
        return self.get(task_id, tenant=tenant)


def _feedback_fields(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    out["suggestion"] = _json(values["suggestion"])
    out["decision"] = codec.decode(values["decision"])
    out["overridden"] = bool(values["overridden"])
    out["unbiased"] = bool(values["unbiased"])
    return out


def refusal(task: Task, actor: str, *, releasing: bool = False) -> TaskConflictError:
    """Why ``actor`` may not do what they asked to ``task``, as the error to raise."""
    status = task.status.value
    if task.status is TaskStatus.SUBMITTED:
        return TaskConflictError(task.task_id, status, "it was already submitted")
    if task.status is TaskStatus.CANCELLED:
        return TaskConflictError(task.task_id, status, "its run was cancelled")
    if task.status is TaskStatus.EXPIRED:
        return TaskConflictError(task.task_id, status, "nobody decided it in time")
    if task.status is TaskStatus.CLAIMED and task.assignee != actor:
        return TaskConflictError(task.task_id, status, "another person claimed it")
    if releasing:
        return TaskConflictError(task.task_id, status, "it is not claimed by you")
    return TaskConflictError(task.task_id, status, "its state does not allow this")
