"""The application object: the composition root of aevos.

:class:`Aevos` builds every service once, bottom-up, on first use, and hands each only the
collaborators it uses: the store; the audit log over it; identity (tokens and roles); the
policies, the PII redactor and vault; the model registry and the gateway over it; the
kernel's :class:`~aevos.kernel.runtime.Runtime` (workflows, steps, queues, runs), which
reaches these through :class:`~aevos.kernel.services.Services`; the reviewer inbox, the
approvals and webhook ingress above the kernel; and :class:`~aevos.access.Access`, the
guard the HTTP API and the console go through. Nothing below this module imports it
(``docs/architecture.md``; import-linter checks it).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ..audit.rejections import RejectionBudget
from ..errors import AevosError, DefinitionError
from ..kernel.handle import RunHandle
from ..kernel.retry import RetryPolicy
from ..kernel.runtime import Runtime
from ..kernel.step import Step, StepContext
from ..kernel.worker import Companion, Worker
from ..kernel.workflow import StartOptions, WorkflowDecorator
from ..people.asking import Asking
from ..records.queue import Queue
from ..records.run import RunInfo, StepInfo
from ..records.status import RunStatus
from ..storage import Store, UnitOfWork, open_store
from ..storage.store import DEFAULT_BLOB_THRESHOLD
from ..telemetry.metrics import CallTotalsCache
from .integrations import Integrations

if TYPE_CHECKING:
    from ..access import Access
    from ..audit import AuditLog
    from ..cases import KeptCases
    from ..connectors import OutboxRelay
    from ..events.files import FileTrigger
    from ..events.nats import NatsTrigger
    from ..events.webhook import WebhookSource
    from ..evolution.certifications import Certifications
    from ..evolution.datasets import Datasets
    from ..evolution.labels import Labels
    from ..evolution.registry import RecipeRegistry
    from ..identity import Identity
    from ..kernel.workflow import Workflow
    from ..models.gateway import Gateway
    from ..models.promotion import PromotionGate
    from ..models.registry import ModelRegistry
    from ..monitoring import Monitors
    from ..people.approvals import Approvals
    from ..people.inbox import Inbox
    from ..pii import Redactor, Vault
    from ..pii.datapolicy import DataPolicy
    from ..policy import CaseRetention, PolicySet
    from ..retraining import Retraining, TrainingData
    from ..rollouts import Replays, Rollouts
    from ..schedules import Schedules
    from ..telemetry import Reports
    from ..telemetry.tracing import Tracer, TracingConfig

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DATABASE_URL = "sqlite:///./aevos.db"
log = logging.getLogger("aevos")


class Aevos(Integrations):
    """One aevos application: its workflows, steps, queues, and a connection to its database.

    ``Aevos()`` reads ``AEVOS_DATABASE_URL`` (default ``sqlite:///./aevos.db``). The database
    is opened (and migrated) on first use, so decorators can run at import time. Many apps
    can live in one process; nothing is global but the log filter below.

    ``code_version`` names the code each run records it started on (default: a digest of
    the registered workflows' and steps' source); ``compatible_versions`` pins this process
    to runs started on its own version or one of these (default None: runs of any version).

    ``data_policy`` is what is done to personal data in run inputs before they are stored,
    for workflows that declare none (:class:`~aevos.pii.DataPolicy`; by default findings are
    tokenised, or redacted without a vault key). ``redact_logs`` installs the PII log filter
    on aevos's loggers (:func:`aevos.pii.redact_aevos_logs`; ``AEVOS_LOG_REDACTION=off``
    turns it off for the process).

    ``tracing`` sends OpenTelemetry traces (:mod:`aevos.telemetry.tracing`): a
    :class:`~aevos.telemetry.tracing.TracingConfig`; None (the default) traces only when the
    standard ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` variable is set; False never.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        code_version: str | None = None,
        compatible_versions: Sequence[str] | None = None,
        lease_seconds: float = 15.0,
        park_after: float = 5.0,
        poll_interval: float = 0.2,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
        migrate: bool = True,
        policies: str | os.PathLike[str] | PolicySet | None = None,
        data_policy: DataPolicy | str = "auto",
        redact_logs: bool = True,
        tracing: TracingConfig | bool | None = None,
    ) -> None:
        self.database_url = (
            database_url or os.environ.get("AEVOS_DATABASE_URL") or DEFAULT_DATABASE_URL
        )
        self.blob_threshold = blob_threshold
        self._migrate = migrate
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._audit: AuditLog | None = None
        self._policies = policies
        if redact_logs:
            from ..pii.logs import redact_aevos_logs

            redact_aevos_logs()
        self._redactor: Redactor | None = None
        self._vault: Vault | None = None
        self._models: ModelRegistry | None = None
        self._gateway: Gateway | None = None
        self._identity: Identity | None = None
        self._recipes: RecipeRegistry | None = None
        self._retraining: Retraining | None = None
        self._replays: Replays | None = None
        self._rollouts: Rollouts | None = None
        self._monitors: Monitors | None = None
        self._relay: OutboxRelay | None = None
        self._schedules: Schedules | None = None
        self.webhooks: dict[str, WebhookSource] = {}
        self.nats_triggers: dict[str, NatsTrigger] = {}
        self.file_triggers: dict[str, FileTrigger] = {}
        # Rejected webhook deliveries recorded one by one, per source; a flood is counted.
        self.webhook_refusals = RejectionBudget()
        # /metrics adds up each tenant's model calls once, then only what was appended since.
        self.call_totals = CallTotalsCache()
        self._cases: KeptCases | None = None
        self._asking = Asking(cases=lambda: self.cases)
        self.runtime = Runtime(
            self,
            code_version=code_version,
            compatible_versions=compatible_versions,
            lease_seconds=lease_seconds,
            park_after=park_after,
            poll_interval=poll_interval,
            data_policy=data_policy,
        )
        #: The app's tracer, or None when tracing is off (the kernel then skips its hooks).
        self.tracer: Tracer | None = self._tracer(tracing)
        self.runtime.tracing = self.tracer

    def _tracer(self, tracing: TracingConfig | bool | None) -> Tracer | None:
        if tracing is False:
            return None
        if tracing is None and not (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        ):
            return None  # OpenTelemetry is not even imported
        from ..telemetry.tracing import Tracer, TracingConfig

        if isinstance(tracing, TracingConfig):
            config: TracingConfig | None = tracing
        else:
            config = TracingConfig.from_env()
            if config is None and tracing is True:
                config = TracingConfig()  # spans made, exported nowhere: a provider's job
        if config is None:
            return None
        return Tracer(
            config, data_policy_of=self.runtime.data_policy_of, redactor=lambda: self.redactor
        )

    # -- services, built bottom-up on first use ------------------------------------------------

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
            from ..audit import AuditLog

            self._audit = AuditLog.from_env(self.store)
        return self._audit

    @property
    def policies(self) -> PolicySet:
        """The policies ``ctx.decide`` evaluates: ``Aevos(policies="policies/")`` or
        ``AEVOS_POLICY_DIR``; loaded (and validated, with file:line errors) on first use."""
        from ..policy import PolicySet

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
            from ..pii import Redactor

            self._redactor = Redactor()
        return self._redactor

    @redactor.setter
    def redactor(self, redactor: Redactor) -> None:
        self._redactor = redactor

    @property
    def vault(self) -> Vault:
        """The PII vault for reversible tokenisation, keyed by ``AEVOS_VAULT_KEY``."""
        if self._vault is None:
            from ..pii import Vault

            self._vault = Vault.from_env(self.store)
        return self._vault

    @vault.setter
    def vault(self, vault: Vault) -> None:
        """Use this vault (a key from a secret manager rather than the environment)."""
        self._vault = vault

    def configured_vault(self) -> Vault | None:
        """The vault, or None when no key is set (a malformed key still raises)."""
        from ..pii.vault import ENV_VAR

        if self._vault is None and not os.environ.get(ENV_VAR):
            return None
        return self.vault

    @property
    def models(self) -> ModelRegistry:
        """The model registry: content-addressed versions, cards, aliases, rollback."""
        if self._models is None:
            from ..models.registry import ModelRegistry

            self._models = ModelRegistry(self.store, self.audit)
        return self._models

    @property
    def gateway(self) -> Gateway:
        """The model gateway: routing, canaries, shadows, cascades, fallbacks, breakers,
        budgets and rate limits reserved before each call, the ``model_call`` policy of
        each model applied to every call (when the app has one), every call recorded."""
        if self._gateway is None:
            from ..models.gateway import Gateway
            from ..policy.model_call import ModelCallGate

            gate = ModelCallGate(self._configured_policies, lambda: self.redactor)
            self._gateway = Gateway(
                self.store, self.models, self.audit, gate=gate, cases=self.cases
            )
        return self._gateway

    @gateway.setter
    def gateway(self, gateway: Gateway) -> None:
        """Use ``gateway`` (one built with other breaker, leasing or flush settings) for
        ``ctx.predict`` and the API; the app closes it when it closes."""
        self._gateway = gateway

    @property
    def cases(self) -> KeptCases:
        """Kept cases: what each model call and human task saw, after the data policy,
        encrypted per tenant with keys derived from the vault key (none are kept without
        one); read, list, forget by run or data subject (:mod:`aevos.cases`)."""
        if self._cases is None:
            from ..cases import KeptCases

            self._cases = KeptCases(
                self.store,
                self.audit,
                vault=self.configured_vault,
                retention=self._case_retention,
                protect=self._protect_case,
            )
        return self._cases

    def _case_retention(self, model: str) -> CaseRetention | None:
        """What the ``model_call`` policy governing ``model`` says of its cases."""
        gate = self.gateway.gate
        if gate is None:
            return None
        try:
            policy = gate.policy_for(model)
        except AevosError:
            return None  # a misconfigured policy already refuses the model's calls
        return None if policy is None else policy.cases

    def _protect_case(self, tenant: str, workflow: str | None, value: Any) -> Any:
        """``value`` with the data policy of ``workflow`` (the app's when None) applied."""
        from ..pii.datapolicy import protect_value

        policy = self.runtime.data_policy if workflow is None else self.data_policy_of(workflow)
        protected, _ = protect_value(
            value, policy, redactor=self.redactor, tenant=tenant, vault=self.configured_vault
        )
        return protected

    @property
    def promotions(self) -> PromotionGate:
        """The promotion gate: the policy judges, the registry promotes (the API, the
        console and ``aevos models promote`` all go through it)."""
        from ..models.promotion import PromotionGate

        return PromotionGate(
            self.models, lambda: self.policies, self.audit, evidence=self._kept_evidence
        )

    def _kept_evidence(self, tenant: str, model: str, version: int) -> dict[str, Any]:
        """What the promotion gate adds to a promotion's evidence from the records: the
        latest replay of the version (nothing when it was never replayed)."""
        with self.store.reading() as uow:
            replay = uow.replays.latest(tenant, model, version)
        return {} if replay is None else {"replay": replay.evidence()}

    @property
    def human_tasks(self) -> Asking:
        """How ``ctx.ask_human`` asks a person (the kernel's view of :mod:`aevos.people`)."""
        return self._asking

    @property
    def tasks(self) -> Inbox:
        """Human tasks: list, claim, release, reassign, submit, escalate; feedback records."""
        from ..people.inbox import Inbox

        return Inbox(self.store, self.audit, self.runtime.wake, self.owner)

    @property
    def labels(self) -> Labels:
        """Labels of kept cases: late ground truth (outranks reviewers), lists, conflicts."""
        from ..evolution.labels import Labels

        return Labels(self.store, self.audit)

    @property
    def reports(self) -> Reports:
        """Reports over the tenant's history: ``app.reports.evolution(model, tenant=...)``,
        automation, precision, reviews, cost and drift over time with the model's version
        changes, rollouts, retrainings and alerts marked (aevos.telemetry.report)."""
        from ..telemetry import Reports

        return Reports(self.store)

    @property
    def datasets(self) -> Datasets:
        """Content-addressed dataset versions of labels: snapshot, list, show, export."""
        from ..evolution.datasets import Datasets

        return Datasets(self.store, self.audit, lambda: self.cases)

    @property
    def approvals(self) -> Approvals:
        """Gated actions (promotions) waiting for a second person: list, approve, reject."""
        from ..people.approvals import Approvals

        return Approvals(self.store, self.audit, lambda: self.policies, self.models, self.owner)

    @property
    def certifications(self) -> Certifications:
        """Certified automation thresholds of model versions: record, latest, history;
        the gateway stamps each answer with its version's (``CallResult.certified``)."""
        from ..evolution.certifications import Certifications

        return Certifications(self.store, self.audit, self.models, self._certified)

    @property
    def recipes(self) -> RecipeRegistry:
        """The training recipes models are retrained with: the built-ins, and the app's own
        (``@app.recipes.recipe("name", version=1, params=Params)``)."""
        if self._recipes is None:
            from ..evolution.registry import RecipeRegistry

            self._recipes = RecipeRegistry()
        return self._recipes

    @property
    def retraining(self) -> Retraining:
        """Retraining of models: configure (recipe, parameters, triggers), start (a run of
        the durable workflow ``aevos.retraining`` on a worker), list. Built once per app:
        building it registers the workflow and its queue."""
        if self._retraining is None:
            from ..retraining import Retraining

            self._retraining = Retraining(
                self.runtime,
                self.store,
                self.audit,
                self.models,
                self.recipes,
                data=self._training_data,
                certifications=lambda: self.certifications,
                promotions=lambda: self.promotions,
                approvals=lambda: self.approvals,
                rollouts=lambda: self.rollouts,
            )
        return self._retraining

    @property
    def replays(self) -> Replays:
        """Replays: a candidate version re-deciding the kept cases of a window (a run of the
        durable workflow ``aevos.replay`` on a worker) before it sees live traffic; start,
        get, latest, list. Built once per app: building it registers the workflow and its
        queue."""
        if self._replays is None:
            from ..rollouts import Replays

            self._replays = Replays(
                self.runtime, self.store, self.audit, self.models, cases=lambda: self.cases
            )
        return self._replays

    @property
    def rollouts(self) -> Rollouts:
        """Rollouts of candidate versions: start, list, pause, resume, abort, promote; the
        controller (``tick``) workers run. Built once per app: building it registers the
        operator-task workflow and its queue."""
        if self._rollouts is None:
            from ..rollouts import Rollouts

            self._rollouts = Rollouts(
                self.runtime,
                self.store,
                self.audit,
                self.models,
                promotions=lambda: self.promotions,
                approvals=lambda: self.approvals,
                replays=lambda: self.replays,
            )
        return self._rollouts

    @property
    def monitors(self) -> Monitors:
        """Monitors of models: configure (window, reference, thresholds, on_alert), check
        (workers do, on each model's interval), results, alerts, acknowledge. Built once per
        app: building it registers the operator workflow ``aevos.monitor.alert``."""
        if self._monitors is None:
            from ..monitoring import Monitors

            self._monitors = Monitors(
                self.runtime,
                self.store,
                self.audit,
                cases=lambda: self.cases,
                retraining=lambda: self.retraining,
            )
        return self._monitors

    def _training_data(self) -> TrainingData:
        from ..retraining import LabelledCases

        return LabelledCases(lambda: self.datasets, lambda: self.labels)

    def _certified(self, tenant: str, model: str, version: int) -> None:
        # This process serves a new certification at once; others within their gateway's
        # certification_ttl.
        if self._gateway is not None:
            self._gateway.forget_certification(tenant, model, version)

    @property
    def identity(self) -> Identity:
        """Tokens, roles and tenants; every refusal goes to the audit log."""
        if self._identity is None:
            from ..identity import Identity

            self._identity = Identity(self.store, self._audit_refusal)
        return self._identity

    @property
    def access(self) -> Access:
        """The governed entry point for requests that carry a token (the API uses it)."""
        from ..access import Access

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
        from ..audit import AuditEvent

        self.audit.append(
            AuditEvent(action=action, actor=actor, tenant=tenant, data={"reason": reason, **data}),
            uow=uow,
        )

    def flush_refusals(self, now: float | None = None) -> None:
        """Record the counts of refusals (failed authentications, rejected webhook
        deliveries) whose flood window ended; workers call this, and ``close`` with every
        window."""
        moment = time.time() if now is None else now
        self.ingress.flush_refusals(moment)
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
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._models is not None:
            self._models.close()  # the adapters' HTTP connections
        self.runtime.close()
        if self.tracer is not None:
            # Exports what is buffered; the provider stays usable (the app may be used again)
            # and shuts down at exit.
            self.tracer.force_flush()
        if self._store is not None:
            self._store.close()
            self._store = None
        # They hold the closed store; rebuilt on the next use like the store itself.
        self._audit = None
        self._identity = None
        self._vault = None
        self._models = None
        self._cases = None

    def __enter__(self) -> Aevos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the kernel's settings and registry ----------------------------------------------------

    @property
    def owner(self) -> str:
        """This process's name in leases and audit records (host:pid:random)."""
        return self.runtime.owner

    @property
    def lease_seconds(self) -> float:
        return self.runtime.lease_seconds

    @property
    def park_after(self) -> float:
        return self.runtime.park_after

    @property
    def poll_interval(self) -> float:
        return self.runtime.poll_interval

    @property
    def workflows(self) -> dict[str, Workflow[Any, Any]]:
        return self.runtime.workflows

    @property
    def steps(self) -> dict[str, Step[Any, Any]]:
        return self.runtime.steps

    @property
    def queues(self) -> dict[str, Queue]:
        return self.runtime.queues

    @property
    def code_version(self) -> str:
        """A digest of every registered workflow's and step's source, unless set explicitly."""
        return self.runtime.code_version

    @property
    def data_policy(self) -> DataPolicy:
        """What is done to personal data in the inputs of workflows that declare no policy."""
        return self.runtime.data_policy

    @data_policy.setter
    def data_policy(self, policy: DataPolicy) -> None:
        self.runtime.data_policy = policy

    def data_policy_of(self, workflow: str) -> DataPolicy:
        """The data policy applied to ``workflow``'s inputs (its own, or the app's)."""
        return self.runtime.data_policy_of(workflow)

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
        return self.runtime.queue(
            name,
            concurrency=concurrency,
            worker_concurrency=worker_concurrency,
            rate_limit=rate_limit,
            rate_period=rate_period,
        )

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
        return self.runtime.workflow(name=name, queue=queue, data_policy=data_policy)

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
        return self.runtime.step(name=name, retries=retries, timeout=timeout)

    # -- starting runs ----------------------------------------------------------------------

    def start(self, workflow: str, /, *args: Any, **kwargs: Any) -> RunHandle[Any]:
        """Enqueue a run of the workflow registered as ``workflow``, with default options.

        Every argument after the name, keywords included, is the workflow's: a keyword the
        function does not take is a :class:`~aevos.errors.WorkflowArgumentError`, recorded
        as a REJECTED run like an unknown name. To start by name with options, use
        ``app.workflow_named(name).options(idempotency_key=..., ...).start(...)``.
        """
        return self.runtime.start(workflow, args, kwargs, StartOptions())

    def workflow_named(self, name: str) -> Workflow[Any, Any]:
        """The workflow registered as ``name`` (an :class:`UnknownWorkflowError` if none),
        for starting it by name with options: ``app.workflow_named(name).options(...)``."""
        return self.runtime.workflow_named(name)

    # -- queries and operator actions -------------------------------------------------------

    def handle(self, run_id: str) -> RunHandle[Any]:
        return self.runtime.handle(run_id)

    def get_run(self, run_id: str) -> RunInfo:
        return self.runtime.get_run(run_id)

    def list_runs(self, **filters: Any) -> list[RunInfo]:
        return self.runtime.list_runs(**filters)

    def list_steps(self, run_id: str) -> list[StepInfo]:
        return self.runtime.list_steps(run_id)

    def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run (and its unfinished children). A step already executing finishes,
        but its result is not recorded and no further step starts."""
        return self.runtime.cancel(run_id)

    def resume(self, run_id: str) -> RunHandle[Any]:
        """Re-enqueue a FAILED or CANCELLED run; completed steps are not run again."""
        return self.runtime.resume(run_id)

    def fork(self, run_id: str, from_step: int = 0, *, queue: str | None = None) -> RunHandle[Any]:
        """A new run of the same input on the current code, reusing recorded steps before
        ``from_step``; ``from_step=0`` restarts from scratch."""
        return self.runtime.fork(run_id, from_step, queue=queue)

    def send_signal(self, run_id: str, topic: str, payload: Any = None) -> None:
        """Deliver ``payload`` to a run waiting (or about to wait) on ``topic``."""
        self.runtime.send_signal(run_id, topic, payload)

    def worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 8,
        events: bool = True,
    ) -> Worker:
        """A worker pulling this app's queues (all of them unless named). Between claims it
        escalates tasks past their SLA, expires approvals, deletes kept cases past their
        retention, starts the retrainings their triggers call for (every N labels, a
        schedule; when the app uses retraining), checks monitored models on their
        interval (when the app uses monitors), starts the runs of due schedule ticks,
        relays the outbox (when the app has a relay) and records counted refusals. With
        ``events`` it also consumes the app's NATS triggers."""
        from ..events.nats import TriggerRunner

        companions: list[Companion] = (
            [TriggerRunner(self.triggers, list(self.nats_triggers.values()))]
            if events and self.nats_triggers
            else []
        )
        if events and self.file_triggers:
            companions.append(self.file_watcher())
        return self.runtime.worker(
            queues,
            concurrency=concurrency,
            chores=(
                self._escalate_tasks,
                self._expire_approvals,
                self._sweep_cases,
                self._sweep_retraining,
                self._tick_rollouts,
                self._sweep_monitors,
                self._relay_outbox,
                self._tick_schedules,
                self.flush_refusals,
            ),
            companions=companions,
        )

    def _escalate_tasks(self) -> None:
        for task in self.tasks.escalate_overdue():
            log.info("task %s escalated to queue %s", task.task_id, task.queue)

    def _expire_approvals(self) -> None:
        for approval in self.approvals.expire_overdue():
            log.info("approval %s expired", approval.approval_id)

    def _sweep_retraining(self) -> None:
        # Only an app that uses retraining has built the service (and registered its
        # workflow); building it here would register a queue this worker may not serve.
        if self._retraining is not None:
            for run_id in self._retraining.sweep():
                log.debug("retraining %s started by its trigger", run_id)

    def _tick_rollouts(self) -> None:
        # Like retraining: only an app that uses rollouts has built the service.
        if self._rollouts is not None:
            for rollout_id in self._rollouts.tick():
                log.info("rollout %s moved by the controller", rollout_id)

    def _sweep_monitors(self) -> None:
        # As for retraining: only an app that uses monitors has built the service.
        if self._monitors is not None:
            for model in self._monitors.sweep():
                log.debug("monitors of %s checked", model)

    def _sweep_cases(self) -> None:
        deleted = self.cases.sweep_expired()
        if deleted:
            log.info("%d kept cases past their retention deleted", deleted)
