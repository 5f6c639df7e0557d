"""The workflow context: how a workflow body talks to the kernel.

Every interaction with the outside world goes through a numbered position (``seq``) in the
run's history, its :class:`~aevos.kernel.journal.Journal`. Executing a run is replaying it:
positions already recorded return their recorded value without running anything; the first
unrecorded position runs for real and is committed before the workflow moves on. A position
holding a different step than the code now asks for means the code changed incompatibly,
and the run stops with :class:`ReplayMismatchError` instead of guessing.

The context composes the journal with the services of the runtime that executes the run:
policy decisions, PII redaction, governed model calls (the gateway governs the call and
returns its records; the context records both at one position) and human tasks (asked
through :class:`~aevos.kernel.services.HumanTasks`, which :mod:`aevos.people` provides).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from .. import codec
from ..audit import AuditEvent
from ..errors import (
    DefinitionError,
    PiiAccessDeniedError,
    RunCancelledError,
    RunFailedError,
    RunTimeoutError,
    SerializationError,
)
from ..records.run import NewRun, RunInfo, StepInfo, error_dict
from ..records.status import RunStatus
from ..storage import StepRecord
from .journal import PATCH_PREFIX, Cancelled, Journal, Suspend
from .tracing import Tracing

if TYPE_CHECKING:
    import threading

    from ..audit import AuditLog
    from ..models.gateway import CallResult, Gateway
    from ..pii import Redactor, Vault
    from ..pii.datapolicy import DataPolicy, ProtectedInput
    from ..policy import Decision, PolicySet
    from ..records.task import Field, Form, HumanDecision
    from ..storage import Store

__all__ = ["AskHuman", "Cancelled", "HumanTasks", "QaSample", "Suspend", "WorkflowContext"]

T = TypeVar("T")

# Longest a wait without a deadline may last; JSON has no infinity.
_FOREVER = 100 * 365 * 24 * 3600.0
# ctx.random() draws from the operating system: an audit sample must not be predictable
# from a seed an attacker (or a test that reseeds `random`) could know.
_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class AskHuman:
    """One ``ctx.ask_human`` call, as the workflow made it (new fields come with defaults)."""

    title: str
    form: Form | Sequence[Field]
    case: Any = None
    suggestion: Mapping[str, Any] | None = None
    prediction: CallResult | None = None
    queue: str = "review"
    role: str = "reviewer"
    priority: int = 0
    sla: float | timedelta | None = None
    escalate_to: str | Sequence[str] | None = None
    timeout: float | timedelta | None = None
    # True: the case was put to a person at random, whatever the model's confidence (an
    # unbiased label); False: because of it; None: decided from the prediction (see
    # ask_human).
    sampled: bool | None = None


@dataclass(frozen=True)
class QaSample:
    """One ``ctx.qa_sample`` call, as the workflow made it (new fields come with defaults)."""

    prediction: CallResult
    share: float
    form: Form | Sequence[Field]
    title: str = "Check an automated decision"
    case: Any = None
    queue: str = "qa"
    role: str = "reviewer"
    priority: int = 0
    sla: float | timedelta | None = None
    escalate_to: str | Sequence[str] | None = None


class HumanTasks(Protocol):
    """Asks a person as two positions of the run (see :mod:`aevos.people.asking`), or
    samples a decision for a person to check at one position, without waiting."""

    def ask(self, ctx: WorkflowContext, call: AskHuman) -> HumanDecision: ...

    async def ask_async(self, ctx: WorkflowContext, call: AskHuman) -> HumanDecision: ...

    def sample(self, ctx: WorkflowContext, call: QaSample) -> str | None: ...


class ContextServices(Protocol):
    """The services a workflow context composes with its journal."""

    @property
    def audit(self) -> AuditLog: ...

    @property
    def policies(self) -> PolicySet: ...

    @property
    def redactor(self) -> Redactor: ...

    @property
    def vault(self) -> Vault: ...

    @property
    def gateway(self) -> Gateway: ...

    @property
    def human_tasks(self) -> HumanTasks: ...


class ChildOptions(Protocol):
    """The start options a child run takes (its tenant and id come from its parent)."""

    @property
    def queue(self) -> str | None: ...

    @property
    def priority(self) -> int: ...


class ChildWorkflow(Protocol):
    """What the context needs of a workflow it starts as a child run."""

    name: str
    queue: str

    def encode_input(self, args: Any, kwargs: Any) -> str: ...

    def child_options(self, *, enqueued: bool) -> ChildOptions: ...


class Host(Protocol):
    """What a context acts through (the kernel's runtime that executes the run)."""

    park_after: float
    poll_interval: float
    tracing: Tracing | None

    @property
    def services(self) -> ContextServices: ...

    @property
    def store(self) -> Store: ...

    @property
    def code_version(self) -> str: ...

    def signal_arrived(self, run_id: str) -> threading.Event: ...

    def send_signal(self, run_id: str, topic: str, payload: Any = None) -> None: ...

    def wake(self, run_id: str | None = None) -> None: ...

    def insert_started(
        self, new: NewRun, actor: str | None, protected: ProtectedInput, **data: Any
    ) -> RunInfo: ...

    def execute_inline(
        self,
        workflow: Any,
        run_id: str,
        args: Any,
        kwargs: Any,
        input_json: str,
        *,
        tenant: str,
        parent_run_id: str,
        can_park: bool,
        raise_errors: bool,
        pii: dict[str, Any] | None = None,
    ) -> object: ...

    def data_policy_of(self, workflow: str) -> DataPolicy: ...

    def stored_input(
        self, workflow: Any, args: Any, kwargs: Any, tenant: str
    ) -> tuple[str, ProtectedInput]: ...


class WorkflowContext:
    """Passed as the first argument to every workflow function."""

    def __init__(
        self,
        runtime: Host,
        journal: Journal,
        workflow: str,
        *,
        can_park: bool,
        executions: int = 1,
        tenant: str = "default",
    ) -> None:
        self._runtime = runtime
        self.journal = journal
        self.run_id = journal.run_id
        self.workflow = workflow
        self.tenant = tenant
        self.executions = executions
        self._can_park = can_park
        self._cancel = journal.cancel
        self._seq_pending = -1
        #: The runtime's tracer (None when tracing is off), for services built on the context.
        self.tracing = runtime.tracing

    # -- waiting, for the kernel and the services built on it -------------------------------

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` unless the run is cancelled first (then :class:`Cancelled`)."""
        if self._cancel.wait(seconds):
            raise Cancelled()

    async def pause_async(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while (remaining := deadline - time.time()) > 0:
            if self._cancel.is_set():
                raise Cancelled()
            await asyncio.sleep(min(remaining, 0.25))

    def park_until(self, deadline: float) -> None:
        """Park the run until ``deadline`` (:class:`Suspend`) if it may park and the wait is
        longer than ``park_after``; a worker's thread is then free for other runs."""
        if self._can_park and deadline - time.time() > self._runtime.park_after:
            raise Suspend(deadline)

    def idle(self, deadline: float) -> None:
        """Wait until something arrives for this run (a signal, a submitted task), the poll
        interval passes or ``deadline`` comes, whichever is first."""
        arrived = self._runtime.signal_arrived(self.run_id)
        arrived.wait(min(self._runtime.poll_interval, max(0.0, deadline - time.time())))
        arrived.clear()
        if self._cancel.is_set():
            raise Cancelled()

    async def idle_async(self, deadline: float) -> None:
        await self.pause_async(min(self._runtime.poll_interval, max(0.0, deadline - time.time())))

    def _deadline(self, timeout: float | None) -> float:
        return float(
            self.journal.once("aevos.deadline", lambda: time.time() + (timeout or _FOREVER))
        )

    # -- policy -----------------------------------------------------------------------------

    def decide(self, policy: str, /, **inputs: Any) -> Decision:
        """Evaluate ``policy`` on ``inputs`` at this position of the run.

        The decision is recorded as the position's result (a replay returns the same decision,
        even if the policy file changed since) and appended to the audit log in the same
        transaction, with the input's digest, never the input.
        """
        from ..policy import Decision  # on first use: policies read YAML

        name = f"aevos.decide:{policy}"
        seq, recorded = self.journal.begin(name)
        if recorded is not None:
            return Decision.from_record(self.journal.replay_value(recorded))
        if self.tracing is not None:
            with self.tracing.span(
                f"aevos.decide {policy}",
                {"aevos.run.id": self.run_id, "aevos.step.seq": seq, "aevos.policy.name": policy},
            ) as span:
                decision = self._decide(policy, inputs, name, seq)
                span.set_attribute("aevos.policy.version", decision.version)
                span.set_attribute("aevos.policy.result", decision.result)
                span.set_attribute("aevos.policy.rule", decision.rule)
                span.set_attribute("aevos.policy.decision_id", decision.decision_id)
                return decision
        return self._decide(policy, inputs, name, seq)

    def _decide(self, policy: str, inputs: dict[str, Any], name: str, seq: int) -> Decision:
        started = time.time()
        decision = self._runtime.services.policies.evaluate(policy, inputs)
        record = decision.to_record()
        event = AuditEvent(
            action="policy.decided",
            actor=f"system:workflow/{self.workflow}",
            tenant=self.tenant,
            subject=f"policy:{decision.policy}@{decision.version}",
            run_id=self.run_id,
            data={**record, "seq": seq},
        )
        step = StepRecord(
            seq, name, "SUCCEEDED", codec.encode(record, name), None, 1, started, time.time()
        )
        self.journal.record(step, record, events=[event])
        return decision

    def redact(
        self, value: T, *, fields: list[str] | None = None, kinds: list[str] | None = None
    ) -> T:
        """``value`` with personal data replaced by ``<KIND>`` placeholders, recorded.

        Only the redacted value is recorded at this position, so what a model or a log sees
        downstream is reproducible on replay. ``fields`` limits it to dotted paths (as a
        ``model_call`` policy's ``redact`` list names them); ``kinds`` to some kinds.
        """
        services = self._runtime.services

        def produce() -> Any:
            return services.redactor.redact_value(value, fields=fields, kinds=kinds)

        return cast(T, self.journal.once("aevos.redact", produce))

    def tokenize(self, text: str, *, kinds: list[str] | None = None) -> str:
        """``text`` with personal data replaced by reversible tokens (``<EMAIL:tok_...>``),
        recorded. The originals go to the tenant's encrypted vault; only principals allowed
        ``pii:reveal`` get them back, through :meth:`Access.pii.reveal <aevos.access.pii.Pii.reveal>`."""
        services = self._runtime.services

        def produce() -> str:
            redaction = services.redactor.tokenize(
                text, tenant=self.tenant, vault=services.vault, kinds=kinds
            )
            return redaction.text

        return str(self.journal.once("aevos.tokenize", produce))

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
        from ..pii.datapolicy import reveal_value

        runtime = self._runtime
        if not runtime.data_policy_of(self.workflow).reveal:
            raise PiiAccessDeniedError(
                f"workflow {self.workflow!r} may not reveal personal data: declare "
                "@app.workflow(data_policy=DataPolicy(..., reveal=True)) to allow it"
            )
        name = "aevos.reveal"
        seq, recorded = self.journal.begin(name)
        services = runtime.services

        def read() -> tuple[Any, int]:
            return reveal_value(
                value, tenant=self.tenant, vault=lambda: services.vault, allowed=True, strict=True
            )

        if recorded is not None:
            self.journal.replay_value(recorded)
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
        output = {"tokens": tokens}
        step = StepRecord(
            seq, name, "SUCCEEDED", codec.encode(output, name), None, 1, started, time.time()
        )
        self.journal.record(step, output, events=[event])
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
        ``policy.decided`` and ``model.called`` audit records and its kept case (the input
        after the workflow's data policy, encrypted; :mod:`aevos.cases`), so a replay
        returns it without calling the model, spending budget or keeping the case again
        (a recorded failure is raised again as the same class).

        ``classification`` is the policy's ``data.classification`` (default: the
        workflow's data policy's). ``bypass_policy="why"`` skips the ``model_call`` policy
        for this call; the reason is audited (``policy.bypassed``).
        """
        # On first use: a workflow that calls no model never loads the gateway.
        from ..models.gateway import STEP_PREFIX, CallResult, rebuild_error

        name = STEP_PREFIX + model
        seq, recorded = self.journal.begin(name)
        if recorded is not None:
            if recorded.status == "FAILED":
                raise rebuild_error(recorded.error or {}, name, seq)
            return CallResult.from_record(recorded.output)
        started = time.time()
        gateway = self._runtime.services.gateway
        governed = gateway.govern(
            model,
            input,
            key=key,
            tenant=self.tenant,
            workflow=self.workflow,
            actor=f"system:workflow/{self.workflow}",
            timeout=timeout,
            classification=(
                self._runtime.data_policy_of(self.workflow).classification
                if classification is None
                else classification
            ),
            bypass_policy=bypass_policy,
            run_id=self.run_id,
            seq=seq,
        )
        result, failure = governed.result, governed.error
        output: Any = None
        text: str | None = None
        if result is not None:
            output = result.to_record()
            try:
                text = codec.encode(output, f"prediction of model {model!r}")
            except SerializationError as exc:
                failure, result, output = exc, None, None
        if failure is not None:
            error = error_dict(failure)
            error["attempts"] = 1
            step = StepRecord(seq, name, "FAILED", None, error, 1, started, time.time())
        else:
            step = StepRecord(seq, name, "SUCCEEDED", text, None, 1, started, time.time())
        case = governed.case if failure is None else None
        self.journal.record(
            step,
            output,
            events=governed.events(),
            # The kept case commits with the step and its model.called record, or neither.
            also=None if case is None else (lambda uow: uow.cases.add([case])),
        )
        gateway.recorded(governed)
        if self.tracing is not None:
            self.tracing.model_call(
                self.workflow, self.run_id, model, seq, input, governed, started
            )
        if failure is not None:
            raise failure
        assert result is not None
        return result

    # -- code changes -----------------------------------------------------------------------

    def patched(self, change_id: str) -> bool:
        """Whether this run takes the new path of the code change ``change_id`` here.

        True for a run that reaches this point on code that has the change (a marker is
        recorded at this position, so every replay answers the same), False for a run whose
        history shows it passed this point before the change existed: write
        ``if ctx.patched("fraud-check"): ... new ... else: ... old ...`` and one deployment
        serves both. The answer is decided once per run execution for each ``change_id``.
        Once no run that needs the old path is in flight, keep the new path alone behind
        :meth:`deprecate_patch`.
        """
        return self.journal.patch(_change_id(change_id))

    def deprecate_patch(self, change_id: str) -> None:
        """Mark where :meth:`patched` ``(change_id)`` was, once every run that took its old
        path has ended: the code keeps only the new path, the marker is still recorded (so
        processes still running the code that asks ``patched`` replay these runs on the new
        path) and consumed where a history holds it. Remove the call itself once no run in
        flight passed this point while it asked ``patched``; a marker left over in a history
        is then stepped over. A run that took the old path and meets this code fails with
        :class:`~aevos.errors.ReplayMismatchError` where the paths differ, as before.
        """
        self.journal.patch(_change_id(change_id))

    # -- durable time -----------------------------------------------------------------------

    def now(self) -> float:
        """The current time (epoch seconds), recorded: a replay sees the same value."""
        return float(self.journal.once("aevos.now", time.time))

    def uuid4(self) -> str:
        """A random UUID, recorded: a replay sees the same value."""
        return str(self.journal.once("aevos.uuid4", lambda: str(uuid.uuid4())))

    def random(self) -> float:
        """A uniform random number in [0, 1), recorded: a replay sees the same value.

        For draws that must not depend on anything the run saw, such as an audit sample of
        traffic (``flagged = ctx.random() < 0.05``, drawn for every case whatever the
        model's confidence, so that the flagged cases are an unbiased sample).
        """
        return float(self.journal.once("aevos.random", _SYSTEM_RANDOM.random))

    def _sleep_until(self, seconds: float) -> float:
        wake_at = float(self.journal.once("aevos.sleep", lambda: time.time() + max(0.0, seconds)))
        remaining = wake_at - time.time()
        if remaining > 0:
            self.park_until(wake_at)
        return max(0.0, remaining)

    def sleep(self, seconds: float) -> None:
        """Sleep durably: a restart mid-sleep wakes at the originally recorded time.

        Under a worker, sleeps longer than ``app.park_after`` release the worker's thread and
        park the run in the database until it is due (days are fine).
        """
        self.pause(self._sleep_until(seconds))

    async def sleep_async(self, seconds: float) -> None:
        await self.pause_async(self._sleep_until(seconds))

    # -- outbox ------------------------------------------------------------------------------

    def publish(self, subject: str, payload: Any = None) -> str:
        """Publish ``payload`` (JSON-encodable) on ``subject`` through the outbox; returns
        the message's id.

        The message is written in the transaction that records this position, so it goes
        out if and only if that committed; the relay sends it afterwards, at least once,
        with the id as JetStream's ``Nats-Msg-Id`` (or a webhook's ``X-Aevos-Event-Id``) so
        the receiver drops a resend. A replay returns the recorded id and publishes nothing.
        Inside a step, use the step context's ``publish``: its messages commit with the
        step's result.
        """
        from .outbox import checked, messages

        published = checked(subject, payload)
        name = f"aevos.publish:{subject}"
        seq, recorded = self.journal.begin(name)
        if recorded is not None:
            return str(self.journal.replay_value(recorded))
        started = time.time()
        message_id = f"{self.run_id}/{seq}"
        rows = messages(message_id, self.tenant, self.run_id, [published], numbered=False)
        step = StepRecord(
            seq, name, "SUCCEEDED", codec.encode(message_id, name), None, 1, started, time.time()
        )
        if self.tracing is None:
            self.journal.record(step, message_id, also=lambda uow: uow.outbox.add(rows))
            return message_id
        with self.tracing.span(
            f"aevos.publish {subject}",
            {
                "aevos.run.id": self.run_id,
                "aevos.step.seq": seq,
                "messaging.operation.type": "create",
                "messaging.destination.name": subject,
                "messaging.message.id": message_id,
            },
        ):
            self.journal.record(step, message_id, also=lambda uow: uow.outbox.add(rows))
        return message_id

    # -- signals ----------------------------------------------------------------------------

    def send_signal(self, run_id: str, topic: str, payload: Any = None) -> None:
        """Send ``payload`` to another run's ``topic``, exactly once across replays."""
        text = codec.encode(payload, f"signal payload for topic {topic!r}")
        runtime = self._runtime

        def send() -> None:
            runtime.send_signal(run_id, topic, codec.decode(text))

        self.journal.once(f"aevos.send:{topic}", send)

    def _signal_attempt(self, topic: str, timeout: float | None) -> tuple[bool, Any, float]:
        deadline = self._deadline(timeout)
        name = f"aevos.signal:{topic}"
        seq, recorded = self.journal.begin(name)
        if recorded is not None:
            return True, self.journal.replay_value(recorded), deadline
        self._seq_pending = seq
        return False, None, deadline

    def _signal_poll(self, topic: str, deadline: float, started: float) -> tuple[bool, Any]:
        seq = self._seq_pending
        name = f"aevos.signal:{topic}"
        journal = self.journal
        with journal.fenced():
            taken, payload = journal.store.consume_signal(
                self.run_id, journal.owner, seq, name, topic, started
            )
        if taken:
            journal.remember(
                StepRecord(seq, name, "SUCCEEDED", None, None, 1, started, time.time()), payload
            )
            return True, payload
        now = time.time()
        if now >= deadline:
            journal.record(StepRecord(seq, name, "SUCCEEDED", "null", None, 1, started, now))
            return True, None
        self.park_until(deadline)
        return False, None

    def wait_signal(self, topic: str, timeout: float | None = None) -> Any:
        """Wait durably for a signal sent to this run on ``topic``; None on timeout."""
        done, value, deadline = self._signal_attempt(topic, timeout)
        started = time.time()
        while not done:
            done, value = self._signal_poll(topic, deadline, started)
            if not done:
                self.idle(deadline)
        return value

    async def wait_signal_async(self, topic: str, timeout: float | None = None) -> Any:
        done, value, deadline = self._signal_attempt(topic, timeout)
        started = time.time()
        while not done:
            done, value = self._signal_poll(topic, deadline, started)
            if not done:
                await self.idle_async(deadline)
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
        sampled: bool | None = None,
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

        The answer labels the prediction's case. ``sampled`` says whether that label is an
        unbiased sample of traffic, which certification relies on: ``True`` when the
        workflow put this case to a person at random (an audit draw made for every case,
        whatever the confidence), ``False`` when it asks because of the prediction (low
        confidence). By default (None) it is unbiased exactly when the prediction's version
        had no certified threshold, so that every case of it was being asked about.
        """
        call = AskHuman(
            title,
            form,
            case,
            suggestion,
            prediction,
            queue,
            role,
            priority,
            sla,
            escalate_to,
            timeout,
            sampled,
        )
        return self._runtime.services.human_tasks.ask(self, call)

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
        sampled: bool | None = None,
    ) -> HumanDecision:
        """:meth:`ask_human` for ``async`` workflows."""
        call = AskHuman(
            title,
            form,
            case,
            suggestion,
            prediction,
            queue,
            role,
            priority,
            sla,
            escalate_to,
            timeout,
            sampled,
        )
        return await self._runtime.services.human_tasks.ask_async(self, call)

    def qa_sample(
        self,
        prediction: CallResult,
        *,
        share: float,
        form: Form | Sequence[Field],
        title: str = "Check an automated decision",
        case: Any = None,
        queue: str = "qa",
        role: str = "reviewer",
        priority: int = 0,
        sla: float | timedelta | None = None,
        escalate_to: str | Sequence[str] | None = None,
    ) -> str | None:
        """Send this automated decision to a person with probability ``share``, without
        waiting for the answer; returns the task's id if it was sampled, else None.

        Fire and forget, like a child workflow its parent abandons: the run goes on at once
        and may finish long before anyone answers. The draw is recorded at one position of
        the run (with the task, in one transaction), so a replay makes the same choice. The
        task (``purpose="qa"``) shows ``case`` and ``form`` pre-filled with the
        ``prediction``'s label like :meth:`ask_human`; its answer becomes a feedback record
        and a ``qa`` label of the prediction's call, unbiased (sampled at random), which
        measures the realised precision of automation and feeds certification.
        """
        call = QaSample(
            prediction, share, form, title, case, queue, role, priority, sla, escalate_to
        )
        return self._runtime.services.human_tasks.sample(self, call)

    # -- child runs -------------------------------------------------------------------------

    def _child_id(self, seq: int) -> str:
        return f"{self.run_id}.{seq}"

    def start_child(self, workflow: ChildWorkflow, /, *args: Any, **kwargs: Any) -> str:
        """Enqueue a child run (picked up by any worker) and return its run id.

        Every argument after the workflow is the child's; its queue and priority are given
        with ``ctx.start_child(child.options(queue=..., priority=...), ...)``.
        """
        options = workflow.child_options(enqueued=True)
        workflow.encode_input(args, kwargs)  # refused before anything is recorded
        runtime = self._runtime

        def start() -> str:
            child_id = self._child_id(self.journal.seq)
            # The child's data policy applies to what the parent hands it.
            input_json, protected = runtime.stored_input(workflow, args, kwargs, self.tenant)
            runtime.insert_started(
                NewRun(
                    run_id=child_id,
                    workflow=workflow.name,
                    queue=options.queue or workflow.queue,
                    input_json=input_json,
                    code_version=runtime.code_version,
                    priority=options.priority,
                    tenant=self.tenant,
                    parent_run_id=self.run_id,
                ),
                f"system:workflow/{self.workflow}",
                protected,
                parent_run_id=self.run_id,
            )
            return child_id

        return str(self.journal.once(f"aevos.start_child:{workflow.name}", start))

    def wait_child(self, child_run_id: str, timeout: float | None = None) -> Any:
        """Wait for a child run's result; raises RunFailedError / RunCancelledError."""
        deadline = self._deadline(timeout)
        name = f"aevos.child_result:{child_run_id}"
        seq, recorded = self.journal.begin(name)
        if recorded is None:
            started = time.time()
            while True:
                info = self._runtime.store.get_run(child_run_id)
                if info.status.terminal or time.time() >= deadline:
                    record = self._child_record(seq, name, info, started)
                    recorded = self.journal.record(record, info.output)
                    break
                # The child's completion wakes us (finish_run wakes the parent).
                self.park_until(deadline)
                self.pause(min(self._runtime.poll_interval, max(0.0, deadline - time.time())))
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
            raise RunTimeoutError(f"child run {error.get('run_id')} did not finish in time")
        raise RunFailedError(str(error.get("run_id")), error.get("child_error"))

    def run_child(self, workflow: ChildWorkflow, args: Any, kwargs: Any) -> Any:
        """Run a child workflow now, in this thread, as its own durable run."""
        child_id = self.start_child_inline(workflow, args, kwargs)
        return self.wait_child(child_id)

    def start_child_inline(self, workflow: ChildWorkflow, args: Any, kwargs: Any) -> str:
        input_json, protected = self._runtime.stored_input(workflow, args, kwargs, self.tenant)

        def start() -> str:
            return self._child_id(self.journal.seq)

        child_id = str(self.journal.once(f"aevos.child:{workflow.name}", start))
        self._runtime.execute_inline(
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


#: Longest change id: the marker's position name must fit the steps table's 200 characters.
MAX_CHANGE_ID = 200 - len(PATCH_PREFIX)


def _change_id(change_id: object) -> str:
    if not isinstance(change_id, str):
        raise DefinitionError(f"a change id must be a string, got {type(change_id).__name__}")
    if not 0 < len(change_id) <= MAX_CHANGE_ID or not change_id.isprintable():
        raise DefinitionError(
            f"a change id must be 1-{MAX_CHANGE_ID} printable characters, got one of "
            f"{len(change_id)} characters"
        )
    return change_id
