"""One model for every event that arrives, and the dead-letter store behind it.

An event arrives on a *channel* (a signed webhook, a NATS JetStream message, an HTTP signal)
from a *source* (the webhook source or the trigger it was declared as) in the source's
tenant, with an *event id* that makes handling it idempotent. Whatever happens to it is a
row of ``aevos_events`` (ACCEPTED, DUPLICATE, SIGNALLED or REJECTED with its reason).

An event that was authenticated but fails validation or mapping (its body is not JSON, the
mapping raises, the workflow refuses its arguments, its correlation key names no run) is
also kept as a **dead letter**, with its body, so that it can be inspected and replayed once
the cause is fixed (a new mapping, the workflow deployed, the run started). Replaying goes
through the same source as the first delivery, with the same idempotency key: a dead letter
replayed twice, or replayed while its sender redelivers it, starts one run.

The body of a dead letter may hold personal data: it is shown only to a principal that may
reveal personal data (``pii:reveal``), and that is audited.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from ..audit import AuditEvent
from ..errors import (
    AevosError,
    DeadLetterNotFoundError,
    InvalidRunStateError,
    ReplayUnavailableError,
    RunNotFoundError,
    StorageError,
)
from ..records.status import RunStatus
from ..storage.dead_letters import DEAD, REPLAYED, DeadLetterRow

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage import Store, UnitOfWork

log = logging.getLogger("aevos.events")

#: At most this many dead letters are replayed by one request.
MAX_REPLAY = 1000


class Channel(StrEnum):
    WEBHOOK = "webhook"
    NATS = "nats"
    SIGNAL = "signal"
    EMAIL = "email"
    FOLDER = "folder"


class DeadLetterStatus(StrEnum):
    DEAD = DEAD  # waiting for a replay
    REPLAYED = REPLAYED  # replayed: ``run_id`` is what it started or signalled


@dataclass(frozen=True)
class Arrival:
    """One event as it arrived, whatever its channel: what a dead letter keeps and what a
    replay hands back to its source."""

    channel: Channel
    source: str
    tenant: str
    event_id: str
    payload: bytes = field(repr=False)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@dataclass(frozen=True)
class DeadLetter:
    """A kept event that failed, with its reason; ``payload`` only when revealed."""

    id: int
    tenant: str
    channel: Channel
    source: str
    event_id: str
    status: DeadLetterStatus
    code: str
    reason: str
    payload_digest: str
    size: int
    meta: dict[str, Any]
    attempts: int
    run_id: str | None
    created_at: float
    updated_at: float
    payload: bytes | None = field(default=None, repr=False)

    def arrival(self, payload: bytes) -> Arrival:
        return Arrival(self.channel, self.source, self.tenant, self.event_id, payload, self.meta)


@dataclass(frozen=True)
class ReplayOutcome:
    """What replaying one dead letter did: ``run_id`` when it started or signalled a run,
    else the ``code`` and ``reason`` it failed with again (it stays DEAD)."""

    id: int
    replayed: bool
    run_id: str | None = None
    code: str | None = None
    reason: str | None = None


class Replayer(Protocol):
    """A source that can handle one of its dead letters again (a webhook source, a trigger):
    returns the run the event started or signalled; raises the error it fails with."""

    def replay(self, arrival: Arrival, actor: str) -> str: ...


def reason_of(exc: BaseException) -> tuple[str, str]:
    """``(code, "<code>: <message>")`` of a failure; never the text of a foreign exception
    (it may quote the event)."""
    if isinstance(exc, AevosError):
        return exc.code, f"{exc.code}: {exc.message}"
    return "internal_error", f"internal_error: unexpected {type(exc).__name__}"


def dead_letterable(exc: BaseException) -> bool:
    """Whether a failure is the event's to keep: not storage's (then nothing can be kept,
    and the event is left to its sender or its stream to deliver again)."""
    return not isinstance(exc, StorageError)


def _letter(row: DeadLetterRow, *, payload: bool = False) -> DeadLetter:
    try:
        meta = json.loads(row.meta)
    except ValueError:
        meta = {}
    return DeadLetter(
        id=row.id,
        tenant=row.tenant,
        channel=Channel(row.channel),
        source=row.source,
        event_id=row.event_id,
        status=DeadLetterStatus(row.status),
        code=row.code,
        reason=row.reason,
        payload_digest=row.payload_digest,
        size=row.size,
        meta=meta if isinstance(meta, dict) else {},
        attempts=row.attempts,
        run_id=row.run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        payload=row.payload if payload else None,
    )


class Intake:
    """Records events and dead letters; lists, shows and replays dead letters.

    ``replayers`` returns the declared sources by ``(channel, source)``; it is asked at
    replay time, so a source declared after the intake was built (a fixed mapping) counts.
    Callers check permissions and tenants (:class:`aevos.access.Events` does).
    """

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        replayers: Callable[[], Mapping[tuple[str, str], Replayer]],
    ) -> None:
        self.store = store
        self.audit = audit
        self.replayers = replayers

    def record(
        self,
        uow: UnitOfWork,
        arrival: Arrival,
        status: str,
        *,
        actor: str,
        run_id: str | None = None,
        reason: str | None = None,
        audited: bool = True,
        now: float | None = None,
    ) -> int:
        """An ``aevos_events`` row for the arrival (with its audit record) in ``uow``."""
        moment = time.time() if now is None else now
        row = uow.events.insert(
            tenant=arrival.tenant,
            source=arrival.source,
            event_id=arrival.event_id,
            status=status,
            reason=reason,
            run_id=run_id,
            payload_digest=arrival.digest,
            size=len(arrival.payload),
            received_at=moment,
            channel=arrival.channel.value,
        )
        if audited:
            data = {
                "channel": arrival.channel.value,
                "source": arrival.source,
                "event_id": arrival.event_id,
                "payload_digest": arrival.digest,
                "size": len(arrival.payload),
                "reason": reason,
            }
            self.audit.append(
                AuditEvent(
                    action=f"event.{status.lower()}",
                    actor=actor,
                    tenant=arrival.tenant,
                    subject=f"{arrival.channel.value}:{arrival.source}",
                    run_id=run_id,
                    data={k: v for k, v in data.items() if v is not None},
                ),
                uow=uow,
            )
        return row.id

    def record_started(
        self, uow: UnitOfWork, started: Iterable[tuple[Arrival, str]], *, now: float | None = None
    ) -> None:
        """ACCEPTED records of many events, each with the run it started, in ``uow`` (the
        runs' transaction, whose ``run.started`` audit records name their keys)."""
        moment = time.time() if now is None else now
        uow.events.insert_many(
            [
                {
                    "tenant": arrival.tenant,
                    "source": arrival.source,
                    "event_id": arrival.event_id,
                    "status": "ACCEPTED",
                    "reason": None,
                    "run_id": run_id,
                    "payload_digest": arrival.digest,
                    "size": len(arrival.payload),
                    "received_at": moment,
                    "channel": arrival.channel.value,
                }
                for arrival, run_id in started
            ]
        )

    def dead_letter(self, arrival: Arrival, exc: BaseException, *, actor: str) -> DeadLetter:
        """Keep a failed event: its REJECTED record, its dead letter (one per event, however
        often it is redelivered) and the audit record ``event.dead_lettered``, committed
        together."""
        code, reason = reason_of(exc)
        now = time.time()
        with self.store.transaction() as uow:
            self.record(uow, arrival, "REJECTED", actor=actor, reason=reason, now=now)
            row = uow.dead_letters.add(
                tenant=arrival.tenant,
                channel=arrival.channel.value,
                source=arrival.source,
                event_id=arrival.event_id,
                code=code,
                reason=reason,
                payload=arrival.payload,
                payload_digest=arrival.digest,
                meta=json.dumps(dict(arrival.meta), sort_keys=True, default=str),
                now=now,
            )
            self.audit.append(
                AuditEvent(
                    action="event.dead_lettered",
                    actor=actor,
                    tenant=arrival.tenant,
                    subject=f"dead_letter:{row.id}",
                    data={
                        "channel": arrival.channel.value,
                        "source": arrival.source,
                        "event_id": arrival.event_id,
                        "code": code,
                    },
                ),
                uow=uow,
            )
        # The code only: the message may name what the sender sent.
        log.warning(
            "%s event of %r dead-lettered as %d (%s)",
            arrival.channel.value,
            arrival.source,
            row.id,
            code,
        )
        return _letter(row)

    # -- reading -------------------------------------------------------------------------------

    def list(
        self,
        tenant: str,
        *,
        source: str | None = None,
        status: Iterable[DeadLetterStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[DeadLetter]:
        """The tenant's dead letters, newest first, without their bodies."""
        statuses = None if status is None else [DeadLetterStatus(s).value for s in status]
        with self.store.reading() as uow:
            rows = uow.dead_letters.find(
                tenant, source=source, statuses=statuses, limit=limit, offset=offset
            )
        return [_letter(row) for row in rows]

    def get(self, tenant: str, letter_id: int, *, payload: bool = False) -> DeadLetter:
        """The tenant's dead letter (DeadLetterNotFoundError if it has none by that id)."""
        with self.store.reading() as uow:
            row = uow.dead_letters.get(tenant, letter_id)
        if row is None:
            raise DeadLetterNotFoundError(f"no dead letter {letter_id}")
        return _letter(row, payload=payload)

    def count(self, tenant: str) -> int:
        """How many of the tenant's dead letters wait for a replay."""
        with self.store.reading() as uow:
            return uow.dead_letters.count(tenant)

    # -- replaying -----------------------------------------------------------------------------

    def replay(
        self, tenant: str, letter_ids: Iterable[int], *, actor: str
    ) -> builtins.list[ReplayOutcome]:
        """Replay each DEAD letter through its source with its original idempotency key.

        A replay that fails again leaves the letter DEAD with the new reason; one that
        succeeds marks it REPLAYED with its run. Each is audited (``event.replayed`` or
        ``event.replay_failed``) in the transaction that changes the letter.
        """
        ids = list(dict.fromkeys(letter_ids))
        if len(ids) > MAX_REPLAY:
            raise ReplayUnavailableError(f"at most {MAX_REPLAY} dead letters per replay")
        return [self._replay_one(tenant, letter_id, actor) for letter_id in ids]

    def _replay_one(self, tenant: str, letter_id: int, actor: str) -> ReplayOutcome:
        with self.store.reading() as uow:
            row = uow.dead_letters.get(tenant, letter_id)
        if row is None:
            raise DeadLetterNotFoundError(f"no dead letter {letter_id}")
        letter = _letter(row)
        if letter.status is DeadLetterStatus.REPLAYED:
            return ReplayOutcome(letter_id, True, run_id=letter.run_id)
        replayer = self.replayers().get((letter.channel.value, letter.source))
        try:
            if replayer is None:
                raise ReplayUnavailableError(
                    f"{letter.channel.value} source {letter.source!r} is not declared in "
                    "this application"
                )
            run_id = replayer.replay(letter.arrival(row.payload), actor)
        except Exception as exc:
            if not dead_letterable(exc):
                raise
            code, reason = reason_of(exc)
            self._after(letter, actor, "event.replay_failed", code=code, reason=reason)
            return ReplayOutcome(letter_id, False, code=code, reason=reason)
        self._after(letter, actor, "event.replayed", run_id=run_id)
        return ReplayOutcome(letter_id, True, run_id=run_id)

    def _after(
        self,
        letter: DeadLetter,
        actor: str,
        action: str,
        *,
        run_id: str | None = None,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        now = time.time()
        with self.store.transaction() as uow:
            if run_id is not None:
                uow.dead_letters.replayed(letter.id, run_id, now)
            else:
                uow.dead_letters.failed_again(letter.id, code or "", reason or "", now)
            data = {"source": letter.source, "channel": letter.channel.value, "code": code}
            self.audit.append(
                AuditEvent(
                    action=action,
                    actor=actor,
                    tenant=letter.tenant,
                    subject=f"dead_letter:{letter.id}",
                    run_id=run_id,
                    data={k: v for k, v in data.items() if v is not None},
                ),
                uow=uow,
            )

    # -- signals over HTTP ---------------------------------------------------------------------

    def signal(
        self,
        tenant: str,
        run_id: str,
        topic: str,
        payload_json: str,
        *,
        actor: str,
        event_id: str,
    ) -> tuple[str, int]:
        """Queue a signal for the tenant's run with its record (``aevos_events``, channel
        ``signal``) and audit record ``event.signalled``, in one transaction; a second
        signal with the same ``event_id`` for the run's topic is a DUPLICATE and queues
        nothing (even once the run has ended); otherwise a run that has ended is refused
        (:class:`InvalidRunStateError`). Returns the status and the event's record id. The caller wakes the run."""
        arrival = Arrival(
            Channel.SIGNAL, topic, tenant, event_id, payload_json.encode(), {"run_id": run_id}
        )
        now = time.time()
        with self.store.transaction() as uow:
            # Locks the run: two deliveries of one signal serialise on it.
            found = uow.events.run_of(tenant, run_id, lock=True, by_key=False)
            if found is None:
                raise RunNotFoundError(f"no run with id {run_id!r} to signal")
            seen = uow.events.seen(tenant, Channel.SIGNAL.value, topic, event_id)
            if seen is not None and seen.run_id == run_id:
                return "DUPLICATE", seen.id  # a retry, even after the run ended
            if RunStatus(found[1]).terminal:
                raise InvalidRunStateError(
                    f"run {run_id} has ended ({found[1]}); it takes no more signals"
                )
            uow.events.signal(run_id, topic, payload_json, now)
            row_id = self.record(uow, arrival, "SIGNALLED", actor=actor, run_id=run_id, now=now)
        return "SIGNALLED", row_id
