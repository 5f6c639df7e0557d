"""Events: the tenant's dead letters (list, inspect, replay) and signals to its runs."""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import codec
from ..errors import DefinitionError
from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..events.intake import DeadLetter, DeadLetterStatus, Intake, ReplayOutcome
    from ..kernel.runtime import Runtime
    from ..storage import Store

_TOPIC = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_SIGNAL_ID = re.compile(r"^[A-Za-z0-9_:@+=/.-]{1,128}$")


class Services(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def intake(self) -> Intake: ...


@dataclass(frozen=True)
class SignalReceipt:
    """What ``POST /v1/runs/{id}/signals/{name}`` did: SIGNALLED, or DUPLICATE for a
    signal id already delivered to the run."""

    run_id: str
    name: str
    status: str
    signal_id: str
    event: int


class Events:
    """Dead letters and signals, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def dead_letters(
        self,
        principal: Principal,
        *,
        status: Iterable[DeadLetterStatus] | None = None,
        source: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[DeadLetter]:
        """The tenant's dead letters, newest first, without their bodies (``runs:read``)."""
        self.guard.allow(principal, Permission.RUNS_READ, "read dead letters")
        return self.services.intake.list(
            principal.tenant, source=source, status=status, limit=limit, offset=offset
        )

    def dead_letter(
        self, principal: Principal, letter_id: int, *, payload: bool = False
    ) -> DeadLetter:
        """One of the tenant's dead letters; with ``payload`` its body too, which needs
        ``pii:reveal`` (the body may hold personal data) and is audited."""
        self.guard.allow(principal, Permission.RUNS_READ, "read dead letters")
        if payload:
            self.guard.allow(principal, Permission.PII_REVEAL, "read the bodies of dead letters")
        letter = self.services.intake.get(principal.tenant, letter_id, payload=payload)
        if payload:
            self.guard.record(
                principal, "event.dead_letter_read", subject=f"dead_letter:{letter_id}"
            )
        return letter

    def replay(
        self, principal: Principal, letter_ids: Iterable[int]
    ) -> builtins.list[ReplayOutcome]:
        """Replay dead letters of the tenant (``runs:control``); each outcome is audited."""
        self.guard.allow(principal, Permission.RUNS_CONTROL, "replay dead letters")
        return self.services.intake.replay(principal.tenant, letter_ids, actor=principal.actor)

    def signal(
        self,
        principal: Principal,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        signal_id: str | None = None,
    ) -> SignalReceipt:
        """Send signal ``name`` with ``payload`` to a run of the tenant that has not ended
        (``runs:control``), recorded and audited (``event.signalled``) with the signal in
        one transaction. A ``signal_id`` already delivered to the run is a DUPLICATE."""
        self.guard.allow(principal, Permission.RUNS_CONTROL, "signal runs")
        if not _TOPIC.match(name):
            raise DefinitionError(
                "a signal name must be 1-100 characters of letters, digits, '_', '.', ':', '-'"
            )
        if signal_id is not None and not _SIGNAL_ID.match(signal_id):
            raise DefinitionError("a signal id must be 1-128 printable ASCII characters")
        services = self.services
        info = services.store.get_run(run_id)  # RunNotFoundError for unknown ids
        self.guard.own(principal, "run", run_id, info.tenant)
        text = codec.encode(payload, f"payload of signal {name!r}")
        ident = signal_id or uuid.uuid4().hex
        status, event = services.intake.signal(
            principal.tenant, run_id, name, text, actor=principal.actor, event_id=ident
        )
        if status == "SIGNALLED":
            services.runtime.wake(run_id)
        return SignalReceipt(run_id, name, status, ident, event)
