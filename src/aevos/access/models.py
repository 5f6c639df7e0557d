"""Models: calls, the registry's versions and aliases, promotions through the gate."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import AuthorizationError, ModelNotFoundError, UnsafeArtifactError
from ..identity import Permission, Principal
from ..models import flavors
from ..models.artifact import is_pickle
from ..models.promotion import is_gated
from ..people.approvals import DEFAULT_TTL
from .approvals import Approvals as ApprovalsArea
from .guard import Guard

if TYPE_CHECKING:
    from ..models.gateway import CallResult, Gateway
    from ..models.promotion import PromotionGate
    from ..models.registry import ModelAlias, ModelRegistry
    from ..models.routing import Route
    from ..models.types import ModelCard, ModelVersion
    from ..people.approvals import Approvals as ApprovalService
    from ..policy import Decision
    from ..records.approval import Approval


class Services(Protocol):
    @property
    def models(self) -> ModelRegistry: ...

    @property
    def gateway(self) -> Gateway: ...

    @property
    def promotions(self) -> PromotionGate: ...

    @property
    def approvals(self) -> ApprovalService: ...


@dataclass(frozen=True)
class Promotion:
    """What a promotion request came to: the policy's decision, the promoted version (None
    when the policy denied it or it awaits a person's approval) and, when it awaits one, the
    pending :class:`~aevos.people.approvals.Approval` another person approves or rejects."""

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


class Models:
    """Models, behind the guard."""

    def __init__(self, guard: Guard, services: Services, approvals: ApprovalsArea) -> None:
        self.guard = guard
        self.services = services
        self.approvals = approvals

    def predict(
        self, principal: Principal, model: str, input: Any, *, key: str | None = None
    ) -> CallResult:
        """A governed model call outside workflows: the tenant's routes, budgets, rate
        limits and the model's ``model_call`` policy (seeing the principal's role) apply,
        and the call is recorded with the principal as its actor. Callers over the API
        cannot bypass the policy."""
        self.guard.allow(principal, Permission.MODELS_CALL, "call models")
        return self.services.gateway.predict(
            model,
            input,
            key=key,
            tenant=principal.tenant,
            actor=principal.actor,
            role=principal.role.value,
        )

    def promote(
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
        self.guard.allow(principal, Permission.MODELS_PROMOTE, "promote models")
        gate = self.services.promotions
        self.services.models.get(name, version, tenant=principal.tenant)  # 404 before deciding
        if approved_by is not None:
            self.guard.allow(approved_by, Permission.MODELS_PROMOTE, "approve promotions")
            if approved_by.tenant != principal.tenant:
                raise AuthorizationError(
                    "a promotion must be approved by a principal of the same tenant"
                )
        judged = gate.judge(
            name,
            version,
            evidence=evidence,
            tenant=principal.tenant,
            actor=principal.actor,
            alias=alias,
            policy=policy,
        )
        decision, alias_was = judged.decision, judged.alias_was
        if decision.result == "allow":
            promoted = gate.promote(
                name, version, alias=alias, tenant=principal.tenant, by=principal.actor
            )
            return Promotion(decision, promoted)
        if decision.result != "approve":
            return Promotion(decision, None)
        approval = self.services.approvals.request(
            principal,
            name,
            version,
            alias=alias,
            alias_was=alias_was,
            policy=policy,
            evidence=judged.evidence,
            decision=decision,
            ttl=DEFAULT_TTL if expires_in is None else expires_in,
        )
        if approved_by is None:
            return Promotion(decision, None, approval)
        # Both people present: the same approval, approved at once, under the same checks.
        approved, promoted = self.approvals.approve(approved_by, approval.approval_id)
        return Promotion(decision, promoted, approved)

    def list(self, principal: Principal) -> builtins.list[ModelOverview]:
        """The tenant's models, by name, each with its versions and aliases."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        registry, tenant = self.services.models, principal.tenant
        return [
            ModelOverview(
                name,
                tuple(registry.versions(name, tenant=tenant)),
                tuple(registry.alias_details(name, tenant=tenant)),
            )
            for name in registry.names(tenant=tenant)
        ]

    def get(self, principal: Principal, name: str) -> ModelOverview:
        """The tenant's model ``name`` (404 for a name only other tenants have)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        registry, tenant = self.services.models, principal.tenant
        versions = registry.versions(name, tenant=tenant)
        return ModelOverview(
            name, tuple(versions), tuple(registry.alias_details(name, tenant=tenant))
        )

    def version(self, principal: Principal, name: str, ref: int | str) -> ModelVersion:
        """The version ``ref`` (a number, an alias or ``latest``) of the tenant's model."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.models.get(name, ref, tenant=principal.tenant)

    def register(
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
        self.guard.allow(principal, Permission.MODELS_WRITE, "register models")
        for alias in aliases:
            self._check_ungated(principal, name, alias)
        data = bytes(artifact)
        self._check_artifact(principal, name, data, flavor, dict(config or {}), signature)
        registry, tenant = self.services.models, principal.tenant
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

    def set_alias(self, principal: Principal, name: str, alias: str, version: int) -> ModelAlias:
        """Point ``alias`` of the tenant's model at ``version`` (audited by the registry as
        ``model.alias_moved`` when it moves). Gated aliases move only by promotion."""
        self.guard.allow(principal, Permission.MODELS_WRITE, "move model aliases")
        self._check_ungated(principal, name, alias)
        self.services.models.set_alias(
            name, alias, version, tenant=principal.tenant, by=principal.actor
        )
        return self._alias(principal, name, alias)

    def rollback(self, principal: Principal, name: str, alias: str) -> ModelAlias:
        """Move ``alias`` back to its previous version (``model.rolled_back``, audited by the
        registry); NoPreviousVersionError (409) when it has none. Rolling back needs no
        promotion: the previous version is one the alias already served."""
        self.guard.allow(principal, Permission.MODELS_WRITE, "roll back model aliases")
        self.services.models.rollback(name, alias, tenant=principal.tenant, by=principal.actor)
        return self._alias(principal, name, alias)

    def rollout(self, principal: Principal, name: str) -> tuple[Route | None, dict[int, str]]:
        """How this process routes calls to the tenant's model ``name``, and its breakers.

        The route (primary alias, canary and its share, shadow, cascade, fallbacks) is code
        configured in the serving process, the same for every tenant; None means the plain
        route to ``name@champion``. The breaker states are this process's, by version, for
        the versions this tenant has called here.
        """
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        self.services.models.versions(name, tenant=principal.tenant)  # 404 for an unknown name
        prefix = f"{principal.tenant}/{name}@"
        breakers = {
            int(key[len(prefix) :]): state.value
            for key, state in self.services.gateway.breakers.states().items()
            if key.startswith(prefix)
        }
        return self.services.gateway.routes().get(name), breakers

    def _alias(self, principal: Principal, name: str, alias: str) -> ModelAlias:
        details = self.services.models.alias_details(name, tenant=principal.tenant)
        return next(a for a in details if a.alias == alias)

    def _check_ungated(self, principal: Principal, name: str, alias: str) -> None:
        if is_gated(alias):
            raise self.guard.refuse(
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
        if is_pickle(data):
            self.guard.record(
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
            raise self.guard.refuse(
                principal,
                f"register a {flavor} version of model {name}",
                f"register {flavor!r} versions over the API (it takes "
                f"{', '.join(sorted(API_FLAVORS))}); register them with `aevos models register`",
            )
        if "trusted_types" in config:
            raise self.guard.refuse(
                principal,
                f"register model {name} with trusted_types",
                "trust types beyond skops's defaults over the API (config.trusted_types); "
                "register such versions with `aevos models register`",
            )
        if signature is not None and "signature" not in config:
            config["signature"] = dict(signature)  # what the registry's loader will pass
        flavors.load_adapter(flavor, data, config, trusted=False)
