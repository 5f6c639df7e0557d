"""Asking a person from a workflow: ``ctx.ask_human`` as two positions of the run.

The first position creates the task: the task row, the step and a ``task.created`` audit
record commit in one transaction (:meth:`~aevos.kernel.journal.Journal.record`). The second
holds the person's decision (or the task's expiry or cancellation), taken from the task row
under the run's lease, so that a decision is recorded once however many executors race.
Between the two the run waits: parked in the database under a worker (a submission wakes
it), or polling in the thread that runs it inline.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import codec
from ..audit import AuditEvent
from ..errors import AevosError, DefinitionError, TaskConflictError, TaskExpiredError
from ..identity import ROLE_PERMISSIONS, Permission, Role
from ..kernel.context import AskHuman, QaSample
from ..kernel.services import DECISION_STEP, QA_STEP, TASK_STEP
from ..records.run import StepInfo
from ..records.task import (
    MAX_ESCALATIONS,
    MAX_PRIORITY,
    Field,
    Form,
    HumanDecision,
    RankedChoice,
    Task,
    TaskRequest,
    TaskStatus,
    overridden,
    ranked_choices,
)
from ..storage import StepRecord, UnitOfWork

if TYPE_CHECKING:
    from ..cases import KeptCases
    from ..kernel.context import WorkflowContext
    from ..models.gateway import CallResult
    from ..storage.cases import CaseRow

log = logging.getLogger("aevos.tasks")

# Longest a wait without a deadline may last; JSON has no infinity.
_FOREVER = 100 * 365 * 24 * 3600.0


class Asking:
    """The kernel's :class:`~aevos.kernel.services.HumanTasks`: ``ctx.ask_human``.

    ``cases`` returns the kept-cases service (or None): each task's case is kept, as
    ``"task:" + task_id``, in the transaction that creates the task.
    """

    def __init__(self, cases: Callable[[], KeptCases | None] | None = None) -> None:
        self._cases = cases

    def ask(self, ctx: WorkflowContext, call: AskHuman) -> HumanDecision:
        request = _request(call)
        task_id, deadline, seq, recorded, started = self._ask(ctx, request, call.timeout)
        while recorded is None:
            recorded = self._poll_answer(ctx, seq, task_id, deadline, started)
            if recorded is None:
                ctx.idle(deadline)
        return self._answer(recorded, task_id)

    async def ask_async(self, ctx: WorkflowContext, call: AskHuman) -> HumanDecision:
        request = _request(call)
        task_id, deadline, seq, recorded, started = self._ask(ctx, request, call.timeout)
        while recorded is None:
            recorded = self._poll_answer(ctx, seq, task_id, deadline, started)
            if recorded is None:
                await ctx.idle_async(deadline)
        return self._answer(recorded, task_id)

    def sample(self, ctx: WorkflowContext, call: QaSample) -> str | None:
        """``ctx.qa_sample``: draw, and open a QA task if drawn, at one position."""
        share = call.share
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise DefinitionError("qa_sample share must be a number from 0 to 1")
        if not (math.isfinite(share) and 0 <= share <= 1):
            raise DefinitionError(f"qa_sample share must be from 0 to 1, got {share!r}")
        if not hasattr(call.prediction, "call_id"):
            raise DefinitionError("qa_sample needs the prediction (ctx.predict's result)")
        request = task_request(
            call.title,
            call.form,
            call.case,
            None,
            call.prediction,
            call.queue,
            call.role,
            call.priority,
            call.sla,
            call.escalate_to,
            purpose="qa",
        )
        journal = ctx.journal
        seq, recorded = journal.begin(QA_STEP)
        if recorded is not None:
            task_id = journal.replay_value(recorded)["task_id"]
            return None if task_id is None else str(task_id)
        started = time.time()
        # Independent of everything about the case, so the sample is unbiased.
        draw = secrets.SystemRandom().random()
        sampled = draw < share
        task_id = f"{ctx.run_id}.{seq}" if sampled else None
        output = {"sampled": sampled, "task_id": task_id, "share": share, "draw": draw}
        step = StepRecord(
            seq, QA_STEP, "SUCCEEDED", codec.encode(output, QA_STEP), None, 1, started, time.time()
        )
        if task_id is None:
            journal.record(step, output)
            return None
        event = AuditEvent(
            action="task.created",
            actor=f"system:workflow/{ctx.workflow}",
            tenant=ctx.tenant,
            subject=f"task:{task_id}",
            run_id=ctx.run_id,
            data={
                "queue": request.queue,
                "role": request.role,
                "purpose": "qa",
                "share": share,
                "model_version": request.model_version,
                "call_id": request.call_id,
                "sla_seconds": request.sla_seconds,
                "seq": seq,
            },
        )
        where = {"tenant": ctx.tenant, "run_id": ctx.run_id, "workflow": ctx.workflow}
        qa_task = task_id
        case = self._seal_case(ctx, request, task_id, seq)

        def create(uow: UnitOfWork) -> None:
            uow.tasks.create(request, task_id=qa_task, seq=seq, created_at=started, **where)
            if case is not None:
                uow.cases.add([case])

        journal.record(step, output, events=[event], also=create)
        return task_id

    def _open_task(
        self, ctx: WorkflowContext, request: TaskRequest, timeout: float | timedelta | None
    ) -> tuple[str, float]:
        """Create the task as this position's result, with its audit record, atomically."""
        journal = ctx.journal
        # Named without the queue: moving a task to another queue in the code must not break
        # the replay of runs already waiting.
        name = TASK_STEP
        seq, recorded = journal.begin(name)
        if recorded is not None:
            value = journal.replay_value(recorded)
            return str(value["task_id"]), float(value["deadline"])
        started = time.time()
        task_id = f"{ctx.run_id}.{seq}"
        wait = _seconds(timeout, "timeout")
        deadline = started + (wait if wait is not None else _FOREVER)
        output = {"task_id": task_id, "deadline": deadline}
        event = AuditEvent(
            action="task.created",
            actor=f"system:workflow/{ctx.workflow}",
            tenant=ctx.tenant,
            subject=f"task:{task_id}",
            run_id=ctx.run_id,
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
        where = {"tenant": ctx.tenant, "run_id": ctx.run_id, "workflow": ctx.workflow}

        case = self._seal_case(ctx, request, task_id, seq)

        def create(uow: UnitOfWork) -> None:
            uow.tasks.create(request, task_id=task_id, seq=seq, created_at=started, **where)
            if case is not None:
                uow.cases.add([case])

        if ctx.tracing is None:
            journal.record(step, output, events=[event], also=create)
            return task_id, deadline
        attributes: dict[str, str | int] = {
            "aevos.run.id": ctx.run_id,
            "aevos.step.seq": seq,
            "aevos.task.id": task_id,
            "aevos.task.queue": request.queue,
            "aevos.task.role": request.role,
        }
        if request.model_version is not None:
            attributes["aevos.model.version"] = str(request.model_version)
        with ctx.tracing.span(f"aevos.ask_human {request.queue}", attributes):
            journal.record(step, output, events=[event], also=create)
        return task_id, deadline

    def _seal_case(
        self, ctx: WorkflowContext, request: TaskRequest, task_id: str, seq: int
    ) -> CaseRow | None:
        """The task's kept case (what the person is shown, after the workflow's data
        policy), linked to the model call whose suggestion it shows; None if not kept."""
        cases = None if self._cases is None else self._cases()
        if cases is None:
            return None
        # Imported here: importing aevos must not load the vault's crypto or YAML.
        from ..cases import NewCase

        version = None
        if request.model_version is not None and "@" in request.model_version:
            tail = request.model_version.rsplit("@", 1)[1]
            version = int(tail) if tail.isdigit() else None
        try:
            return cases.seal(
                NewCase(
                    tenant=ctx.tenant,
                    case_id="task:" + task_id,
                    kind="task",
                    input=request.case,
                    model=request.model,
                    version=version,
                    run_id=ctx.run_id,
                    seq=seq,
                    call_id=request.call_id,
                    task_id=task_id,
                    workflow=ctx.workflow,
                )
            )
        except AevosError as exc:
            # As for a model call's case: the task is asked all the same.
            log.error("the case of task %s was not kept: %s", task_id, exc.code)
            return None

    def _ask(
        self, ctx: WorkflowContext, request: TaskRequest, timeout: float | timedelta | None
    ) -> tuple[str, float, int, StepInfo | None, float]:
        """The task (created, or found on replay) and the decision's position: its recorded
        value if there is one already."""
        task_id, deadline = self._open_task(ctx, request, timeout)
        seq, recorded = ctx.journal.begin(DECISION_STEP)
        return task_id, deadline, seq, recorded, time.time()

    def _poll_answer(
        self, ctx: WorkflowContext, seq: int, task_id: str, deadline: float, started: float
    ) -> StepInfo | None:
        """The task's outcome recorded at ``seq`` if it has one; parks the run if not."""
        name = DECISION_STEP
        journal = ctx.journal
        actor = f"system:workflow/{ctx.workflow}"

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
                journal.audit.append(
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

        with journal.fenced():
            step = journal.store.record_with(ctx.run_id, journal.owner, outcome)
        if step is not None:
            output = None if step.output_json is None else codec.decode(step.output_json)
            if ctx.tracing is not None:
                attributes: dict[str, str | int] = {
                    "aevos.run.id": ctx.run_id,
                    "aevos.step.seq": seq,
                    "aevos.task.id": task_id,
                    "aevos.task.outcome": step.status,
                }
                with ctx.tracing.span("aevos.human_decision", attributes) as span:
                    if isinstance(output, dict):
                        span.set_attribute("aevos.task.overridden", bool(output.get("overridden")))
            return journal.remember(step, output)
        # A submission wakes the run (submit_task sets its wake_at).
        ctx.park_until(deadline)
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


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise DefinitionError(f"ask_human {what} must be positive, got {value!r}")
    return seconds


def task_request(
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
    *,
    purpose: str = "review",
    sampled: bool | None = None,
) -> TaskRequest:
    """Check what a workflow asks for before anything is recorded (DefinitionError).

    A QA task (``purpose="qa"``) is unbiased: it was sampled at random. A review is
    unbiased when the workflow says it sampled the case at random (``sampled``), or by
    default when the suggesting prediction's version had no certified threshold, so
    nothing was automated and every case of it was being asked about."""
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
    checked = None if suggestion is None else form.check_suggestion(suggestion)
    if sampled is not None and not isinstance(sampled, bool):
        raise DefinitionError("ask_human sampled must be True, False or None")
    if purpose == "qa":
        unbiased = True
    elif sampled is not None:
        unbiased = sampled
    else:
        # A version without a certified threshold had nothing automated, so its reviews sample all its traffic.
        unbiased = prediction is not None and prediction.certified_threshold is None
    return TaskRequest(
        title=title,
        form=form,
        case=case,
        suggestion=checked,
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
        ranked=_ranked(form, checked, prediction),
        purpose=purpose,
        unbiased=unbiased,
        label_field=label_field(form, checked, prediction),
    )


def _ranked(
    form: Form, suggestion: Mapping[str, Any] | None, prediction: CallResult | None
) -> dict[str, tuple[RankedChoice, ...]]:
    """The prediction's most probable labels for the choice field it suggests: the one
    holding its label (the form's first field unless the workflow suggested otherwise)."""
    if prediction is None or not suggestion or not isinstance(prediction.output, Mapping):
        return {}
    probabilities = prediction.output.get("probabilities")
    label = str(prediction.label)  # as Field.normalise puts it in a choice field
    for f in form.fields:
        if f.kind == "choice" and suggestion.get(f.name) == label:
            ranked = ranked_choices(f, probabilities)
            return {f.name: ranked} if ranked else {}
    return {}


def label_field(
    form: Form, suggestion: Mapping[str, Any] | None, prediction: CallResult | None
) -> str | None:
    """The field whose submitted value labels the case: the one the prediction's label
    filled (the first field by default), else a suggestion's only field; None if neither
    says which (the decision then labels nothing)."""
    if not suggestion:
        return None
    if prediction is not None:
        by_name = {f.name: f for f in form.fields}
        for name, value in suggestion.items():
            if value == by_name[name].normalise(prediction.label):
                return name
    return next(iter(suggestion)) if len(suggestion) == 1 else None


def _request(call: AskHuman) -> TaskRequest:
    return task_request(
        call.title,
        call.form,
        call.case,
        call.suggestion,
        call.prediction,
        call.queue,
        call.role,
        call.priority,
        call.sla,
        call.escalate_to,
        sampled=call.sampled,
    )
