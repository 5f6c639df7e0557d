"""The outbox behind the guard: list the tenant's published messages, requeue DEAD ones.

Listing needs ``runs:read`` (the messages are what the tenant's runs published);
requeueing needs ``runs:control`` and is audited as ``outbox.requeued`` (which ids, how
many) in the requeue's transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..identity import Permission, Principal
from ..storage.outbox import OutboxRow
from .guard import Guard

if TYPE_CHECKING:
    from ..connectors import Outbox
    from ..storage import UnitOfWork


class Services(Protocol):
    @property
    def outbox(self) -> Outbox: ...


class OutboxMessages:
    """Outbox messages, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def list(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[OutboxRow]:
        """The tenant's messages, oldest first (``runs:read``)."""
        self.guard.allow(principal, Permission.RUNS_READ, "read the outbox")
        return self.services.outbox.messages(
            principal.tenant, status=status, run_id=run_id, limit=limit
        )

    def requeue(self, principal: Principal, message_ids: Sequence[str]) -> int:
        """Send the tenant's DEAD ``message_ids`` again; how many were (``runs:control``,
        audited ``outbox.requeued``)."""
        self.guard.allow(principal, Permission.RUNS_CONTROL, "requeue outbox messages")
        ids = builtins.list(message_ids)

        def audit(uow: UnitOfWork, count: int) -> None:
            self.guard.record(
                principal, "outbox.requeued", uow=uow, message_ids=ids[:100], requeued=count
            )

        return self.services.outbox.requeue(principal.tenant, ids, also=audit)
