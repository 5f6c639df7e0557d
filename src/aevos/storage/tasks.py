"""Human tasks and feedback records: a mixin of :class:`~aevos.storage.store.Store`.

Every state change is one conditional UPDATE (``WHERE status = ...``), so two reviewers
racing for a task, or a submission racing a cancellation, cannot both win on either
backend; the loser gets :class:`TaskConflictError` and nothing changes. A submission
writes the task, its feedback record, its audit record and the run's wake-up in one
transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import codec
from ..errors import AevosError, TaskConflictError, TaskNotFoundError
from ..records.task import ESCALATION_BOOST, Feedback, Form, Task, TaskStatus
from .schema import feedback, steps, tasks

if TYPE_CHECKING:
    from .dialect import Dialect
    from .store import StepRecord

_LIVE = (TaskStatus.OPEN.value, TaskStatus.CLAIMED.value)
log = logging.getLogger("aevos.tasks")
Also = Callable[[Connection, Task], object]


def _json(text: str | None) -> Any:
    return None if text is None else codec.decode(text)


def task_of(row: Any) -> Task:
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
        form=Form.from_list(codec.decode(row.form)),
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
    )


class Tasks:
    if TYPE_CHECKING:
        dialect: Dialect

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _fence(self, conn: Connection, run_id: str, owner: str, now: float) -> bool: ...

        def _wake(self, conn: Connection, run_id: str, now: float) -> None: ...

        def _step_values(
            self, run_id: str, step: StepRecord, text: str | None, ref: str | None
        ) -> dict[str, Any]: ...

        def _value(self, conn: Connection, text: str | None) -> tuple[str | None, str | None]: ...

    # -- creation and the run's side ---------------------------------------------------------

    @staticmethod
    def insert_task(conn: Connection, values: dict[str, Any]) -> None:
        """Insert a task row inside the caller's transaction (the step that asked)."""
        conn.execute(tasks.insert(), values)

    def take_task_outcome(
        self,
        run_id: str,
        owner: str,
        task_id: str,
        deadline: float,
        record: Callable[[Task, float], StepRecord | None],
        also: Also | None = None,
    ) -> tuple[Task, StepRecord | None]:
        """Record the task's outcome as the run's next step, if it has one.

        ``record(task, now)`` builds the step for a SUBMITTED task, or for one past
        ``deadline`` (which this marks EXPIRED first, with ``also``); None means keep
        waiting. Raises :class:`LeaseLost` if ``owner`` no longer holds the run.
        """
        from .signals import LeaseLost

        now = time.time()
        with self._tx() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one_or_none()
            if row is None:
                raise TaskNotFoundError(f"no task with id {task_id!r}")
            task = task_of(row)
            if task.status in (TaskStatus.OPEN, TaskStatus.CLAIMED) and now >= deadline:
                expired = conn.execute(
                    sa.update(tasks)
                    .where(tasks.c.task_id == task_id, tasks.c.status.in_(_LIVE))
                    .values(status=TaskStatus.EXPIRED.value, updated_at=now)
                )
                if expired.rowcount == 1:
                    task = task_of(
                        conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one()
                    )
                    if also is not None:
                        also(conn, task)
                else:  # submitted in between: take the submission
                    task = task_of(
                        conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one()
                    )
            step = record(task, now)
            if step is None:
                return task, None
            if not self._fence(conn, run_id, owner, now):
                raise LeaseLost(run_id)
            text, ref = self._value(conn, step.output_json)
            conn.execute(steps.insert(), self._step_values(run_id, step, text, ref))
            return task, step

    # -- reads --------------------------------------------------------------------------------

    def get_task(self, task_id: str, *, tenant: str | None = None) -> Task:
        with self._read() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one_or_none()
        if row is None or (tenant is not None and row.tenant != tenant):
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        return task_of(row)

    def list_tasks(
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
        with self._read() as conn:
            return [task_of(row) for row in conn.execute(query)]

    def count_tasks(self, tenant: str) -> dict[tuple[str, str], int]:
        """Live (open or claimed) tasks per (queue, status)."""
        query = (
            sa.select(tasks.c.queue, tasks.c.status, sa.func.count())
            .where(tasks.c.tenant == tenant, tasks.c.status.in_(_LIVE))
            .group_by(tasks.c.queue, tasks.c.status)
        )
        with self._read() as conn:
            return {(q, s): int(n) for q, s, n in conn.execute(query)}

    def list_feedback(
        self,
        tenant: str,
        *,
        model: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Feedback]:
        query = sa.select(feedback).where(feedback.c.tenant == tenant)
        if model is not None:
            query = query.where(feedback.c.model == model)
        if workflow is not None:
            query = query.where(feedback.c.workflow == workflow)
        if since is not None:
            query = query.where(feedback.c.decided_at >= since)
        query = query.order_by(feedback.c.id).limit(limit).offset(offset)
        with self._read() as conn:
            return [feedback_of(row) for row in conn.execute(query)]

    # -- a person's actions ------------------------------------------------------------------

    def _change(
        self,
        conn: Connection,
        task_id: str,
        tenant: str,
        condition: Any,
        values: dict[str, Any],
        refuse: Callable[[Task], TaskConflictError],
    ) -> Task:
        """Apply ``values`` if the task matches ``condition``; otherwise explain why not."""
        result = conn.execute(
            sa.update(tasks)
            .where(tasks.c.task_id == task_id, tasks.c.tenant == tenant, condition)
            .values(**values)
        )
        row = conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one_or_none()
        if row is None or row.tenant != tenant:
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        task = task_of(row)
        if result.rowcount != 1:
            raise refuse(task)
        return task

    def claim_task(self, task_id: str, tenant: str, actor: str, also: Also) -> Task:
        """OPEN -> CLAIMED by ``actor``; claiming one's own claimed task again is a no-op."""
        now = time.time()
        with self._tx() as conn:
            current = self._row(conn, task_id, tenant)
            if current.status is TaskStatus.CLAIMED and current.assignee == actor:
                return current
            task = self._change(
                conn,
                task_id,
                tenant,
                tasks.c.status == TaskStatus.OPEN.value,
                {"status": "CLAIMED", "assignee": actor, "claimed_at": now, "updated_at": now},
                lambda t: _refusal(t, actor),
            )
            also(conn, task)
            return task

    def claim_next(
        self, tenant: str, actor: str, roles: Sequence[str], queue: str | None, also: Also
    ) -> Task | None:
        """Claim the first OPEN task in inbox order that ``roles`` may work; None if none.

        Candidates another reviewer takes first are skipped (SKIP LOCKED on PostgreSQL, a
        lost conditional update on SQLite), so many reviewers pressing "next" at once each
        get a different task.
        """
        for _ in range(20):
            now = time.time()
            with self._tx() as conn:
                query = sa.select(tasks.c.task_id).where(
                    tasks.c.tenant == tenant,
                    tasks.c.status == TaskStatus.OPEN.value,
                    tasks.c.role.in_(list(roles)),
                )
                if queue is not None:
                    query = query.where(tasks.c.queue == queue)
                query = query.order_by(
                    tasks.c.priority.desc(), tasks.c.created_at, tasks.c.task_id
                ).limit(1)
                if self.dialect.skip_locked:
                    query = query.with_for_update(skip_locked=True)
                task_id = conn.execute(query).scalar_one_or_none()
                if task_id is None:
                    return None
                result = conn.execute(
                    sa.update(tasks)
                    .where(tasks.c.task_id == task_id, tasks.c.status == TaskStatus.OPEN.value)
                    .values(status="CLAIMED", assignee=actor, claimed_at=now, updated_at=now)
                )
                if result.rowcount == 1:
                    task = self._row(conn, task_id, tenant)
                    also(conn, task)
                    return task
        return None

    def release_task(
        self, task_id: str, tenant: str, actor: str, also: Also, *, anyone: bool = False
    ) -> Task:
        """CLAIMED by ``actor`` (or by anyone, for an operator) -> OPEN."""
        now = time.time()
        condition = tasks.c.status == TaskStatus.CLAIMED.value
        if not anyone:
            condition = sa.and_(condition, tasks.c.assignee == actor)
        with self._tx() as conn:
            task = self._change(
                conn,
                task_id,
                tenant,
                condition,
                {"status": "OPEN", "assignee": None, "claimed_at": None, "updated_at": now},
                lambda t: _refusal(t, actor, releasing=True),
            )
            also(conn, task)
            return task

    def reassign_task(
        self,
        task_id: str,
        tenant: str,
        *,
        queue: str | None,
        assignee: str | None,
        also: Also,
    ) -> Task:
        """Move a live task to another queue and/or person (``assignee`` claims it for them;
        None leaves it OPEN for anyone in its queue)."""
        now = time.time()
        values: dict[str, Any] = {"updated_at": now, "assignee": assignee}
        values.update(
            {"status": "CLAIMED", "claimed_at": now}
            if assignee is not None
            else {"status": "OPEN", "claimed_at": None}
        )
        if queue is not None:
            values["queue"] = queue
        with self._tx() as conn:
            task = self._change(
                conn,
                task_id,
                tenant,
                tasks.c.status.in_(_LIVE),
                values,
                lambda t: TaskConflictError(t.task_id, t.status.value, "it is closed"),
            )
            also(conn, task)
            return task

    def submit_task(
        self,
        task_id: str,
        tenant: str,
        actor: str,
        result_json: str,
        overridden: bool,
        also: Callable[[Connection, Task, Feedback], object],
    ) -> tuple[Task, Feedback]:
        """Record a decision: the task, its feedback record, ``also`` (the audit record) and
        the run's wake-up commit together, or nothing does."""
        now = time.time()
        with self._tx() as conn:
            task = self._change(
                conn,
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
                lambda t: _refusal(t, actor),
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
                "suggestion": None
                if task.suggestion is None
                else codec.encode(task.suggestion, ""),
                "confidence": task.confidence,
                "decision": result_json,
                "overridden": int(overridden),
                "reviewer": actor,
                "asked_at": task.created_at,
                "decided_at": now,
            }
            inserted = conn.execute(feedback.insert().returning(feedback.c.id), values)
            record = Feedback(id=int(inserted.scalar_one()), **_feedback_fields(values))
            self._wake(conn, task.run_id, now)
            also(conn, task, record)
            return task, record

    def escalate_overdue(self, now: float, also: Also, *, limit: int = 100) -> list[Task]:
        """Escalate live tasks past their SLA one level each: back to OPEN in the next queue
        of their chain (their own if none), ahead of every task escalated fewer times; a
        level with another after it gives the task a new SLA."""
        done: list[Task] = []
        c = tasks.c
        with self._read() as conn:
            due = list(
                conn.execute(
                    sa.select(c.task_id, c.tenant, _level())
                    .where(c.status.in_(_LIVE), c.due_at <= now, _level() < _escalations())
                    .order_by(c.due_at)
                    .limit(limit)
                )
            )
        for task_id, tenant, level in due:
            try:
                escalated = self._escalate_one(task_id, tenant, level, now, also)
            except AevosError as exc:
                # One task that cannot be escalated must not hold up every other tenant's.
                log.error("escalating task %s failed: %s", task_id, exc.code)
                continue
            if escalated is not None:
                done.append(escalated)
        return done

    def _escalate_one(
        self, task_id: str, tenant: str, level: int, now: float, also: Also
    ) -> Task | None:
        c = tasks.c
        with self._tx() as conn:
            task = self._row(conn, task_id, tenant)
            chain = task.escalation_chain
            queue = chain[level] if level < len(chain) else task.queue
            last = level + 1 >= task.escalations
            result = conn.execute(
                sa.update(tasks)
                .where(
                    c.task_id == task_id,
                    c.status.in_(_LIVE),
                    _level() == level,  # else a sweep on another host got here first
                )
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
            task = self._row(conn, task_id, tenant)
            also(conn, task)
            return task

    @staticmethod
    def cancel_tasks(conn: Connection, run_ids: Sequence[str], now: float) -> None:
        """Close the live tasks of cancelled runs (inside the cancellation's transaction)."""
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.run_id.in_(list(run_ids)), tasks.c.status.in_(_LIVE))
            .values(status=TaskStatus.CANCELLED.value, updated_at=now)
        )

    @staticmethod
    def reopen_cancelled_tasks(conn: Connection, run_id: str, now: float) -> None:
        """Reopen the tasks a cancellation closed (inside the resumption's transaction)."""
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.run_id == run_id, tasks.c.status == TaskStatus.CANCELLED.value)
            .values(status=TaskStatus.OPEN.value, assignee=None, claimed_at=None, updated_at=now)
        )

    @staticmethod
    def _row(conn: Connection, task_id: str, tenant: str) -> Task:
        row = conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).one_or_none()
        if row is None or row.tenant != tenant:
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        return task_of(row)


def _feedback_fields(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    out["suggestion"] = _json(values["suggestion"])
    out["decision"] = codec.decode(values["decision"])
    out["overridden"] = bool(values["overridden"])
    return out


def _refusal(task: Task, actor: str, *, releasing: bool = False) -> TaskConflictError:
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
