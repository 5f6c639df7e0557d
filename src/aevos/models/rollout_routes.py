"""Routing by rollouts: the gateway's view of each model's active rollout.

A rollout's state lives in the database (``uow.rollouts``, see :mod:`aevos.rollouts`),
written by whichever process moved it; every gateway reads it here, per (tenant, model),
and reuses what it read for ``ttl`` seconds, so every worker and server follows a step, a
pause or a rollback within ``ttl`` (one second by default). The gateway stays in the models
layer: it reads rollouts through storage and never imports the rollout service.

What a rollout sets, at its current step (``RolloutRouting.share``):

- 0 (shadow): the candidate version gets a shadow call of every call; the answer is the
  primary's;
- 1-99 (canary): that share of calls, sticky by routing key (the same bucket as a code
  :class:`~aevos.models.routing.Canary`), goes to the candidate version, route ``canary``;
- 100: every call goes to the candidate, route ``canary``.

The repository decides which rollouts route (progressing, or paused without a failed
verdict: an operator's pause holds the split in force); an ended one routes nothing. What
the rollout does not set (the primary alias, cascades, fallbacks, timeouts, a code shadow
at canary steps) comes from the model's code :class:`~aevos.models.routing.Route`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import DefinitionError, StorageError
from ..records.rollout import RolloutRouting

if TYPE_CHECKING:
    from ..storage import Store

log = logging.getLogger("aevos.gateway")

#: The longest a process may route by a rollout state it read: every process follows
#: a change within this.
MAX_TTL = 2.0


class RolloutRoutes:
    """Each (tenant, model)'s active rollout as the gateway routes by it, cached ``ttl``
    seconds."""

    def __init__(self, store: Store, ttl: float = 1.0) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= MAX_TTL:
            raise DefinitionError(f"rollout_ttl must be from 0 to {MAX_TTL:g} seconds")
        self.store = store
        self.ttl = float(ttl)
        self._cache: dict[tuple[str, str], tuple[float, RolloutRouting | None]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, model: str) -> RolloutRouting | None:
        key = (tenant, model)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            with self.store.reading() as uow:
                found = uow.rollouts.routing(tenant, model)
        except StorageError as exc:
            # Not cached: asked again on the next call. Meanwhile no rollout routes, so no
            # call goes to a candidate this process cannot confirm is still in a rollout.
            log.warning("rollout of %s unreadable: %s", model, exc.code)
            return None
        with self._lock:
            self._cache[key] = (now + self.ttl, found)
        return found

    def forget(self, tenant: str | None = None, model: str | None = None) -> None:
        """Read again on the next call (this process changed a rollout)."""
        with self._lock:
            if tenant is None:
                self._cache.clear()
            else:
                self._cache.pop((tenant, model or ""), None)
