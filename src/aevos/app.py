"""The application object: registry of workflows, steps and queues, and the run executor."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from . import codec
from .context import TASK_STEP
from .errors import (
    AevosError,
    DefinitionError,
    PiiError,
    SerializationError,
    UnknownWorkflowError,
)
from .executor import Executor
from .handle import RunHandle
from .lease import Leases
from .metrics import CallTotalsCache
from .queue import INLINE_QUEUE, Queue
from .rejections import RejectionBudget
from .retry import RetryPolicy, as_retry_policy
from .run import NewRun, RunInfo, StepInfo
from .status import RunStatus
from .step import Step, StepContext
from .storage import Store, UnitOfWork, open_store
from .storage.store import DEFAULT_BLOB_THRESHOLD
from .workflow import StartOptions, Workflow, WorkflowDecorator

if TYPE_CHECKING:
    from .access import Access
    from .approval import Approvals
    from .audit import AuditEvent, AuditLog
    from .audit.buffer import AuditBuffer
    from .identity import Identity
    from .inbox import Inbox
    from .models.gateway import Gateway
    from .models.registry import ModelRegistry
    from .pii import Redactor, Vault
    from .pii.datapolicy import DataPolicy, ProtectedInput
    from .policy import PolicySet
    from .webhook import Mapper, WebhookSource

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DATABASE_URL = "sqlite:///./aevos.db"
log = logging.getLogger("aevos")


class Aevos(Executor):
    """One aevos application: its workflows, steps, queues, and a connection to its database.

    ``Aevos()`` reads ``AEVOS_DATABASE_URL`` (default ``sqlite:///./aevos.db``). The database
    is opened (and migrated) on first use, so decorators can run at import time. Many apps
    can live in one process; nothing is global but the log filter below.

    ``data_policy`` is what is done to personal data in run inputs before they are stored,
    for workflows that declare none (:class:`~aevos.pii.DataPolicy`; by default findings are
    tokenised, or redacted without a vault key). ``redact_logs`` installs the PII log filter
    on aevos's loggers (:func:`aevos.pii.redact_aevos_logs`; ``AEVOS_LOG_REDACTION=off``
    turns it off for the process).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        code_version: str | None = None,
        lease_seconds: float = 15.0,
        park_after: float = 5.0,
        poll_interval: float = 0.2,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
        migrate: bool = True,
        policies: str | os.PathLike[str] | PolicySet | None = None,
        data_policy: DataPolicy | str = "auto",
        redact_logs: bool = True,
    ) -> None:
        self.database_url = (
            database_url or os.environ.get("AEVOS_DATABASE_URL") or DEFAULT_DATABASE_URL
        )
        self.lease_seconds = lease_seconds
        self.park_after = park_after
        self.poll_interval = poll_interval
        self.blob_threshold = blob_threshold
        self._migrate = migrate
        self._explicit_version = code_version
        self._computed_version: str | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.workflows: dict[str, Workflow[Any, Any]] = {}
        self.steps: dict[str, Step[Any, Any]] = {}
        self.queues: dict[str, Queue] = {"default": Queue("default")}
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._leases = Leases(self)
        self._signal_events: dict[str, threading.Event] = {}
        self._work_available = threading.Event()
        self._timeout_pool: ThreadPoolExecutor | None = None
        self._audit: AuditLog | None = None
        self._policies = policies
        self.data_policy: DataPolicy = _data_policy(data_policy, "Aevos(...)")
        self._data_policies: dict[str, DataPolicy] = {}
        if redact_logs:
            from .pii.logs import redact_aevos_logs

            redact_aevos_logs()
        self._redactor: Redactor | None = None
        self._vault: Vault | None = None
        self._models: ModelRegistry | None = None
        self._gateway: Gateway | None = None
        self._audit_buffer: AuditBuffer | None = None
        self._identity: Identity | None = None
        self.webhooks: dict[str, WebhookSource] = {}
        # Rejected webhook deliveries recorded one by one, per source; a flood is counted.
        self._webhook_refusals = RejectionBudget()
        # /metrics adds up each tenant's model calls once, then only what was appended since.
        self._call_totals = CallTotalsCache()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(
                        self.database_url, migrate=self._migrate, blob_threshold=self.blob_threshold
                    )
        return self._store

    @property
    def audit(self) -> AuditLog:
        """The tenant-chained audit log (HMAC-keyed when AEVOS_AUDIT_KEY is set)."""
        if self._audit is None:
            from .audit import AuditLog

            self._audit = AuditLog.from_env(self.store)
        return self._audit

    @property
    def policies(self) -> PolicySet:
        """The policies ``ctx.decide`` evaluates: ``Aevos(policies="policies/")`` or
        ``AEVOS_POLICY_DIR``; loaded (and validated, with file:line errors) on first use."""
        from .policy import PolicySet

        if not isinstance(self._policies, PolicySet):
            source = self._policies or os.environ.get("AEVOS_POLICY_DIR")
            if source is None:
                raise DefinitionError(
                    "no policies configured: pass Aevos(policies='path/to/policies') or set "
                    "AEVOS_POLICY_DIR"
                )
            self._policies = PolicySet.load(source)
        return self._policies

    def _configured_policies(self) -> PolicySet | None:
        """The policies, or None when the app has none configured (no error: the gateway
        applies ``model_call`` policies only where there are some)."""
        if self._policies is None and not os.environ.get("AEVOS_POLICY_DIR"):
            return None
        return self.policies

    @property
    def redactor(self) -> Redactor:
        """The PII redactor ``ctx.redact`` uses (built-in recognisers unless replaced)."""
        if self._redactor is None:
            from .pii import Redactor

            self._redactor = Redactor()
        return self._redactor

    @redactor.setter
    def redactor(self, redactor: Redactor) -> None:
        self._redactor = redactor

    @property
    def vault(self) -> Vault:
        """The PII vault for reversible tokenisation, keyed by ``AEVOS_VAULT_KEY``."""
        if self._vault is None:
            from .pii import Vault

            self._vault = Vault.from_env(self.store)
        return self._vault

    @vault.setter
    def vault(self, vault: Vault) -> None:
        """Use this vault (a key from a secret manager rather than the environment)."""
        self._vault = vault

    def _vault_if_configured(self) -> Vault | None:
        """The vault, or None when no key is set (a malformed key still raises)."""
        from .pii.vault import ENV_VAR

        if self._vault is None and not os.environ.get(ENV_VAR):
            return None
        return self.vault

    @property
    def models(self) -> ModelRegistry:
        """The model registry: content-addressed versions, cards, aliases, rollback."""
        if self._models is None:
            from .models.registry import ModelRegistry

            self._models = ModelRegistry(self.store, self.audit)
        return self._models

    @property
    def gateway(self) -> Gateway:
        """The model gateway: routing, canaries, shadows, cascades, fallbacks, breakers,
        budgets and rate limits reserved before each call, the ``model_call`` policy of
        each model applied to every call (when the app has one), every call recorded."""
        if self._gateway is None:
            from .models.gateway import Gateway
            from .policy.model_call import ModelCallGate

            gate = ModelCallGate(self._configured_policies, lambda: self.redactor)
            self._gateway = Gateway(self.store, self.models, self.audit, gate=gate)
        return self._gateway

    @property
    def tasks(self) -> Inbox:
        """Human tasks: list, claim, release, reassign, submit, escalate; feedback records."""
        from .inbox import Inbox

        return Inbox(self)

    @property
    def approvals(self) -> Approvals:
        """Gated actions (promotions) waiting for a second person: list, approve, reject."""
        from .approval import Approvals

        return Approvals(self)

    @property
    def identity(self) -> Identity:
        """Tokens, roles and tenants; every refusal goes to the audit log."""
        if self._identity is None:
            from .identity import Identity

            self._identity = Identity(self.store, self._audit_refusal)
        return self._identity

    @property
    def access(self) -> Access:
        """The governed entry point for requests that carry a token (the API uses it)."""
        from .access import Access

        return Access(self)

    def _audit_refusal(
        self,
        action: str,
        actor: str,
        tenant: str,
        reason: str,
        data: dict[str, Any],
        *,
        uow: UnitOfWork | None = None,
    ) -> None:
        from .audit import AuditEvent

        self.audit.append(
            AuditEvent(action=action, actor=actor, tenant=tenant, data={"reason": reason, **data}),
            uow=uow,
        )

    def flush_refusals(self, now: float | None = None) -> None:
        """Record the counts of refusals (failed authentications, rejected webhook
        deliveries) whose flood window ended; workers call this, and ``close`` with every
        window."""
        from .webhook import Ingress

        moment = time.time() if now is None else now
        Ingress(self).flush_refusals(moment)
        if self._identity is not None:
            self._identity.flush_refusals(moment)

    def close(self) -> None:
        if self._store is not None:
            try:
                self.flush_refusals(math.inf)
            except AevosError as exc:  # closing must not fail for want of a summary
                log.error("counted refusals could not be recorded at close: %s", exc.code)
        if self._gateway is not None:
            # Writes its buffered call records and returns unspent leased budget.
            self._gateway.close()
            self._gateway = None
        self._leases.stop()
        if self._audit_buffer is not None:
            self._audit_buffer.close()  # writes what is buffered while the store is open
            self._audit_buffer = None
        if self._timeout_pool is not None:
            self._timeout_pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()
            self._store = None
        # They hold the closed store; rebuilt on the next use like the store itself.
        self._audit = None
        self._identity = None
        self._vault = None
        self._models = None

    def __enter__(self) -> Aevos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Declare a queue; workers of this app pull from it."""
        queue = Queue(name, concurrency, worker_concurrency, rate_limit, rate_period)
        self.queues[name] = queue
        return queue

    def _queue_named(self, name: str) -> Queue:
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
        """Register a workflow; its first parameter receives the :class:`WorkflowContext`.

        Plain and ``async def`` functions both work; the decorated object keeps the
        function's signature for type checkers (minus the context). ``data_policy`` says
        what is done to personal data in its inputs before they are stored (the app's
        ``data_policy`` when None; ``"keep"`` opts out; see :mod:`aevos.pii.datapolicy`).
        """
        self._queue_named(queue)
        policy = None if data_policy is None else _data_policy(data_policy, "@app.workflow")
        return WorkflowDecorator(self, name, queue, policy)

    def _register_workflow(
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
        """Register a step: its result is committed once; failures retry per ``retries``.

        ``retries`` is the maximum number of attempts (an int) or a :class:`RetryPolicy`;
        ``timeout`` bounds each attempt, in seconds.
        """
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

    def webhook(
        self,
        name: str,
        *,
        workflow: str,
        tenant: str = "default",
        secret: str | bytes | None = None,
        previous_secret: str | bytes | None = None,
        map: Mapper | None = None,
        queue: str | None = None,
        tolerance: float | None = None,
        max_body: int | None = None,
        rejections_per_minute: int | None = None,
        data_policy: DataPolicy | str | None = None,
    ) -> WebhookSource:
        """Declare a webhook source: each ``POST /v1/events/{name}`` starts a run of
        ``workflow`` in ``tenant`` with the keyword arguments ``map(event)`` returns,
        idempotent by the sender's event id.

        With ``secret`` (and ``previous_secret`` while rotating it), deliveries must be
        signed (HMAC-SHA256, ``X-Aevos-Signature``, within ``tolerance`` seconds, default
        300); without, they need a bearer token of ``tenant`` that may start runs. Bodies
        past ``max_body`` bytes (default 1 MiB) are refused. Past ``rejections_per_minute``
        rejected deliveries (default 60) a minute's further rejections are counted and
        recorded as one summary (:mod:`aevos.rejections`). ``data_policy`` replaces the
        workflow's for the runs this source starts (:mod:`aevos.pii.datapolicy`). See
        :mod:`aevos.webhook`.
        """
        from .webhook import WebhookSource

        if name in self.webhooks:
            raise DefinitionError(f"webhook source {name!r} is declared twice")
        if queue is not None:
            self._queue_named(queue)
        source = WebhookSource.declare(
            name,
            workflow=workflow,
            tenant=tenant,
            secret=secret,
            previous_secret=previous_secret,
            map=map,
            queue=queue,
            tolerance=tolerance,
            max_body=max_body,
            rejections_per_minute=rejections_per_minute,
            data_policy=None
            if data_policy is None
            else _data_policy(data_policy, f"webhook source {name!r}"),
        )
        self.webhooks[name] = source
        return source

    # -- starting runs ----------------------------------------------------------------------

    def _encode_or_reject(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> tuple[str, ProtectedInput]:
        """The run's input as stored, and the arguments the workflow receives; a refusal
        (arguments that do not fit, non-JSON values, a data policy that cannot be applied)
        is recorded as a rejected run."""
        try:
            return self._stored_input(workflow, args, kwargs, opts.tenant, opts.data_policy)
        except (SerializationError, DefinitionError, PiiError) as exc:
            self._reject(workflow.name, opts, exc)
            raise

    def data_policy_of(self, workflow: str) -> DataPolicy:
        """The data policy applied to ``workflow``'s inputs (its own, or the app's)."""
        return self._data_policies.get(workflow, self.data_policy)

    def _stored_input(
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
        from .pii.datapolicy import protect_input

        # Arguments that do not fit the signature, or are not JSON, are refused first.
        input_json = workflow._encode_input(args, kwargs)
        protected = protect_input(
            args,
            kwargs,
            workflow._signature,
            policy or self.data_policy_of(workflow.name),
            redactor=self.redactor,
            tenant=tenant,
            vault=self._vault_if_configured,
        )
        if protected.changed:
            input_json = codec.encode(
                {"args": list(protected.args), "kwargs": protected.kwargs},
                f"input of workflow {workflow.name!r}",
            )
        return input_json, protected

    def _reject(self, workflow: str, opts: StartOptions, error: AevosError) -> str:
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
            also=self._audit_start(
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

    def start(self, workflow: str, /, *args: Any, **kwargs: Any) -> RunHandle[Any]:
        """Enqueue a run of the workflow registered as ``workflow``, with default options.

        Every argument after the name, keywords included, is the workflow's: a keyword the
        function does not take is a :class:`~aevos.errors.WorkflowArgumentError`, recorded
        as a REJECTED run like an unknown name. To start by name with options, use
        ``app.workflow_named(name).options(idempotency_key=..., ...).start(...)``.
        """
        return self._start_named(workflow, args, kwargs, StartOptions())

    def workflow_named(self, name: str) -> Workflow[Any, Any]:
        """The workflow registered as ``name`` (an :class:`UnknownWorkflowError` if none),
        for starting it by name with options: ``app.workflow_named(name).options(...)``."""
        workflow = self.workflows.get(name)
        if workflow is None:
            raise UnknownWorkflowError(
                f"no workflow named {name[:200]!r} is registered "
                f"(known: {', '.join(sorted(self.workflows)) or 'none'})"
            )
        return workflow

    def _start_named(
        self, workflow: str, args: Sequence[Any], kwargs: dict[str, Any], opts: StartOptions
    ) -> RunHandle[Any]:
        """Start by name with options already checked (the API's and the CLI's path): an
        unknown name is recorded as a REJECTED run, in ``opts.tenant``, before it is raised."""
        try:
            wf = self.workflow_named(workflow)
        except UnknownWorkflowError as error:
            self._reject(workflow, opts, error)
            raise
        if opts.queue is not None:
            self._queue_named(opts.queue)
        return self._enqueue(wf, args, kwargs, opts)

    def _enqueue(
        self, workflow: Workflow[Any, R], args: Any, kwargs: Any, opts: StartOptions
    ) -> RunHandle[R]:
        input_json, protected = self._encode_or_reject(workflow, args, kwargs, opts)
        run_id = opts.run_id or uuid.uuid4().hex
        info, _ = self.store.insert_run(
            NewRun(
                run_id=run_id,
                workflow=workflow.name,
                queue=opts.queue or workflow.queue,
                input_json=input_json,
                code_version=self.code_version,
                tenant=opts.tenant,
                priority=opts.priority,
                idempotency_key=opts.idempotency_key,
            ),
            also=self._audit_start(
                "run.started",
                run_id,
                workflow.name,
                opts.tenant,
                opts.actor,
                input_json,
                idempotency_key=opts.idempotency_key,
                pii=protected.summary(),
            ),
        )
        self._notify_enqueued()
        return RunHandle(self, info.run_id)

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
        from .audit import AuditEvent

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

    def _audit_start(
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
        audit = self.audit
        return lambda uow: audit.append(event, uow=uow)

    def _buffer_start(
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
            from .audit.buffer import AuditBuffer

            self._audit_buffer = AuditBuffer(self.audit)
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

    def _notify_enqueued(self) -> None:
        self._work_available.set()

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

    def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run (and its unfinished children). A step already executing finishes,
        but its result is not recorded and no further step starts."""
        status = self.store.cancel(run_id)
        self._leases.cancel_local(run_id)
        return status

    def resume(self, run_id: str) -> RunHandle[Any]:
        """Re-enqueue a FAILED or CANCELLED run; completed steps are not run again."""
        info = self.store.resume(run_id)
        if info.queue == INLINE_QUEUE or info.queue not in self.queues:
            log.info("resumed run %s is served by any worker's recovery of %s", run_id, info.queue)
        self._notify_enqueued()
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
            self._queue_named(queue)
        audit = self.audit

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
        self._notify_enqueued()
        return RunHandle(self, info.run_id)

    def send_signal(self, run_id: str, topic: str, payload: Any = None) -> None:
        """Deliver ``payload`` to a run waiting (or about to wait) on ``topic``."""
        text = codec.encode(payload, f"signal payload for topic {topic!r}")
        self.store.send_signal(run_id, topic, text)
        event = self._signal_events.get(run_id)
        if event is not None:
            event.set()
        self._notify_enqueued()

    def _signal_arrived(self, run_id: str) -> threading.Event:
        return self._signal_events.setdefault(run_id, threading.Event())

    def worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 8,
    ) -> Any:
        """A worker pulling this app's queues (all of them unless named)."""
        from .worker import Worker

        return Worker(self, queues, concurrency=concurrency)


def _data_policy(value: Any, where: str) -> DataPolicy:
    from .errors import PiiConfigError
    from .pii.datapolicy import DataPolicy

    try:
        return DataPolicy.of(value)
    except PiiConfigError as exc:
        raise DefinitionError(f"{where} data_policy: {exc.message}") from None


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
