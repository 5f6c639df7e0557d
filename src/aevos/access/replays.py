"""Replays behind the guard: start one (``models:promote``: it is the first step of putting a
candidate before traffic), read a replay or a model's replays (``models:read``).

Starting only enqueues: the cases are re-decided on a worker, never in the process serving
the request. A start the service refuses (an unknown model or version, bad input) is
recorded by the service as ``replay.rejected`` with its reason; a start the role may not
make, by the guard.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..rollouts import Replay
    from ..rollouts import Replays as ReplayService


class Services(Protocol):
    @property
    def replays(self) -> ReplayService: ...


class Replays:
    """Replays of the tenant's model versions, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def start(
        self,
        principal: Principal,
        model: str,
        version: int,
        *,
        since: float | None = None,
        limit: int = 1000,
        rate: float = 20.0,
        criteria: Mapping[str, Any] | None = None,
    ) -> Replay:
        """Enqueue a replay of the tenant's ``model@version``; returns its record (status
        ``running``; its ``replay_id`` is the workflow run's)."""
        self.guard.allow(principal, Permission.MODELS_PROMOTE, "replay model versions")
        service = self.services.replays
        replay_id = service.start(
            model,
            version,
            tenant=principal.tenant,
            actor=principal.actor,
            since=since,
            limit=limit,
            rate=rate,
            criteria=criteria,
        )
        return service.get(replay_id, tenant=principal.tenant)

    def get(self, principal: Principal, replay_id: str) -> Replay:
        """One of the tenant's replays (404 for another tenant's)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.replays.get(replay_id, tenant=principal.tenant)

    def list(
        self, principal: Principal, model: str, *, version: int | None = None, limit: int = 50
    ) -> builtins.list[Replay]:
        """The tenant's replays of ``model`` (of ``version``), newest first."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.replays.list(
            model, tenant=principal.tenant, version=version, limit=limit
        )
