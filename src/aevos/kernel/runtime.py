"""The kernel's runtime for one app: its workflows, steps and queues, starting and operating
runs, and the executor that runs them.

Workflows, steps, handles, workers and contexts all act through the runtime that made them
(as Temporal's ``workflow.*`` functions act through the runtime of the running workflow),
never through the app object: the runtime is given the services it records through
(:class:`~aevos.kernel.services.Services`) when the app builds it, and nothing in the
kernel imports the app.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .. import codec
from ..audit import AuditEvent
from ..errors import (
    AevosError,
    DefinitionError,
    PiiConfigError,
    PiiError,
    SerializationError,
    UnknownWorkflowError,
)
from ..records.queue import INLINE_QUEUE, Queue
from ..records.run import NewRun, RunInfo, StepInfo
from ..records.status import RunStatus
from .executor import Executor
from .handle import RunHandle
from .lease import Leases
from .retry import RetryPolicy, as_retry_policy
from .services import TASK_STEP, Services
from .step import Step, StepContext
from .tracing import Tracing, insert_traced
from .worker import Companion, Worker
from .workflow import StartOptions, Workflow, WorkflowDecorator

if TYPE_CHECKING:
    from ..audit.buffer import AuditBuffer
    from ..pii.datapolicy import DataPolicy, ProtectedInput
    from ..storage import Store, UnitOfWork

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("aevos")


@dataclass(frozen=True)
class PreparedStart:
    """A run checked and encoded, to be enqueued in a batch (:meth:`Runtime.prepare`)."""

    new: NewRun
    actor: str | None
    protected: ProtectedInput


class Runtime:
    """Registers workflows, steps and queues; starts, queries and operates runs; holds this
    process's owner name and lease table. See :class:`aevos.Aevos` for the settings."""

    def __init__(
        self,
        services: Services,
        *,
        code_version: str | None = None,
        compatible_versions: Sequence[str] | None = None,
        lease_seconds: float = 15.0,
        park_after: float = 5.0,
        poll_interval: float = 0.2,
        data_policy: DataPolicy | str = "auto",
    ) -> None:
        self.services = services
        # What is done to personal data in run inputs before they are stored, for workflows
        # that declare no policy of their own (see aevos.pii.datapolicy).
        self.data_policy: DataPolicy = as_data_policy(data_policy, "Aevos(...)")
        self._data_policies: dict[str, DataPolicy] = {}
        self.lease_seconds = lease_seconds
        self.park_after = park_after
        self.poll_interval = poll_interval
        self._explicit_version = None if code_version is None else _version(code_version)
        self._computed_version: str | None = None
        # None: this process claims runs of every code version (replay decides); else it
        # claims only runs started on its own version or one of these.
        self.compatible_versions = _compatible(compatible_versions)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.workflows: dict[str, Workflow[Any, Any]] = {}
        self.steps: dict[str, Step[Any, Any]] = {}
        self.queues: dict[str, Queue] = {"default": Queue("default")}
        self.leases = Leases(self)
        self.executor = Executor(self)
        # Set when a run is enqueued or woken: idle workers claim at once instead of polling.
        self.work_available = threading.Event()
        self._signal_events: dict[str, threading.Event] = {}
        self._timeout_pool: ThreadPoolExecutor | None = None
        self._audit_buffer: AuditBuffer | None = None
        # Set by the app when tracing is configured (aevos.telemetry.tracing); None costs
        # the kernel one test per run and position.
        self.tracing: Tracing | None = None
        self._started_traces: dict[str, tuple[str, str | None]] = {}

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def code_version(self) -> str:
        """A digest of every registered workflow's and step's source, unless set explicitly."""
        if self._explicit_version is not None:
            return self._explicit_version
        if self._computed_version is None:
            digest = hashlib.sha256()
            for name, func in sorted(
                [(n, w.func) for n, w in self.workflows.items()]
                + [(n, s.func) for n, s in self.steps.items()]
            ):
                digest.update(name.encode())
                try:
                    digest.update(inspect.getsource(func).encode())
                except (OSError, TypeError):
                    digest.update(getattr(func, "__qualname__", name).encode())
            self._computed_version = digest.hexdigest()[:16]
        return self._computed_version

    @property
    def claimable_versions(self) -> frozenset[str] | None:
        """The code versions of the runs this process claims (None: any version)."""
        if self.compatible_versions is None:
            return None
        return frozenset((self.code_version, *self.compatible_versions))

    def close(self) -> None:
        """Stop the heartbeat, write the buffered audit records, stop step timeouts' threads."""
        self.leases.stop()
        if self._audit_buffer is not None:
            self._audit_buffer.close()  # writes what is buffered while the store is open
            self._audit_buffer = None
        if self._timeout_pool is not None:
            self._timeout_pool.shutdown(wait=False, cancel_futures=True)
            self._timeout_pool = None

    # -- registration -----------------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: int | None = None,
        rate_period: float = 1.0,
    ) -> Queue:
        queue = Queue(name, concurrency, worker_concurrency, rate_limit, rate_period)
        self.queues[name] = queue
        return queue

    def queue_named(self, name: str) -> Queue:
        """The declared queue ``name`` (DefinitionError naming the known ones if not)."""
        try:
            return self.queues[name]
        except KeyError:
            raise DefinitionError(
                f"unknown queue {name!r}; declare it with app.queue({name!r}) "
                f"(known: {', '.join(sorted(self.queues))})"
            ) from None

    def workflow(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        data_policy: DataPolicy | str | None = None,
    ) -> WorkflowDecorator:
        self.queue_named(queue)
        policy = None if data_policy is None else as_data_policy(data_policy, "@app.workflow")
        return WorkflowDecorator(self, name, queue, policy)

    def register_workflow(
        self,
        func: Callable[..., Any],
        name: str | None,
        queue: str,
        data_policy: DataPolicy | None = None,
    ) -> Workflow[Any, Any]:
        wf_name = name or _qualified(func)
        _check_callable(func, "workflow", wf_name)
        if wf_name in self.workflows:
            raise DefinitionError(f"workflow {wf_name!r} is registered twice")
        workflow: Workflow[Any, Any] = Workflow(self, func, wf_name, queue)
        self.workflows[wf_name] = workflow
        if data_policy is not None:
            self._data_policies[wf_name] = data_policy
        self._computed_version = None
        return workflow

    def step(
        self,
        *,
        name: str | None = None,
        retries: int | RetryPolicy = 1,
        timeout: float | None = None,
    ) -> Callable[[Callable[Concatenate[StepContext, P], R]], Step[P, R]]:
        policy = as_retry_policy(retries)
        if timeout is not None and timeout <= 0:
            raise DefinitionError(f"step timeout must be > 0 seconds, got {timeout}")

        def decorate(func: Callable[Concatenate[StepContext, P], R]) -> Step[P, R]:
            step_name = name or _qualified(func)
            _check_callable(func, "step", step_name)
            if step_name in self.steps:
                raise DefinitionError(f"step {step_name!r} is registered twice")
            step = Step(func, step_name, policy, timeout, self._pool)
            self.steps[step_name] = step
            self._computed_version = None
            return step

        return decorate

    def _pool(self) -> ThreadPoolExecutor:
        if self._timeout_pool is None:
            self._timeout_pool = ThreadPoolExecutor(64, thread_name_prefix="aevos-step")
        return self._timeout_pool

    # -- starting runs ----------------------------------------------------------------------

    def encode_or_reject(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> tuple[str, ProtectedInput]:
        """The run's input as stored, and the arguments the workflow receives; a refusal
        (arguments that do not fit, non-JSON values, a data policy that cannot be applied)
        is recorded as a rejected run."""
        try:
            return self.stored_input(workflow, args, kwargs, opts.tenant, opts.data_policy)
        except (SerializationError, DefinitionError, PiiError) as exc:
            self.reject(workflow.name, opts, exc)
            raise

    def data_policy_of(self, workflow: str) -> DataPolicy:
        """The data policy applied to ``workflow``'s inputs (its own, or the app's)."""
        return self._data_policies.get(workflow, self.data_policy)

    def stored_input(
        self,
        workflow: Workflow[Any, Any],
        args: Any,
        kwargs: Any,
        tenant: str,
        policy: DataPolicy | None = None,
    ) -> tuple[str, ProtectedInput]:
        """Encode a run's input with its data policy applied (``policy``, else the
        workflow's): the JSON the runs table holds and the arguments the workflow receives,
        which are the same on its first execution and on every replay."""
        from ..pii.datapolicy import protect_input

        # Arguments that do not fit the signature, or are not JSON, are refused first.
        input_json = workflow.encode_input(args, kwargs)
        services = self.services
        protected = protect_input(
            args,
            kwargs,
            workflow.signature,
            policy or self.data_policy_of(workflow.name),
            redactor=services.redactor,
            tenant=tenant,
            vault=services.configured_vault,
        )
        if protected.changed:
            input_json = codec.encode(
                {"args": list(protected.args), "kwargs": protected.kwargs},
                f"input of workflow {workflow.name!r}",
            )
        return input_json, protected

    def reject(self, workflow: str, opts: StartOptions, error: AevosError) -> str:
        """Record a run that was refused before it started, so it is visible with its reason."""
        run_id = uuid.uuid4().hex
        details = error.to_dict()
        if opts.idempotency_key is not None:
            details["idempotency_key"] = opts.idempotency_key
        self.store.insert_run(
            NewRun(
                run_id=run_id,
                workflow=workflow[:200],
                queue=opts.queue or "default",
                input_json=None,
                code_version=self.code_version,
                status=RunStatus.REJECTED,
                tenant=opts.tenant,
                error=details,
            ),
            also=self.audit_start(
                "run.rejected",
                run_id,
                workflow[:200],
                opts.tenant,
                opts.actor,
                None,
                reason=error.code,
            ),
        )
        return run_id

    def workflow_named(self, name: str) -> Workflow[Any, Any]:
        """The workflow registered as ``name`` (an :class:`UnknownWorkflowError` if none)."""
        workflow = self.workflows.get(name)
        if workflow is None:
            raise UnknownWorkflowError(
                f"no workflow named {name[:200]!r} is registered "
                f"(known: {', '.join(sorted(self.workflows)) or 'none'})"
            )
        return workflow

    def start(
        self, workflow: str, args: Sequence[Any], kwargs: dict[str, Any], opts: StartOptions
    ) -> RunHandle[Any]:
        """Start by name with options already checked (the API's and the CLI's path): an
        unknown name is recorded as a REJECTED run, in ``opts.tenant``, before it is raised."""
        try:
            wf = self.workflow_named(workflow)
        except UnknownWorkflowError as error:
            self.reject(workflow, opts, error)
            raise
        if opts.queue is not None:
            self.queue_named(opts.queue)
        return self.enqueue(wf, args, kwargs, opts)

    def enqueue(
        self,
        workflow: Workflow[Any, R],
        args: Any,
        kwargs: Any,
        opts: StartOptions,
        *,
        also: Callable[[UnitOfWork, str], object] | None = None,
        **data: Any,
    ) -> RunHandle[R]:
        """Record a run for a worker (its start audited in the same transaction, with
        ``data``). ``also(uow, run_id)`` commits with the run when it is created (a
        schedule's claim of its tick, an event's record) and is not called when the
        idempotency key already had a run; when it raises, the run is not created."""
        input_json, protected = self.encode_or_reject(workflow, args, kwargs, opts)
        info = self.insert_started(
            NewRun(
                run_id=opts.run_id or uuid.uuid4().hex,
                workflow=workflow.name,
                queue=opts.queue or workflow.queue,
                input_json=input_json,
                code_version=self.code_version,
                tenant=opts.tenant,
                priority=opts.priority,
                idempotency_key=opts.idempotency_key,
            ),
            opts.actor,
            protected,
            also=also,
            idempotency_key=opts.idempotency_key,
            **data,
        )
        return RunHandle(self, info.run_id)

    def prepare(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> PreparedStart:
        """A run ready to be enqueued with others (:meth:`enqueue_prepared`): its input
        encoded under its data policy; a refusal is recorded as a REJECTED run and raised."""
        input_json, protected = self.encode_or_reject(workflow, args, kwargs, opts)
        new = NewRun(
            run_id=opts.run_id or uuid.uuid4().hex,
            workflow=workflow.name,
            queue=opts.queue or workflow.queue,
            input_json=input_json,
            code_version=self.code_version,
            tenant=opts.tenant,
            priority=opts.priority,
            idempotency_key=opts.idempotency_key,
        )
        return PreparedStart(new, opts.actor, protected)

    def enqueue_prepared(
        self,
        prepared: Sequence[PreparedStart],
        *,
        also: Callable[[UnitOfWork, list[bool]], object] | None = None,
    ) -> list[tuple[str, bool]]:
        """Enqueue many runs in one transaction, each audited (``run.started``) with it:
        per run, the id of the run holding its key and whether it was created here.
        ``also(uow, created)`` commits with them; the audit records are appended last, so
        the tenant's chain is locked only for the end of the transaction."""
        audit = self.services.audit

        def record(uow: UnitOfWork, created: list[bool]) -> None:
            if also is not None:
                also(uow, created)
            audit.append_many(
                [
                    self._start_event(
                        "run.started",
                        p.new.run_id,
                        p.new.workflow,
                        p.new.tenant,
                        p.actor,
                        p.new.input_json,
                        idempotency_key=p.new.idempotency_key,
                        pii=p.protected.summary(),
                    )
                    for p, made in zip(prepared, created, strict=True)
                    if made
                ],
                uow=uow,
            )

        result = self.store.insert_runs([p.new for p in prepared], also=record)
        self.wake()
        return result

    def insert_started(
        self,
        new: NewRun,
        actor: str | None,
        protected: ProtectedInput,
        *,
        also: Callable[[UnitOfWork, str], object] | None = None,
        **data: Any,
    ) -> RunInfo:
        """Record an enqueued run with its ``run.started`` audit record (``data`` and what
        its data policy found) in one transaction, and wake the workers. The run with the
        same idempotency key is returned when there is one. ``also(uow, run_id)`` runs
        first in that transaction when the run is created."""
        audit = self.audit_start(
            "run.started",
            new.run_id,
            new.workflow,
            new.tenant,
            actor,
            new.input_json,
            **data,
            pii=protected.summary(),
        )

        def record(uow: UnitOfWork) -> None:
            if also is not None:
                also(uow, new.run_id)
            audit(uow)

        info, _ = self.insert_run(new, also=record)
        self.wake()
        return info

    def insert_run(
        self, new: NewRun, also: Callable[[UnitOfWork], object] | None = None
    ) -> tuple[RunInfo, bool]:
        """``store.insert_run``, with the run's trace context when tracing is on."""
        if self.tracing is None:
            return self.store.insert_run(new, also=also)
        info, created, context = insert_traced(self.tracing, self.store, new, also)
        if created and new.owner == self.owner:
            # Executed by this thread next (inline and child runs): spares reading it back.
            self._started_traces[new.run_id] = context
        return info, created

    def started_trace(self, run_id: str) -> tuple[str, str | None] | None:
        """The trace context of a run this process just created to execute, taken once."""
        return self._started_traces.pop(run_id, None)

    def _start_event(
        self,
        action: str,
        run_id: str,
        workflow: str,
        tenant: str,
        actor: str | None,
        input_json: str | None,
        **data: Any,
    ) -> AuditEvent:
        if input_json is not None:
            # The same digest lineage shows: canonical JSON of the recorded input.
            data["input_digest"] = codec.digest(codec.decode(input_json))
        return AuditEvent(
            action=action,
            actor=actor or f"system:{self.owner}",
            tenant=tenant,
            subject=f"workflow:{workflow}",
            run_id=run_id,
            data={k: v for k, v in data.items() if v is not None},
        )

    def audit_start(
        self,
        action: str,
        run_id: str,
        workflow: str,
        tenant: str,
        actor: str | None,
        input_json: str | None,
        **data: Any,
    ) -> Callable[[UnitOfWork], object]:
        """The audit append that commits with a new run's row."""
        event = self._start_event(action, run_id, workflow, tenant, actor, input_json, **data)
        audit = self.services.audit
        return lambda uow: audit.append(event, uow=uow)

    def buffer_start(
        self,
        run_id: str,
        workflow: str,
        tenant: str,
        actor: str | None,
        input_json: str,
        parent_run_id: str | None = None,
        pii: dict[str, Any] | None = None,
    ) -> None:
        """Audit an inline run's start in the background: its row is already durable, and
        a commit per start would double the cost of starting a run."""
        if self._audit_buffer is None:
            from ..audit.buffer import AuditBuffer  # its thread only for apps that run inline

            self._audit_buffer = AuditBuffer(self.services.audit)
        self._audit_buffer.add(
            lambda: self._start_event(
                "run.started",
                run_id,
                workflow,
                tenant,
                actor,
                input_json,
                parent_run_id=parent_run_id,
                inline=True,
                pii=pii,
            )
        )

    def wake(self, run_id: str | None = None) -> None:
        """Something is due: a run was enqueued or, for ``run_id``, something it waits for
        arrived (a signal, a task's decision); its waiting thread and idle workers look now."""
        if run_id is not None:
            self.signal_arrived(run_id).set()
        self.work_available.set()

    # -- queries and operator actions -------------------------------------------------------

    def handle(self, run_id: str) -> RunHandle[Any]:
        self.store.run_status(run_id)  # RunNotFoundError for unknown ids
        return RunHandle(self, run_id)

    def get_run(self, run_id: str) -> RunInfo:
        return self.store.get_run(run_id)

    def list_runs(self, **filters: Any) -> list[RunInfo]:
        return self.store.list_runs(**filters)

    def list_steps(self, run_id: str) -> list[StepInfo]:
        return self.store.list_steps(run_id)

    def cancel(
        self, run_id: str, *, also: Callable[[UnitOfWork, RunStatus], object] | None = None
    ) -> RunStatus:
        """Cancel a run (and its unfinished children). A step already executing finishes,
        but its result is not recorded and no further step starts. ``also(uow, status)``
        (who asked, for the audit log) commits with the cancellation."""
        status = self.store.cancel(run_id, also=also)
        self.leases.cancel_local(run_id)
        return status

    def resume(
        self, run_id: str, *, also: Callable[[UnitOfWork], object] | None = None
    ) -> RunHandle[Any]:
        """Re-enqueue a FAILED or CANCELLED run; completed steps are not run again.
        ``also(uow)`` (who asked, for the audit log) commits with it."""
        info = self.store.resume(run_id, also=also)
        if info.queue == INLINE_QUEUE or info.queue not in self.queues:
            log.info("resumed run %s is served by any worker's recovery of %s", run_id, info.queue)
        self.wake()
        return RunHandle(self, run_id)

    def fork(self, run_id: str, from_step: int = 0, *, queue: str | None = None) -> RunHandle[Any]:
        """A new run of the same input on the current code, reusing recorded steps before
        ``from_step``; ``from_step=0`` restarts from scratch."""
        source = self.store.get_run(run_id)
        target = queue or (source.queue if source.queue != INLINE_QUEUE else "default")
        before = self.store.load_steps(run_id, strict=False).get(from_step - 1)
        if before is not None and before.name == TASK_STEP:
            # A task belongs to its run: forking between a question and its answer asks
            # again, instead of waiting on (or reusing) the source run's task.
            from_step -= 1
        if queue is not None:
            self.queue_named(queue)
        audit = self.services.audit

        def record(uow: UnitOfWork, new: RunInfo) -> None:
            event = self._start_event(
                "run.started",
                new.run_id,
                new.workflow,
                new.tenant,
                None,
                None,
                forked_from=run_id,
                from_step=from_step,
            )
            audit.append(event, uow=uow)

        info = self.store.fork(
            run_id, from_step, uuid.uuid4().hex, self.code_version, target, also=record
        )
        self.wake()
        return RunHandle(self, info.run_id)

    def send_signal(self, run_id: str, topic: str, payload: Any = None) -> None:
        """Deliver ``payload`` to a run waiting (or about to wait) on ``topic``."""
        text = codec.encode(payload, f"signal payload for topic {topic!r}")
        self.store.send_signal(run_id, topic, text)
        event = self._signal_events.get(run_id)
        if event is not None:
            event.set()
        self.wake()

    def signal_arrived(self, run_id: str) -> threading.Event:
        """Set when something arrives for ``run_id`` while a thread of this process waits."""
        return self._signal_events.setdefault(run_id, threading.Event())

    def forget_signals(self, run_id: str) -> None:
        self._signal_events.pop(run_id, None)

    # -- executing runs (the executor's, for workflows, workers and child runs) ---------------

    def run_inline(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> Any:
        return self.executor.run_inline(workflow, args, kwargs, opts)

    def execute_inline(
        self,
        workflow: Workflow[Any, Any],
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
    ) -> object:
        return self.executor.execute_inline(
            workflow,
            run_id,
            args,
            kwargs,
            input_json,
            tenant=tenant,
            parent_run_id=parent_run_id,
            can_park=can_park,
            raise_errors=raise_errors,
            pii=pii,
        )

    def execute_claimed(self, info: RunInfo) -> object:
        return self.executor.execute_claimed(info)

    def worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 8,
        chores: Sequence[Callable[[], object]] = (),
        companions: Sequence[Companion] = (),
    ) -> Worker:
        return Worker(self, queues, concurrency=concurrency, chores=chores, companions=companions)


def _qualified(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _check_callable(func: Any, kind: str, name: str) -> None:
    if not callable(func):
        raise DefinitionError(f"@{kind} must decorate a function, got {type(func).__name__}")
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise DefinitionError(
            f"{kind} {name!r} must take the context as its first positional parameter "
            f"(def {getattr(func, '__name__', 'f')}(ctx, ...))"
        )
    if len(name) > 200:
        raise DefinitionError(f"{kind} name {name[:40]!r}... is longer than 200 characters")


def as_data_policy(value: Any, where: str) -> DataPolicy:
    """A :class:`~aevos.pii.DataPolicy` from a policy or its name (``"auto"``, ``"keep"``...);
    DefinitionError naming ``where`` it was given otherwise."""
    from ..pii.datapolicy import DataPolicy

    try:
        return DataPolicy.of(value)
    except PiiConfigError as exc:
        raise DefinitionError(f"{where} data_policy: {exc.message}") from None


#: A run's code version is stored in a column of 64 characters.
MAX_VERSION = 64


def _version(value: object, what: str = "code_version") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_VERSION or not value.isprintable():
        raise DefinitionError(
            f"Aevos({what}=...) must be a string of 1-{MAX_VERSION} printable characters, got "
            + (
                f"one of {len(value)} characters"
                if isinstance(value, str)
                else type(value).__name__
            )
        )
    return value


def _compatible(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if not isinstance(values, list | tuple | set | frozenset):
        # A bare string would pin the process to its single characters.
        raise DefinitionError(
            "Aevos(compatible_versions=...) must be a list of code versions, got "
            + type(values).__name__
        )
    return tuple(_version(value, "compatible_versions") for value in values)
