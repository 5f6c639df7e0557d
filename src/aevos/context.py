"""The workflow context: how a workflow body talks to the kernel.

Every interaction with the outside world goes through a numbered position (``seq``) in the
run's history. Executing a run is replaying it: positions already recorded return their
recorded value without running anything; the first unrecorded position runs for real and
is committed before the workflow moves on. A position holding a different step than the
code now asks for means the code changed incompatibly, and the run stops with
:class:`ReplayMismatchError` instead of guessing.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import codec
from .errors import (
    DefinitionError,
    ReplayMismatchError,
    RunCancelledError,
    RunFailedError,
    TaskConflictError,
    TaskExpiredError,
)
from .identity import ROLE_PERMISSIONS, Permission, Role
from .run import NewRun, StepInfo
from .status import RunStatus
from .step import step_error
from .storage import LeaseLost, StepRecord, UnitOfWork
from .task import (
    MAX_ESCALATIONS,
    MAX_PRIORITY,
    Field,
    Form,
    HumanDecision,
    Task,
    TaskRequest,
    TaskStatus,
    overridden,
)

if TYPE_CHECKING:
    from .app import Aevos
    from .audit import AuditEvent
    from .models.gateway import CallResult
    from .policy import Decision
    from .workflow import Workflow

T = TypeVar("T")

# The two positions of ctx.ask_human: the task's creation, and the person's decision.
TASK_STEP = "aevos.task"
DECISION_STEP = "aevos.decision"

# Longest a wait without a deadline may last; JSON has no infinity.
_FOREVER = 100 * 365 * 24 * 3600.0


class Suspend(BaseException):
    """Unwinds a workflow that parks until ``wake_at``.

    A BaseException so that a workflow's ``except Exception`` cannot swallow it.
    """

    def __init__(self, wake_at: float) -> None:
        super().__init__(wake_at)
        self.wake_at = wake_at


class Cancelled(BaseException):
    """Unwinds a workflow whose run was cancelled or taken over by another executor."""


class WorkflowContext:
    """Passed as the first argument to every workflow function."""

    def __init__(
        self,
        app: Aevos,
        run_id: str,
        workflow: str,
        owner: str,
        code_version: str,
        recorded_version: str,
        history: dict[int, StepInfo],
        can_park: bool,
        cancel: threading.Event,
        executions: int = 1,
        tenant: str = "default",
    ) -> None:
        self.app = app
        self.run_id = run_id
        self.workflow = workflow
        self.tenant = tenant
        self.executions = executions
        self._owner = owner
        self._code_version = code_version
        self._recorded_version = recorded_version
        self._history = history
        self._can_park = can_park
        self._cancel = cancel
        self._seq = -1
        self._seq_pending = -1
        self._pending: StepRecord | None = None
        self.fatal: BaseException | None = None

    # -- internals used by steps ------------------------------------------------------------

    def _begin_step(self, name: str) -> tuple[int, StepInfo | None]:
        if self._pending is not None:
            # The previous step's result becomes durable before anything else can happen.
            self._flush()
        self._seq += 1
        seq = self._seq
        recorded = self._history.get(seq)
        if recorded is not None:
            if recorded.name != name:
                error = ReplayMismatchError(
                    self.run_id,
                    seq,
                    recorded.name,
                    name,
                    self._recorded_version,
                    self._code_version,
                )
                # Remembered so that a workflow catching it cannot carry on regardless.
                self.fatal = error
                raise error
            return seq, recorded
        if self._cancel.is_set():
            raise Cancelled()
        return seq, None

    def _replay_value(self, recorded: StepInfo) -> Any:
        if recorded.status == "FAILED":
            raise step_error(recorded.name, recorded.seq, recorded.error or {})
        return recorded.output

    def _defer(self, record: StepRecord, output: Any) -> None:
        """Record a step result, committed before the next durable operation begins or in the
        same transaction as the run's completion, whichever comes first.

        Between a step's return and that point the workflow only runs its own deterministic
        code, so nothing observable happens in between; for the last step of a run this saves
        one commit. A crash in that window re-runs the step, as a crash just before its
        commit would.
        """
        self._pending = record
        self._remember(record, output)

    def _flush(self) -> None:
        record, self._pending = self._pending, None
        if record is not None:
            self._write(record)

    def take_pending(self) -> StepRecord | None:
        """The deferred step result, for the executor to commit with the run's completion."""
        record, self._pending = self._pending, None
        return record

    def _commit(self, record: StepRecord, output: Any = None) -> None:
        self._write(record)
        self._remember(record, output)

    def _remember(self, record: StepRecord, output: Any) -> None:
        self._history[record.seq] = StepInfo(
            self.run_id,
            record.seq,
            record.name,
            record.status,
            output,
            record.error,
            record.attempts,
            record.started_at,
            record.finished_at,
        )

    def _write(self, record: StepRecord) -> None:
        try:
            self.app.store.record_step(self.run_id, self._owner, record)
        except LeaseLost:
            raise Cancelled() from None

    def _record(self, name: str, produce: Callable[[], Any]) -> Any:
        """A kernel-internal step: run ``produce`` once, replay its value ever after."""
        seq, recorded = self._begin_step(name)
        if recorded is not None:
            return self._replay_value(recorded)
        started = time.time()
        value = produce()
        self._commit(
            StepRecord(
                seq, name, "SUCCEEDED", codec.encode(value, name), None, 1, started, time.time()
            )
        )
        return value

    def _pause(self, seconds: float) -> None:
        if self._cancel.wait(seconds):
            raise Cancelled()

    async def _pause_async(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while (remaining := deadline - time.time()) > 0:
            if self._cancel.is_set():
                raise Cancelled()
            await asyncio.sleep(min(remaining, 0.25))

    # -- policy -----------------------------------------------------------------------------

    def decide(self, policy: str, /, **inputs: Any) -> Decision:
        """Evaluate ``policy`` on ``inputs`` at this position of the run.

        The decision is recorded as the position's result (a replay returns the same decision,
        even if the policy file changed since) and appended to the audit log in the same
        transaction, with the input's digest, never the input.
        """
        from .audit import AuditEvent
        from .policy import Decision

        name = f"aevos.decide:{policy}"
        seq, recorded = self._begin_step(name)
        if recorded is not None:
            return Decision.from_record(self._replay_value(recorded))
        started = time.time()
        decision = self.app.policies.evaluate(policy, inputs)
        record = decision.to_record()
        event = AuditEvent(
            action="policy.decided",
            actor=f"system:workflow/{self.workflow}",
            tenant=self.tenant,
            subject=f"policy:{decision.policy}@{decision.version}",
            run_id=self.run_id,
            data={**record, "seq": seq},
        )
        self._commit_audited(seq, name, record, event, started)
        return decision

    def _commit_audited(
        self, seq: int, name: str, output: Any, event: AuditEvent, started: float
    ) -> None:
        """Record ``output`` at ``seq`` and append ``event``, in one transaction."""
        step = StepRecord(
            seq, name, "SUCCEEDED", codec.encode(output, name), None, 1, started, time.time()
        )
        try:
            self.app.store.record_step_with(
                self.run_id, self._owner, step, lambda uow: self.app.audit.append(event, uow=uow)
            )
        except LeaseLost:
            raise Cancelled() from None
        self._history[seq] = StepInfo(
            self.run_id, seq, name, "SUCCEEDED", output, None, 1, started, step.finished_at
        )

    def redact(
        self, value: T, *, fields: list[str] | None = None, kinds: list[str] | None = None
    ) -> T:
        """``value`` with personal data replaced by ``<KIND>`` placeholders, recorded.

        Only the redacted value is recorded at this position, so what a model or a log sees
        downstream is reproducible on replay. ``fields`` limits it to dotted paths (as a
        ``model_call`` policy's ``redact`` list names them); ``kinds`` to some kinds.
        """

        def produce() -> Any:
            return self.app.redactor.redact_value(value, fields=fields, kinds=kinds)

        return cast(T, self._record("aevos.redact", produce))

    def tokenize(self, text: str, *, kinds: list[str] | None = None) -> str:
        """``text`` with personal data replaced by reversible tokens (``<EMAIL:tok_...>``),
        recorded. The originals go to the tenant's encrypted vault; only principals allowed
        ``pii:reveal`` get them back, through :meth:`Access.reveal`."""

        def produce() -> str:
            redaction = self.app.redactor.tokenize(
                text, tenant=self.tenant, vault=self.app.vault, kinds=kinds
            )
            return redaction.text

        return str(self._record("aevos.tokenize", produce))

    def reveal(self, value: T) -> T:
        """``value`` (a string or JSON-like value) with this tenant's PII tokens replaced by
        the original values, for code that must act on them (e-mail the customer).

        The workflow's data policy must allow it (``DataPolicy(reveal=True)``), else
        :class:`~aevos.errors.PiiAccessDeniedError`. Each call is a recorded position,
        audited as ``pii.revealed`` with the number of tokens, never the values; the values
        are not recorded either: a replay reads them from the vault again, so a replay after
        an erasure fails (:class:`~aevos.errors.PiiTokenNotFoundError`) instead of bringing
        them back. Pass what you reveal to steps; do not return it, or it is stored.
        """
        from .audit import AuditEvent
        from .errors import PiiAccessDeniedError
        from .pii.datapolicy import reveal_value

        if not self.app.data_policy_of(self.workflow).reveal:
            raise PiiAccessDeniedError(
                f"workflow {self.workflow!r} may not reveal personal data: declare "
                "@app.workflow(data_policy=DataPolicy(..., reveal=True)) to allow it"
            )
        name = "aevos.reveal"
        seq, recorded = self._begin_step(name)
        app = self.app

        def read() -> tuple[Any, int]:
            return reveal_value(
                value, tenant=self.tenant, vault=lambda: app.vault, allowed=True, strict=True
            )

        if recorded is not None:
            self._replay_value(recorded)
            return cast(T, read()[0])
        started = time.time()
        revealed, tokens = read()
        event = AuditEvent(
            action="pii.revealed",
            actor=f"system:workflow/{self.workflow}",
            tenant=self.tenant,
            subject=f"run:{self.run_id}",
            run_id=self.run_id,
            data={"tokens": tokens, "seq": seq},
        )
        self._commit_audited(seq, name, {"tokens": tokens}, event, started)
        return cast(T, revealed)

    # -- models -----------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        input: Any,
        *,
        key: str | int | None = None,
        timeout: float | None = None,
        classification: str | None = None,
        bypass_policy: str | None = None,
    ) -> CallResult:
        """Call ``model`` through the gateway as a durable step of this run.

        Routed (canary sticky by ``key``, shadow, cascade, fallbacks), governed (the
        ``model_call`` policy that applies to the model, which may refuse the call or
        redact fields first; budgets and rate limits of this tenant and workflow; circuit
        breakers) and recorded: the result is this position's value, committed with its
        ``policy.decided`` and ``model.called`` audit records, so a replay returns it
        without calling the model or spending budget again.

        ``classification`` is the policy's ``data.classification`` (default: the
        workflow's data policy's). ``bypass_policy="why"`` skips the ``model_call`` policy
        for this call; the reason is audited (``policy.bypassed``).
        """
        if classification is None:
            classification = self.app.data_policy_of(self.workflow).classification
        return self.app.gateway.predict_step(
            self,
            model,
            input,
            key=key,
            timeout=timeout,
            classification=classification,
            bypass_policy=bypass_policy,
        )

    # -- durable time -----------------------------------------------------------------------

    def now(self) -> float:
        """The current time (epoch seconds), recorded: a replay sees the same value."""
        return float(self._record("aevos.now", time.time))

    def uuid4(self) -> str:
        """A random UUID, recorded: a replay sees the same value."""
        return str(self._record("aevos.uuid4", lambda: str(uuid.uuid4())))

    def _sleep_until(self, seconds: float) -> float:
        wake_at = float(self._record("aevos.sleep", lambda: time.time() + max(0.0, seconds)))
        remaining = wake_at - time.time()
        if remaining > 0 and self._can_park and remaining > self.app.park_after:
            raise Suspend(wake_at)
        return max(0.0, remaining)

    def sleep(self, seconds: float) -> None:
        """Sleep durably: a restart mid-sleep wakes at the originally recorded time.

        Under a worker, sleeps longer than ``app.park_after`` release the worker's thread and
        park the run in the database until it is due (days are fine).
        """
        self._pause(self._sleep_until(seconds))

    async def sleep_async(self, seconds: float) -> None:
        await self._pause_async(self._sleep_until(seconds))

    # -- signals ----------------------------------------------------------------------------

    def send_signal(self, run_id: str, topic: str, payload: Any = None) -> None:
        """Send ``payload`` to another run's ``topic``, exactly once across replays."""
        text = codec.encode(payload, f"signal payload for topic {topic!r}")

        def send() -> None:
            self.app.send_signal(run_id, topic, codec.decode(text))

        self._record(f"aevos.send:{topic}", send)

    def _signal_attempt(self, topic: str, timeout: float | None) -> tuple[bool, Any, float]:
        deadline = float(
            self._record("aevos.deadline", lambda: time.time() + (timeout or _FOREVER))
        )
        name = f"aevos.signal:{topic}"
        seq, recorded = self._begin_step(name)
        if recorded is not None:
            return True, self._replay_value(recorded), deadline
        self._seq_pending = seq
        return False, None, deadline

    def _signal_poll(self, topic: str, deadline: float, started: float) -> tuple[bool, Any]:
        seq = self._seq_pending
        name = f"aevos.signal:{topic}"
        try:
            taken, payload = self.app.store.consume_signal(
                self.run_id, self._owner, seq, name, topic, started
            )
        except LeaseLost:
            raise Cancelled() from None
        if taken:
            self._history[seq] = StepInfo(
                self.run_id, seq, name, "SUCCEEDED", payload, None, 1, started, time.time()
            )
            return True, payload
        now = time.time()
        if now >= deadline:
            self._commit(StepRecord(seq, name, "SUCCEEDED", "null", None, 1, started, now))
            return True, None
        if self._can_park and deadline - now > self.app.park_after:
            raise Suspend(deadline)
        return False, None

    def wait_signal(self, topic: str, timeout: float | None = None) -> Any:
        """Wait durably for a signal sent to this run on ``topic``; None on timeout."""
        done, value, deadline = self._signal_attempt(topic, timeout)
        started = time.time()
        while not done:
            done, value = self._signal_poll(topic, deadline, started)
            if not done:
                arrived = self.app._signal_arrived(self.run_id)
                arrived.wait(min(self.app.poll_interval, max(0.0, deadline - time.time())))
                arrived.clear()
                if self._cancel.is_set():
                    raise Cancelled()
        return value

    async def wait_signal_async(self, topic: str, timeout: float | None = None) -> Any:
        done, value, deadline = self._signal_attempt(topic, timeout)
        started = time.time()
        while not done:
            done, value = self._signal_poll(topic, deadline, started)
            if not done:
                await self._pause_async(
                    min(self.app.poll_interval, max(0.0, deadline - time.time()))
                )
        return value

    # -- people ----------------------------------------------------------------------------

    def ask_human(
        self,
        title: str,
        *,
        form: Form | Sequence[Field],
        case: Any = None,
        suggestion: Mapping[str, Any] | None = None,
        prediction: CallResult | None = None,
        queue: str = "review",
        role: str = "reviewer",
        priority: int = 0,
        sla: float | timedelta | None = None,
        escalate_to: str | Sequence[str] | None = None,
        timeout: float | timedelta | None = None,
    ) -> HumanDecision:
        """Ask a person to decide, and wait durably (for days if need be) until they do.

        Creates a task in ``queue`` for people of ``role`` showing ``case`` and a ``form``
        pre-filled with ``suggestion`` (by default the ``prediction``'s label in the form's
        first field; the prediction also gives the task its confidence and the model
        version its feedback record points at). Past ``sla`` the task escalates: it moves
        to ``escalate_to`` (or stays in its queue) ahead of every task escalated fewer times.
        ``escalate_to`` may name a chain of queues (``["leads", "managers"]``): each time
        another ``sla`` passes undecided, it escalates to the next one. Past
        ``timeout`` it expires and this raises :class:`TaskExpiredError`. Under a worker the
        run is parked in the database while it waits; a submission wakes it.
        """
        request = _task_request(
            title, form, case, suggestion, prediction, queue, role, priority, sla, escalate_to
        )
        task_id, deadline, seq, recorded, started = self._ask(request, timeout)
        while recorded is None:
            recorded = self._poll_answer(seq, task_id, deadline, started)
            if recorded is None:
                arrived = self.app._signal_arrived(self.run_id)
                arrived.wait(min(self.app.poll_interval, max(0.0, deadline - time.time())))
                arrived.clear()
                if self._cancel.is_set():
                    raise Cancelled()
        return self._answer(recorded, task_id)

    async def ask_human_async(
        self,
        title: str,
        *,
        form: Form | Sequence[Field],
        case: Any = None,
        suggestion: Mapping[str, Any] | None = None,
        prediction: CallResult | None = None,
        queue: str = "review",
        role: str = "reviewer",
        priority: int = 0,
        sla: float | timedelta | None = None,
        escalate_to: str | Sequence[str] | None = None,
        timeout: float | timedelta | None = None,
    ) -> HumanDecision:
        """:meth:`ask_human` for ``async`` workflows."""
        request = _task_request(
            title, form, case, suggestion, prediction, queue, role, priority, sla, escalate_to
        )
        task_id, deadline, seq, recorded, started = self._ask(request, timeout)
        while recorded is None:
            recorded = self._poll_answer(seq, task_id, deadline, started)
            if recorded is None:
                await self._pause_async(
                    min(self.app.poll_interval, max(0.0, deadline - time.time()))
                )
        return self._answer(recorded, task_id)

    def _open_task(
        self, request: TaskRequest, timeout: float | timedelta | None
    ) -> tuple[str, float]:
        """Create the task as this position's result, with its audit record, atomically."""
        from .audit import AuditEvent

        # Named without the queue: moving a task to another queue in the code must not break
        # the replay of runs already waiting.
        name = TASK_STEP
        seq, recorded = self._begin_step(name)
        if recorded is not None:
            value = self._replay_value(recorded)
            return str(value["task_id"]), float(value["deadline"])
        started = time.time()
        task_id = f"{self.run_id}.{seq}"
        wait = _seconds(timeout, "timeout")
        deadline = started + (wait if wait is not None else _FOREVER)
        output = {"task_id": task_id, "deadline": deadline}
        event = AuditEvent(
            action="task.created",
            actor=f"system:workflow/{self.workflow}",
            tenant=self.tenant,
            subject=f"task:{task_id}",
            run_id=self.run_id,
            data={
                "queue": request.queue,
                "role": request.role,
                "model_version": request.model_version,
                "call_id": request.call_id,
                "sla_seconds": request.sla_seconds,
                "seq": seq,
            },
        )
        step = StepRecord(
            seq, name, "SUCCEEDED", codec.encode(output, name), None, 1, started, time.time()
        )
        store, audit = self.app.store, self.app.audit
        where = {"tenant": self.tenant, "run_id": self.run_id, "workflow": self.workflow}

        def also(uow: UnitOfWork) -> None:
            uow.tasks.create(request, task_id=task_id, seq=seq, created_at=started, **where)
            audit.append(event, uow=uow)

        try:
            store.record_step_with(self.run_id, self._owner, step, also)
        except LeaseLost:
            raise Cancelled() from None
        self._remember(step, output)
        return task_id, deadline

    def _ask(
        self, request: TaskRequest, timeout: float | timedelta | None
    ) -> tuple[str, float, int, StepInfo | None, float]:
        """The task (created, or found on replay) and the decision's position: its recorded
        value if there is one already."""
        task_id, deadline = self._open_task(request, timeout)
        seq, recorded = self._begin_step(DECISION_STEP)
        return task_id, deadline, seq, recorded, time.time()

    def _poll_answer(
        self, seq: int, task_id: str, deadline: float, started: float
    ) -> StepInfo | None:
        """The task's outcome recorded at ``seq`` if it has one; parks the run if not."""
        from .audit import AuditEvent

        name = DECISION_STEP
        audit = self.app.audit
        actor = f"system:workflow/{self.workflow}"

        def record(task: Task, now: float) -> StepRecord | None:
            if task.status is TaskStatus.SUBMITTED:
                answer = HumanDecision(
                    task_id=task.task_id,
                    values=task.result or {},
                    reviewer=task.submitted_by or "",
                    decided_at=task.submitted_at or now,
                    overridden=overridden(task.suggestion, task.result or {}),
                )
                output = codec.encode(answer.to_dict(), name)
                return StepRecord(seq, name, "SUCCEEDED", output, None, 1, started, now)
            if task.status in (TaskStatus.EXPIRED, TaskStatus.CANCELLED):
                # A cancelled task of a run that is itself cancelled never gets here (the
                # fence refuses the write); one cancelled under a live run fails the wait.
                expired = task.status is TaskStatus.EXPIRED
                error = {
                    "type": "aevos.TaskExpired" if expired else "aevos.TaskCancelled",
                    "message": f"nobody decided task {task.task_id} before its timeout"
                    if expired
                    else f"task {task.task_id} was cancelled",
                    "task_id": task.task_id,
                }
                return StepRecord(seq, name, "FAILED", None, error, 1, started, now)
            return None

        def outcome(uow: UnitOfWork, now: float) -> StepRecord | None:
            task, expired = uow.tasks.take(task_id, deadline, now)
            if expired:
                audit.append(
                    AuditEvent(
                        action="task.expired",
                        actor=actor,
                        tenant=task.tenant,
                        subject=f"task:{task.task_id}",
                        run_id=task.run_id,
                        data={"queue": task.queue},
                    ),
                    uow=uow,
                )
            return record(task, now)

        try:
            step = self.app.store.record_with(self.run_id, self._owner, outcome)
        except LeaseLost:
            raise Cancelled() from None
        if step is not None:
            output = None if step.output_json is None else codec.decode(step.output_json)
            self._remember(step, output)
            return self._history[seq]
        if self._can_park and deadline - time.time() > self.app.park_after:
            # A submission wakes the run (submit_task sets its wake_at).
            raise Suspend(deadline)
        return None

    @staticmethod
    def _answer(recorded: StepInfo, task_id: str) -> HumanDecision:
        if recorded.status == "FAILED":
            error = recorded.error or {}
            if error.get("type") == "aevos.TaskCancelled":
                raise TaskConflictError(
                    str(error.get("task_id", task_id)), "CANCELLED", "it was cancelled"
                )
            raise TaskExpiredError(str(error.get("task_id", task_id)))
        return HumanDecision.from_dict(recorded.output)

    # -- child runs -------------------------------------------------------------------------

    def _child_id(self, seq: int) -> str:
        return f"{self.run_id}.{seq}"

    def start_child(self, workflow: Workflow[..., Any], /, *args: Any, **kwargs: Any) -> str:
        """Enqueue a child run (picked up by any worker) and return its run id.

        Every argument after the workflow is the child's; its queue and priority are given
        with ``ctx.start_child(child.options(queue=..., priority=...), ...)``.
        """
        options = workflow._child_options(enqueued=True)
        workflow._encode_input(args, kwargs)  # refused before anything is recorded

        def start() -> str:
            child_id = self._child_id(self._seq)
            # The child's data policy applies to what the parent hands it.
            input_json, protected = self.app._stored_input(workflow, args, kwargs, self.tenant)
            self.app.store.insert_run(
                NewRun(
                    run_id=child_id,
                    workflow=workflow.name,
                    queue=options.queue or workflow.queue,
                    input_json=input_json,
                    code_version=self._code_version,
                    priority=options.priority,
                    tenant=self.tenant,
                    parent_run_id=self.run_id,
                ),
                also=self.app._audit_start(
                    "run.started",
                    child_id,
                    workflow.name,
                    self.tenant,
                    f"system:workflow/{self.workflow}",
                    input_json,
                    parent_run_id=self.run_id,
                    pii=protected.summary(),
                ),
            )
            self.app._notify_enqueued()
            return child_id

        return str(self._record(f"aevos.start_child:{workflow.name}", start))

    def wait_child(self, child_run_id: str, timeout: float | None = None) -> Any:
        """Wait for a child run's result; raises RunFailedError / RunCancelledError."""
        deadline = float(
            self._record("aevos.deadline", lambda: time.time() + (timeout or _FOREVER))
        )
        name = f"aevos.child_result:{child_run_id}"
        seq, recorded = self._begin_step(name)
        if recorded is None:
            started = time.time()
            while True:
                info = self.app.store.get_run(child_run_id)
                if info.status.terminal or time.time() >= deadline:
                    self._commit(self._child_record(seq, name, info, started), info.output)
                    recorded = self._history[seq]
                    break
                if self._can_park and deadline - time.time() > self.app.park_after:
                    # The child's completion wakes us (finish_run wakes the parent).
                    raise Suspend(deadline)
                self._pause(min(self.app.poll_interval, max(0.0, deadline - time.time())))
        return self._child_value(recorded)

    def _child_record(self, seq: int, name: str, info: Any, started: float) -> StepRecord:
        now = time.time()
        if info.status is RunStatus.SUCCEEDED:
            return StepRecord(
                seq, name, "SUCCEEDED", codec.encode(info.output, name), None, 1, started, now
            )
        if info.status.terminal:
            error = {
                "type": "aevos.ChildRun",
                "status": info.status.value,
                "run_id": info.run_id,
                "message": (info.error or {}).get("message", info.status.value),
                "child_error": info.error,
            }
        else:
            error = {
                "type": "aevos.ChildRunTimeout",
                "status": info.status.value,
                "run_id": info.run_id,
                "message": "timed out waiting for the child run",
            }
        return StepRecord(seq, name, "FAILED", None, error, 1, started, now)

    @staticmethod
    def _child_value(recorded: StepInfo) -> Any:
        if recorded.status == "SUCCEEDED":
            return recorded.output
        error = recorded.error or {}
        if error.get("status") == "CANCELLED":
            raise RunCancelledError(str(error.get("run_id")))
        if error.get("type") == "aevos.ChildRunTimeout":
            from .errors import RunTimeoutError

            raise RunTimeoutError(f"child run {error.get('run_id')} did not finish in time")
        raise RunFailedError(str(error.get("run_id")), error.get("child_error"))

    def run_child(self, workflow: Workflow[..., Any], args: Any, kwargs: Any) -> Any:
        """Run a child workflow now, in this thread, as its own durable run."""
        child_id = self.start_child_inline(workflow, args, kwargs)
        return self.wait_child(child_id)

    def start_child_inline(self, workflow: Workflow[..., Any], args: Any, kwargs: Any) -> str:
        input_json, protected = self.app._stored_input(workflow, args, kwargs, self.tenant)

        def start() -> str:
            return self._child_id(self._seq)

        child_id = str(self._record(f"aevos.child:{workflow.name}", start))
        self.app._execute_inline(
            workflow,
            child_id,
            protected.args,
            protected.kwargs,
            input_json,
            tenant=self.tenant,
            parent_run_id=self.run_id,
            can_park=self._can_park,
            raise_errors=False,
            pii=protected.summary(),
        )
        return child_id


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise DefinitionError(f"ask_human {what} must be positive, got {value!r}")
    return seconds


def _task_request(
    title: str,
    form: Form | Sequence[Field],
    case: Any,
    suggestion: Mapping[str, Any] | None,
    prediction: CallResult | None,
    queue: str,
    role: str,
    priority: int,
    sla: float | timedelta | None,
    escalate_to: str | Sequence[str] | None,
) -> TaskRequest:
    """Check what a workflow asks for before anything is recorded (DefinitionError)."""
    form = form if isinstance(form, Form) else Form(list(form))
    if not title or len(title) > 500:
        raise DefinitionError("ask_human needs a title of 1 to 500 characters")
    chain = (escalate_to,) if isinstance(escalate_to, str) else tuple(escalate_to or ())
    for what, value in (("queue", queue), *(("escalate_to", q) for q in chain)):
        if not isinstance(value, str) or not (0 < len(value) <= 100):
            raise DefinitionError(f"ask_human {what} must be queue names of 1 to 100 characters")
    if len(chain) > MAX_ESCALATIONS:
        raise DefinitionError(f"ask_human escalate_to names at most {MAX_ESCALATIONS} queues")
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise DefinitionError(
            f"ask_human priority must be an integer within +-{MAX_PRIORITY:,} "
            "(escalation adds more to put escalated tasks first)"
        )
    workers = sorted(r.value for r in Role if Permission.TASKS_WORK in ROLE_PERMISSIONS[r])
    if role not in workers:
        # A task for a role that may not work tasks could only ever expire.
        raise DefinitionError(
            f"ask_human role {role!r} is not a role that works tasks ({', '.join(workers)})"
        )
    if suggestion is None and prediction is not None:
        suggestion = {form.fields[0].name: prediction.label}
    return TaskRequest(
        title=title,
        form=form,
        case=case,
        suggestion=None if suggestion is None else form.check_suggestion(suggestion),
        confidence=None if prediction is None else prediction.confidence,
        model=None if prediction is None else prediction.model,
        model_version=None if prediction is None else prediction.version_ref,
        input_digest=None if prediction is None else prediction.input_digest,
        call_id=None if prediction is None else prediction.call_id,
        queue=queue,
        role=role,
        priority=int(priority),
        sla_seconds=_seconds(sla, "sla"),
        escalate_to=chain,
    )
