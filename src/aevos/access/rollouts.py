"""Rollouts behind the guard: read them (``models:read``); start, pause, resume, abort and
promote them (``models:promote``: a rollout ends in a promotion).

Every read and action is scoped to the principal's tenant: another tenant's rollout is not
found (404), like another tenant's retraining. A start the service refuses (a second rollout
of the model, a version that does not exist, bad steps or criteria) is audited by the service
as ``rollout.rejected``; an action it refuses (another tenant's rollout, a rollout whose state
does not allow it) is recorded here the same way, with the error's code as ``reason`` and its
message as ``detail``, then raised.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import AevosError, DefinitionError
from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..rollouts import Criteria, Rollout, Transition
    from ..rollouts import Rollouts as RolloutService

#: What an operator may do to a rollout, by the service's method of the same name.
ACTIONS = ("pause", "resume", "abort", "promote")


class Services(Protocol):
    @property
    def rollouts(self) -> RolloutService: ...


class Rollouts:
    """The tenant's rollouts, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    # -- reads -----------------------------------------------------------------------------

    def list(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        active: bool | None = None,
        limit: int = 100,
    ) -> builtins.list[Rollout]:
        """The tenant's rollouts (of ``model``; only the active ones, or only the finished
        ones), newest first."""
        self.guard.allow(principal, Permission.MODELS_READ, "read rollouts")
        return self.services.rollouts.list(
            tenant=principal.tenant, model=model, active=active, limit=limit
        )

    def get(self, principal: Principal, rollout_id: str) -> Rollout:
        """One of the tenant's rollouts (RolloutNotFoundError for another tenant's)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read rollouts")
        return self.services.rollouts.get(rollout_id, tenant=principal.tenant)

    def history(self, principal: Principal, rollout_id: str) -> builtins.list[Transition]:
        """The rollout's transitions, oldest first, each with the analysis that caused it."""
        self.guard.allow(principal, Permission.MODELS_READ, "read rollouts")
        return self.services.rollouts.history(rollout_id, tenant=principal.tenant)

    def active(self, principal: Principal, model: str) -> Rollout | None:
        """The model's rollout in progress (or paused), if any."""
        self.guard.allow(principal, Permission.MODELS_READ, "read rollouts")
        return self.services.rollouts.active(model, tenant=principal.tenant)

    # -- actions ---------------------------------------------------------------------------

    def start(
        self,
        principal: Principal,
        model: str,
        version: int,
        *,
        steps: tuple[int, ...] | None = None,
        criteria: Criteria | None = None,
        step_minutes: float | None = None,
        replay: bool = False,
        policy: str | None = None,
    ) -> Rollout:
        """Start rolling ``version`` of the tenant's ``model`` out (RolloutConflictError while
        another rollout of the model is active). Options left None keep the service's
        defaults."""
        self.guard.allow(principal, Permission.MODELS_PROMOTE, "start rollouts")
        options: dict[str, Any] = {"criteria": criteria, "replay": replay}
        if steps is not None:
            options["steps"] = steps
        if step_minutes is not None:
            options["step_minutes"] = step_minutes
        if policy is not None:
            options["policy"] = policy
        # The service audits a refused start itself (rollout.rejected, with the field).
        return self.services.rollouts.start(
            model, version, tenant=principal.tenant, actor=principal.actor, **options
        )

    def act(
        self, principal: Principal, rollout_id: str, action: str, *, reason: str = ""
    ) -> Rollout:
        """``pause``, ``resume``, ``abort`` or ``promote`` the tenant's rollout (promotion
        passes the model's promotion policy: four eyes where it asks for an approval)."""
        if action not in ACTIONS:
            raise DefinitionError(f"no rollout action {action!r}: one of {', '.join(ACTIONS)}")
        self.guard.allow(principal, Permission.MODELS_PROMOTE, f"{action} rollouts")
        service = self.services.rollouts
        methods: dict[str, Callable[..., Rollout]] = {
            "pause": service.pause,
            "resume": service.resume,
            "abort": service.abort,
            "promote": service.promote,
        }
        try:
            return methods[action](
                rollout_id, tenant=principal.tenant, actor=principal.actor, reason=reason
            )
        except AevosError as exc:
            self.guard.record(
                principal,
                "rollout.rejected",
                subject=f"rollout:{rollout_id[:200]}",
                rollout_id=rollout_id[:200],
                attempted=action,
                reason=exc.code,
                detail=exc.message,
            )
            raise
