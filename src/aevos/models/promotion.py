"""The promotion gate: how a model version comes to serve as the champion.

A gated alias (:data:`GATED_ALIASES`) moves only through the gate. The promotion policy
judges the evidence (the candidate's and the champion's metrics) and answers ``allow``
(promote now), ``deny`` (never) or ``approve`` (a second person must approve it; the
approvals of :mod:`aevos.people.approvals` do the rest). The decision is audited whatever
it is, with who asked.

Evidence the system keeps itself is added by the gate, never taken from the caller: with an
``evidence`` source (the app's), the latest replay of the version judged is ``replay``
(its figures and ``passed``; absent when the version was never replayed), so a policy can
require ``replay.passed``.

These are the registry's rules, so they live beside it and every entry point applies the
same ones: the HTTP API and the console (through :class:`~aevos.access.Access`) and the
``aevos models`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..policy import Decision, PolicySet
    from ..storage import UnitOfWork
    from .registry import ModelRegistry
    from .types import ModelVersion

#: Aliases that only a promotion through the policy gate may move.
GATED_ALIASES = frozenset({"champion"})
#: Evidence only the gate adds (the caller's is dropped): it comes from the system's records.
KEPT_EVIDENCE = ("replay",)
#: The policy that judges promotions unless another is named.
DEFAULT_POLICY = "promotion-gate"


def is_gated(alias: str) -> bool:
    """Whether ``alias`` moves only by promotion (never by setting it, nor at registration)."""
    return alias in GATED_ALIASES


@dataclass(frozen=True)
class Judgement:
    """The policy's decision on a promotion, and what the alias named when it was judged
    (an approval granted later is stale if the alias moved since)."""

    decision: Decision
    alias_was: int | None
    #: What the policy was shown: the caller's evidence with what the gate added.
    evidence: Mapping[str, Any] = field(default_factory=dict)


class PromotionGate:
    """Judges promotions of one registry's models by the policies, and promotes."""

    def __init__(
        self,
        registry: ModelRegistry,
        policies: Callable[[], PolicySet],
        audit: AuditLog,
        *,
        evidence: Callable[[str, str, int], Mapping[str, Any]] | None = None,
    ) -> None:
        self.registry = registry
        self._policies = policies  # loaded on first use: no policy, no promotion
        self.audit = audit
        # (tenant, name, version) -> evidence kept by the system (the latest replay).
        self._evidence = evidence

    def judge(
        self,
        name: str,
        version: int,
        *,
        evidence: Mapping[str, Any],
        tenant: str,
        actor: str,
        alias: str = "champion",
        policy: str = DEFAULT_POLICY,
    ) -> Judgement:
        """Evaluate ``policy`` on ``{"model": {"name": ...}, **evidence}`` for moving
        ``alias`` of the tenant's ``name`` to ``version``, and audit the decision
        (``policy.decided``, by ``actor``). ModelNotFoundError before anything is decided."""
        registry = self.registry
        registry.get(name, version, tenant=tenant)  # 404 before deciding
        # What the alias names now, read before the policy judges the evidence: a promotion
        # landing in between makes the approval stale rather than silently judged.
        alias_was = registry.aliases(name, tenant=tenant).get(alias)
        shown = dict(evidence)
        if self._evidence is not None:
            for key in KEPT_EVIDENCE:
                shown.pop(key, None)
            shown.update(self._evidence(tenant, name, version))
        # The model's name comes last: evidence cannot make the policy see another model.
        decision = self._policies().evaluate(policy, {**shown, "model": {"name": name}})
        self.audit.append(
            AuditEvent(
                action="policy.decided",
                actor=actor,
                tenant=tenant,
                subject=f"policy:{decision.policy}@{decision.version}",
                data={**decision.to_record(), "model": f"{name}@{version}"},
            )
        )
        return Judgement(decision, alias_was, shown)

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str,
        tenant: str,
        by: str,
        also: Callable[[UnitOfWork], object] | None = None,
    ) -> ModelVersion:
        """Move ``alias`` to ``version`` as a promotion the policy allowed (``model.promoted``).
        ``also`` runs in the same unit of work (a rollout ending as promoted): if it raises,
        nothing moves."""
        return self.registry.promote(name, version, alias=alias, tenant=tenant, by=by, also=also)
