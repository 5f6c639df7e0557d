"""Governed entry points: every request that carries a token goes through here.

Each operation authenticates nothing itself (callers pass the :class:`Principal` that
``Access.authenticate`` returned), checks the role's permission, scopes every read and
write to the principal's tenant, and records what it did in the audit log. Objects of
another tenant are refused (403, like any operation a token may not perform) and the attempt
is audited; nothing about the other tenant's object is returned or named. The HTTP API is a thin
layer over this class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .errors import AuthorizationError, ModelNotFoundError
from .handle import RunHandle
from .identity import Permission, Principal, Role
from .lineage import Lineage, lineage
from .run import RunInfo, StepInfo
from .status import RunStatus
from .task import Feedback, Task, TaskStatus
from .workflow import StartOptions

if TYPE_CHECKING:
    from .app import Aevos
    from .approval import Approval, ApprovalStatus
    from .audit import AuditRecord, VerifyReport
    from .metrics import Dashboard, ModelMetrics
    from .models.gateway import CallResult
    from .models.registry import ModelAlias
    from .models.routing import Route
    from .models.types import ModelCard, ModelVersion
    from .policy import Decision, Explanation, Policy, PolicySet


@dataclass(frozen=True)
class Promotion:
    """What a promotion request came to: the policy's decision, the promoted version (None
    when the policy denied it or it awaits a person's approval) and, when it awaits one, the
    pending :class:`~aevos.approval.Approval` another person approves or rejects."""

    decision: Decision
    promoted: ModelVersion | None
    approval: Approval | None = None

    @property
    def needs_approval(self) -> bool:
        return self.promoted is None and self.decision.result == "approve"


@dataclass(frozen=True)
class ModelOverview:
    """A registered model: its versions, oldest first, and its aliases, by alias."""

    name: str
    versions: tuple[ModelVersion, ...]
    aliases: tuple[ModelAlias, ...]


@dataclass(frozen=True)
class Registration:
    """A registered version; ``created`` is False when an identical version existed."""

    version: ModelVersion
    created: bool


#: Flavors the API registers: their artifacts are data the server only reads. The others
#: make the server call URLs, read environment variables or import packages named by the
#: version; only someone trusted with the server registers those (``aevos models register``).
API_FLAVORS = frozenset({"rules", "sklearn"})
#: Aliases that only a promotion through the policy gate may move over the API.
GATED_ALIASES = frozenset({"champion"})


class Access:
    def __init__(self, app: Aevos) -> None:
        self.app = app

    # -- identity ---------------------------------------------------------------------------

    def authenticate(self, token: str | None, *, tenant_hint: str = "default") -> Principal:
        """The principal behind a bearer token; AuthenticationError (401) otherwise."""
        return self.app.identity.authenticate(token, tenant_hint=tenant_hint)

    def _allow(self, principal: Principal, permission: Permission, action: str) -> None:
        self.app.identity.authorize(principal, permission, action=action)

    def _audit(
        self,
        principal: Principal,
        action: str,
        *,
        subject: str | None = None,
        run_id: str | None = None,
        **data: Any,
    ) -> None:
        from .audit import AuditEvent

        self.app.audit.append(
            AuditEvent(
                action=action,
                actor=principal.actor,
                tenant=principal.tenant,
                subject=subject,
                run_id=run_id,
                data=data,
            )
        )

    def _own_run(self, principal: Principal, run_id: str) -> RunInfo:
        info = self.app.store.get_run(run_id)  # RunNotFoundError for unknown ids
        if info.tenant != principal.tenant:
            self.app.identity.deny_cross_tenant(principal, "run", run_id)
            # 403, as for any request a token may not make; the message names nothing of
            # the other tenant.
            raise AuthorizationError(f"run {run_id!r} is not accessible with this token")
        return info

    # -- runs -------------------------------------------------------------------------------

    def get_run(self, principal: Principal, run_id: str, *, reveal: bool = False) -> RunInfo:
        """A run of the principal's tenant, its input as stored (its data policy applied).

        ``reveal=True`` returns the input and output with their PII tokens replaced by the
        originals: it needs ``pii:reveal`` as well (a refusal is a 403, audited), and each
        reveal is audited as ``pii.revealed`` with the run and the number of tokens.
        """
        self._allow(principal, Permission.RUNS_READ, "read runs")
        info = self._own_run(principal, run_id)
        if reveal:
            info = self._revealed_run(principal, info)
        return info

    def _revealed_run(self, principal: Principal, info: RunInfo) -> RunInfo:
        from dataclasses import replace

        from .pii.datapolicy import reveal_value

        self._allow(principal, Permission.PII_REVEAL, "reveal personal data")
        app = self.app
        value, tokens = reveal_value(
            {"input": info.input, "output": info.output},
            tenant=principal.tenant,
            vault=lambda: app.vault,
            allowed=True,
        )
        self._audit(
            principal,
            "pii.revealed",
            subject=f"run:{info.run_id}",
            run_id=info.run_id,
            tokens=tokens,
        )
        return replace(info, input=value["input"], output=value["output"])

    def list_steps(self, principal: Principal, run_id: str) -> list[StepInfo]:
        self._allow(principal, Permission.RUNS_READ, "read runs")
        self._own_run(principal, run_id)
        return self.app.store.list_steps(run_id)

    def list_runs(
        self,
        principal: Principal,
        *,
        status: list[RunStatus] | None = None,
        workflow: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunInfo]:
        self._allow(principal, Permission.RUNS_READ, "read runs")
        return self.app.store.list_runs(
            status=status, workflow=workflow, tenant=principal.tenant, limit=limit, offset=offset
        )

    def start_run(
        self,
        principal: Principal,
        workflow: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> RunInfo:
        """Start a run in the principal's tenant. ``args`` and ``kwargs`` are the workflow's
        alone (a keyword named ``tenant`` goes to the workflow, never sets the run's tenant);
        arguments that do not fit it are a :class:`~aevos.errors.WorkflowArgumentError`."""
        self._allow(principal, Permission.RUNS_START, "start runs")
        options = StartOptions(
            queue=queue,
            idempotency_key=idempotency_key,
            priority=priority,
            tenant=principal.tenant,
            actor=principal.actor,
        )
        # The kernel audits the start (or the refusal) in the run's own transaction, with
        # the principal as its actor.
        handle = self.app._start_named(workflow, args or [], kwargs or {}, options)
        return self.app.store.get_run(handle.run_id)

    def cancel_run(self, principal: Principal, run_id: str) -> RunStatus:
        self._allow(principal, Permission.RUNS_CONTROL, "cancel runs")
        self._own_run(principal, run_id)
        status = self.app.cancel(run_id)
        self._audit(principal, "run.cancelled", run_id=run_id, status=status.value)
        return status

    def resume_run(self, principal: Principal, run_id: str) -> RunInfo:
        self._allow(principal, Permission.RUNS_CONTROL, "resume runs")
        self._own_run(principal, run_id)
        self.app.resume(run_id)
        self._audit(principal, "run.resumed", run_id=run_id)
        return self.app.store.get_run(run_id)

    def fork_run(self, principal: Principal, run_id: str, from_step: int) -> RunInfo:
        self._allow(principal, Permission.RUNS_CONTROL, "fork runs")
        self._own_run(principal, run_id)
        handle: RunHandle[Any] = self.app.fork(run_id, from_step)
        self._audit(
            principal, "run.forked", run_id=handle.run_id, source=run_id, from_step=from_step
        )
        return self.app.store.get_run(handle.run_id)

    def lineage(self, principal: Principal, run_id: str) -> Lineage:
        """Why was this case decided so: the run, its steps, decisions and people."""
        self._allow(principal, Permission.RUNS_READ, "read lineage")
        self._own_run(principal, run_id)
        return lineage(self.app, run_id)

    # -- models -----------------------------------------------------------------------------

    def predict(
        self, principal: Principal, model: str, input: Any, *, key: str | None = None
    ) -> CallResult:
        """A governed model call outside workflows: the tenant's routes, budgets, rate
        limits and the model's ``model_call`` policy (seeing the principal's role) apply,
        and the call is recorded with the principal as its actor. Callers over the API
        cannot bypass the policy."""
        self._allow(principal, Permission.MODELS_CALL, "call models")
        return self.app.gateway.predict(
            model,
            input,
            key=key,
            tenant=principal.tenant,
            actor=principal.actor,
            role=principal.role.value,
        )

    def promote_model(
        self,
        principal: Principal,
        name: str,
        version: int,
        *,
        evidence: Mapping[str, Any],
        alias: str = "champion",
        policy: str = "promotion-gate",
        approved_by: Principal | None = None,
        expires_in: float | None = None,
    ) -> Promotion:
        """Move ``alias`` to ``version`` if the promotion policy allows it (an approval gate).

        The policy sees ``{"model": {"name": ...}, **evidence}`` (the candidate's and the
        champion's metrics). ``allow`` promotes; ``deny`` never does; ``approve`` promotes
        with ``approved_by``, a different principal of the tenant who may promote (four eyes,
        both present), and otherwise records a pending approval (``Promotion.approval``)
        that such a principal approves later with :meth:`approve` (it expires after
        ``expires_in`` seconds, a week by default). The decision is audited either way.
        """
        self._allow(principal, Permission.MODELS_PROMOTE, "promote models")
        registry = self.app.models
        registry.get(name, version, tenant=principal.tenant)  # 404 before deciding
        if approved_by is not None:
            self._allow(approved_by, Permission.MODELS_PROMOTE, "approve promotions")
            if approved_by.tenant != principal.tenant:
                raise AuthorizationError(
                    "a promotion must be approved by a principal of the same tenant"
                )
        # What the alias names now, read before the policy judges the evidence: a promotion
        # landing in between makes the approval stale rather than silently judged.
        alias_was = registry.aliases(name, tenant=principal.tenant).get(alias)
        # The model's name comes last: evidence cannot make the policy see another model.
        decision = self.app.policies.evaluate(policy, {**evidence, "model": {"name": name}})
        self._audit(
            principal,
            "policy.decided",
            subject=f"policy:{decision.policy}@{decision.version}",
            **decision.to_record(),
            model=f"{name}@{version}",
        )
        if decision.result == "allow":
            promoted = registry.promote(
                name, version, alias=alias, tenant=principal.tenant, by=principal.actor
            )
            return Promotion(decision, promoted)
        if decision.result != "approve":
            return Promotion(decision, None)
        from .approval import DEFAULT_TTL

        approval = self.app.approvals.request(
            principal,
            name,
            version,
            alias=alias,
            alias_was=alias_was,
            policy=policy,
            evidence=evidence,
            decision=decision,
            ttl=DEFAULT_TTL if expires_in is None else expires_in,
        )
        if approved_by is None:
            return Promotion(decision, None, approval)
        # Both people present: the same approval, approved at once, under the same checks.
        approved, promoted = self.approve(approved_by, approval.approval_id)
        return Promotion(decision, promoted, approved)

    # -- approvals ----------------------------------------------------------------------------

    def approvals(
        self,
        principal: Principal,
        *,
        status: ApprovalStatus | str | None = None,
        model: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        """The tenant's approvals, newest first."""
        self._allow(principal, Permission.MODELS_READ, "read approvals")
        return self.app.approvals.list(
            tenant=principal.tenant, status=status, model=model, limit=limit
        )

    def approval(self, principal: Principal, approval_id: str) -> Approval:
        self._allow(principal, Permission.MODELS_READ, "read approvals")
        return self._own_approval(principal, approval_id)

    def approve(
        self, principal: Principal, approval_id: str, *, reason: str | None = None
    ) -> tuple[Approval, ModelVersion]:
        """Approve a pending promotion and promote (four eyes: not the requester)."""
        self._allow(principal, Permission.MODELS_PROMOTE, "approve promotions")
        self._own_approval(principal, approval_id)
        try:
            return self.app.approvals.approve(approval_id, approver=principal, reason=reason)
        except AuthorizationError as exc:
            self._audit(
                principal, "authz.denied", reason=exc.message, attempted=f"approve {approval_id}"
            )
            raise

    def reject(
        self, principal: Principal, approval_id: str, *, reason: str | None = None
    ) -> Approval:
        """Reject (or, as its requester, withdraw) a pending promotion."""
        self._allow(principal, Permission.MODELS_PROMOTE, "reject promotions")
        self._own_approval(principal, approval_id)
        return self.app.approvals.reject(approval_id, by=principal, reason=reason)

    def _own_approval(self, principal: Principal, approval_id: str) -> Approval:
        approval = self.app.approvals.get(approval_id)  # ApprovalNotFoundError if unknown
        if approval.tenant != principal.tenant:
            self.app.identity.deny_cross_tenant(principal, "approval", approval_id)
            raise AuthorizationError(f"approval {approval_id!r} is not accessible with this token")
        return approval

    def models(self, principal: Principal) -> list[ModelOverview]:
        """The tenant's models, by name, each with its versions and aliases."""
        self._allow(principal, Permission.MODELS_READ, "read models")
        registry, tenant = self.app.models, principal.tenant
        return [
            ModelOverview(
                name,
                tuple(registry.versions(name, tenant=tenant)),
                tuple(registry.alias_details(name, tenant=tenant)),
            )
            for name in registry.names(tenant=tenant)
        ]

    def model(self, principal: Principal, name: str) -> ModelOverview:
        """The tenant's model ``name`` (404 for a name only other tenants have)."""
        self._allow(principal, Permission.MODELS_READ, "read models")
        registry, tenant = self.app.models, principal.tenant
        versions = registry.versions(name, tenant=tenant)
        return ModelOverview(
            name, tuple(versions), tuple(registry.alias_details(name, tenant=tenant))
        )

    def model_version(self, principal: Principal, name: str, ref: int | str) -> ModelVersion:
        """The version ``ref`` (a number, an alias or ``latest``) of the tenant's model."""
        self._allow(principal, Permission.MODELS_READ, "read models")
        return self.app.models.get(name, ref, tenant=principal.tenant)

    def register_model(
        self,
        principal: Principal,
        name: str,
        artifact: bytes,
        *,
        flavor: str,
        config: Mapping[str, Any] | None = None,
        card: ModelCard | None = None,
        signature: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        aliases: Sequence[str] = (),
    ) -> Registration:
        """Register ``artifact`` as the next version of the tenant's model ``name``.

        Only data flavors (:data:`API_FLAVORS`) are accepted, and their artifacts are loaded
        once, untrusted, before anything is stored: a pickle, a skops file needing types
        skops does not trust, or a table that does not parse is refused with the reason.
        Gated aliases cannot be set here (promote instead). The registry audits the new
        version and each alias it moves, with the principal as actor, in its transaction.
        """
        self._allow(principal, Permission.MODELS_WRITE, "register models")
        for alias in aliases:
            self._check_ungated(principal, name, alias)
        data = bytes(artifact)
        self._check_artifact(principal, name, data, flavor, dict(config or {}), signature)
        registry, tenant = self.app.models, principal.tenant
        try:
            before = {v.version for v in registry.versions(name, tenant=tenant)}
        except ModelNotFoundError:
            before = set()
        version = registry.register(
            name,
            data,
            flavor=flavor,
            config=config,
            card=card,
            signature=signature,
            tags=tags,
            tenant=tenant,
            created_by=principal.actor,
            aliases=aliases,
        )
        return Registration(version, version.version not in before)

    def set_model_alias(
        self, principal: Principal, name: str, alias: str, version: int
    ) -> ModelAlias:
        """Point ``alias`` of the tenant's model at ``version`` (audited by the registry as
        ``model.alias_moved`` when it moves). Gated aliases move only by promotion."""
        self._allow(principal, Permission.MODELS_WRITE, "move model aliases")
        self._check_ungated(principal, name, alias)
        self.app.models.set_alias(name, alias, version, tenant=principal.tenant, by=principal.actor)
        return self._alias(principal, name, alias)

    def rollback_model(self, principal: Principal, name: str, alias: str) -> ModelAlias:
        """Move ``alias`` back to its previous version (``model.rolled_back``, audited by the
        registry); NoPreviousVersionError (409) when it has none. Rolling back needs no
        promotion: the previous version is one the alias already served."""
        self._allow(principal, Permission.MODELS_WRITE, "roll back model aliases")
        self.app.models.rollback(name, alias, tenant=principal.tenant, by=principal.actor)
        return self._alias(principal, name, alias)

    def _alias(self, principal: Principal, name: str, alias: str) -> ModelAlias:
        details = self.app.models.alias_details(name, tenant=principal.tenant)
        return next(a for a in details if a.alias == alias)

    def _refuse(self, principal: Principal, attempted: str, reason: str) -> AuthorizationError:
        # Audited like a role's refusal: the same action, the reason and what was attempted.
        self._audit(principal, "authz.denied", reason=reason, attempted=attempted)
        return AuthorizationError(f"{principal.role.value} {principal.name!r} may not {reason}")

    def _check_ungated(self, principal: Principal, name: str, alias: str) -> None:
        if alias in GATED_ALIASES:
            raise self._refuse(
                principal,
                f"move alias {alias} of model {name}",
                f"move alias {alias!r} directly: it moves only through the promotion gate "
                f"(POST /v1/models/{name}/promote)",
            )

    def _check_artifact(
        self,
        principal: Principal,
        name: str,
        data: bytes,
        flavor: str,
        config: dict[str, Any],
        signature: Mapping[str, Any] | None,
    ) -> None:
        from .errors import UnsafeArtifactError
        from .models import flavors
        from .models.artifact import is_pickle

        if is_pickle(data):
            import hashlib

            self._audit(
                principal,
                "model.rejected",
                subject=f"model:{name}",
                model=name,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                reason="pickle",
            )
            raise UnsafeArtifactError(
                "the artifact is a pickle, which can run arbitrary code while it loads; the "
                "API never accepts one. Save scikit-learn models as skops "
                "(aevos.models.artifact.dump_sklearn)"
            )
        if flavor not in API_FLAVORS:
            raise self._refuse(
                principal,
                f"register a {flavor} version of model {name}",
                f"register {flavor!r} versions over the API (it takes "
                f"{', '.join(sorted(API_FLAVORS))}); register them with `aevos models register`",
            )
        if "trusted_types" in config:
            raise self._refuse(
                principal,
                f"register model {name} with trusted_types",
                "trust types beyond skops's defaults over the API (config.trusted_types); "
                "register such versions with `aevos models register`",
            )
        if signature is not None and "signature" not in config:
            config["signature"] = dict(signature)  # what the registry's loader will pass
        flavors.load_adapter(flavor, data, config, trusted=False)

    # -- policies ---------------------------------------------------------------------------

    def _policy_set(self) -> PolicySet:
        from .errors import DefinitionError
        from .policy import PolicySet

        try:
            return self.app.policies
        except DefinitionError:
            return PolicySet()  # no policy directory configured: there are none

    def policies(self, principal: Principal) -> list[Policy]:
        """Every loaded policy, by name then version. Policies are the application's code,
        the same for every tenant."""
        self._allow(principal, Permission.POLICIES_READ, "read policies")
        return list(self._policy_set())

    def policy(self, principal: Principal, name: str, version: int | None = None) -> Policy:
        """The policy ``name`` at ``version`` (default: its newest); 404 if not loaded."""
        self._allow(principal, Permission.POLICIES_READ, "read policies")
        return self._policy_set().get(name, version)

    def explain_policy(
        self,
        principal: Principal,
        name: str,
        input: Mapping[str, Any],
        *,
        version: int | None = None,
    ) -> Explanation:
        """Evaluate a policy on ``input`` and say why, rule by rule (``aevos policy
        explain``). Nothing is enforced, so nothing is recorded: the explanation holds the
        input's values and goes back only to the caller."""
        self._allow(principal, Permission.POLICIES_READ, "read policies")
        return self._policy_set().explain(name, input, version=version)

    # -- metrics ----------------------------------------------------------------------------

    def metrics(self, principal: Principal) -> bytes:
        """The tenant's Prometheus exposition, read from the database (see aevos.metrics)."""
        self._allow(principal, Permission.RUNS_READ, "read metrics")
        from .metrics import exposition

        return exposition(self.app, principal.tenant)

    def dashboard(
        self, principal: Principal, *, since: float, until: float, buckets: int
    ) -> Dashboard:
        """The console's time series for the tenant (see :func:`aevos.metrics.dashboard`)."""
        self._allow(principal, Permission.RUNS_READ, "read metrics")
        from .metrics import dashboard

        return dashboard(self.app, principal.tenant, since=since, until=until, buckets=buckets)

    def model_metrics(
        self, principal: Principal, name: str, *, since: float, until: float, buckets: int
    ) -> ModelMetrics:
        """One model's live metrics per version (see :func:`aevos.metrics.model_metrics`);
        404 for a model the tenant does not have."""
        self._allow(principal, Permission.MODELS_READ, "read model metrics")
        self.app.models.versions(name, tenant=principal.tenant)  # ModelNotFoundError
        from .metrics import model_metrics

        return model_metrics(
            self.app, principal.tenant, name, since=since, until=until, buckets=buckets
        )

    # -- human tasks --------------------------------------------------------------------------

    def _own_task(self, principal: Principal, task_id: str) -> Task:
        task = self.app.tasks.get(task_id)  # TaskNotFoundError for unknown ids
        if task.tenant != principal.tenant:
            self.app.identity.deny_cross_tenant(principal, "task", task_id)
            raise AuthorizationError(f"task {task_id!r} is not accessible with this token")
        return task

    @staticmethod
    def _roles_for(principal: Principal) -> list[str]:
        """The task roles a principal may work: its own; an admin's, every role."""
        if principal.role is Role.ADMIN:
            return [role.value for role in Role]
        return [principal.role.value]

    def _may_work(self, principal: Principal, task: Task, action: str) -> None:
        self._allow(principal, Permission.TASKS_WORK, action)
        if task.role not in self._roles_for(principal):
            raise AuthorizationError(
                f"task {task.task_id} is for role {task.role!r}; this token's role "
                f"{principal.role.value!r} may not {action}"
            )

    def list_tasks(
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
    ) -> list[Task]:
        """The tenant's tasks in inbox order; ``mine`` those claimed by the principal,
        ``workable`` those its role may work."""
        self._allow(principal, Permission.TASKS_READ, "read tasks")
        return self.app.tasks.list(
            tenant=principal.tenant,
            status=status,
            queue=queue,
            assignee=principal.actor if mine else None,
            roles=self._roles_for(principal) if workable else None,
            run_id=run_id,
            limit=limit,
            offset=offset,
        )

    def get_task(self, principal: Principal, task_id: str) -> Task:
        self._allow(principal, Permission.TASKS_READ, "read tasks")
        return self._own_task(principal, task_id)

    def claim_task(self, principal: Principal, task_id: str) -> Task:
        task = self._own_task(principal, task_id)
        self._may_work(principal, task, "claim this task")
        return self.app.tasks.claim(task_id, actor=principal.actor, tenant=principal.tenant)

    def claim_next_task(self, principal: Principal, *, queue: str | None = None) -> Task | None:
        """Claim the next task in inbox order that the principal's role may work."""
        self._allow(principal, Permission.TASKS_WORK, "claim tasks")
        return self.app.tasks.claim_next(
            actor=principal.actor,
            roles=self._roles_for(principal),
            tenant=principal.tenant,
            queue=queue,
        )

    def release_task(self, principal: Principal, task_id: str) -> Task:
        """Give a claimed task back to its queue: one's own claim, or anyone's for a
        principal who may reassign tasks."""
        task = self._own_task(principal, task_id)
        anyone = principal.can(Permission.TASKS_ASSIGN)
        if not anyone:
            self._may_work(principal, task, "release this task")
        return self.app.tasks.release(
            task_id, actor=principal.actor, tenant=principal.tenant, anyone=anyone
        )

    def reassign_task(
        self,
        principal: Principal,
        task_id: str,
        *,
        queue: str | None = None,
        assignee: str | None = None,
    ) -> Task:
        self._allow(principal, Permission.TASKS_ASSIGN, "reassign tasks")
        self._own_task(principal, task_id)
        return self.app.tasks.reassign(
            task_id, by=principal.actor, tenant=principal.tenant, queue=queue, assignee=assignee
        )

    def submit_task(
        self, principal: Principal, task_id: str, values: Mapping[str, Any]
    ) -> tuple[Task, Feedback]:
        """Decide a task (the form checks the values; the decision is audited and becomes a
        feedback record; the waiting run resumes)."""
        task = self._own_task(principal, task_id)
        self._may_work(principal, task, "decide this task")
        return self.app.tasks.submit(
            task_id, values, actor=principal.actor, tenant=principal.tenant
        )

    def list_feedback(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Feedback]:
        """Human decisions on suggestions (labelled data), oldest first."""
        self._allow(principal, Permission.TASKS_READ, "read feedback")
        return self.app.tasks.feedback(
            tenant=principal.tenant,
            model=model,
            workflow=workflow,
            since=since,
            limit=limit,
            offset=offset,
        )

    # -- personal data ----------------------------------------------------------------------

    def reveal(self, principal: Principal, text: str) -> str:
        """``text`` with this tenant's PII tokens replaced by the original values.

        Needs ``pii:reveal`` (admins and auditors); every reveal is audited with how many
        tokens it resolved, never with what they resolved to.
        """
        self._allow(principal, Permission.PII_REVEAL, "reveal personal data")
        revealed = self.app.redactor.detokenize(
            text, tenant=principal.tenant, vault=self.app.vault, allowed=True
        )
        from .pii.vault import TOKEN

        self._audit(principal, "pii.revealed", tokens=len(TOKEN.findall(text)))
        return revealed

    # -- audit ------------------------------------------------------------------------------

    def audit_query(self, principal: Principal, **filters: Any) -> list[AuditRecord]:
        self._allow(principal, Permission.AUDIT_READ, "read the audit log")
        return self.app.audit.query(principal.tenant, **filters)

    def audit_verify(self, principal: Principal) -> VerifyReport:
        self._allow(principal, Permission.AUDIT_READ, "verify the audit log")
        report = self.app.audit.verify(principal.tenant)
        self._audit(principal, "audit.verified", ok=report.ok, checked=report.checked)
        return report

    def audit_export(self, principal: Principal, out: IO[str], *, after_seq: int = 0) -> int:
        self._allow(principal, Permission.AUDIT_EXPORT, "export the audit log")
        self._audit(principal, "audit.exported", after_seq=after_seq)
        return self.app.audit.export_jsonl(principal.tenant, out, after_seq=after_seq)

    # -- console reads ----------------------------------------------------------------------

    def model_rollout(self, principal: Principal, name: str) -> tuple[Route | None, dict[int, str]]:
        """How this process routes calls to the tenant's model ``name``, and its breakers.

        The route (primary alias, canary and its share, shadow, cascade, fallbacks) is code
        configured in the serving process, the same for every tenant; None means the plain
        route to ``name@champion``. The breaker states are this process's, by version, for
        the versions this tenant has called here.
        """
        self._allow(principal, Permission.MODELS_READ, "read models")
        self.app.models.versions(name, tenant=principal.tenant)  # 404 for an unknown name
        prefix = f"{principal.tenant}/{name}@"
        breakers = {
            int(key[len(prefix) :]): state.value
            for key, state in self.app.gateway.breakers.states().items()
            if key.startswith(prefix)
        }
        return self.app.gateway.routes().get(name), breakers
