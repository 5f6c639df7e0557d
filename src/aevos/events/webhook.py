"""Event ingress by webhook: declared sources, signatures, idempotent run starts.

A source is declared on the app and served at ``POST /v1/events/{name}``::

    app.webhook(
        "crm",
        workflow="triage",
        tenant="acme",
        secret=os.environ["CRM_WEBHOOK_SECRET"],
        map=lambda event: {"ticket": event["data"]},
    )

Each delivery starts a run of the source's workflow with the keyword arguments ``map``
returns (without ``map``, the workflow receives the whole event as ``event``).

- **Authentication.** A source with a secret requires ``X-Aevos-Signature:
  t=<unix seconds>,v1=<hex>``, where the hex is HMAC-SHA256 under the secret of
  ``"<t>." + raw body`` (Stripe's scheme). Signatures are compared in constant time; a
  timestamp further than ``tolerance`` seconds from the server's clock is refused, so a
  captured delivery cannot be replayed later. ``previous_secret`` keeps the old secret valid
  while senders move to the new one (several ``v1=`` entries are accepted too, for senders
  that sign with both). A source without a secret requires a bearer token of the source's
  tenant whose role may start runs (``runs:start``).
- **Idempotency.** The sender's ``X-Aevos-Event-Id`` (or, without one, the body's SHA-256)
  makes the start idempotent: the run's key is ``event:<source>:<id>``, so a redelivery is
  answered with the first delivery's run and recorded as DUPLICATE.
- **Nothing is lost.** Every delivery is a row of ``aevos_events`` (ACCEPTED with its run,
  DUPLICATE, or REJECTED with the error's code and message) and an audit record
  (``event.accepted``, ``event.duplicate``, ``event.rejected``) committed in the same
  transaction. The body is never stored or logged, only its SHA-256 and size: it may hold
  personal data. The exception: an authenticated delivery that fails validation or mapping
  is also kept, body and all, as a dead letter to be replayed (:mod:`aevos.events.intake`). Secrets are never stored, logged or shown (not even in ``repr``).
- **Personal data.** The run's input is stored under the source's ``data_policy`` (else
  the workflow's; see :mod:`aevos.pii.datapolicy`): with the default, e-mail addresses,
  card numbers and the like in the event reach the database, the workflow and the API as
  vault tokens (or placeholders without a vault key), never as sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..audit import AuditEvent
from ..audit.rejections import DEFAULT_LIMIT, RejectionBudget, Suppressed
from ..errors import (
    AevosError,
    AuthorizationError,
    DefinitionError,
    EventMappingError,
    InvalidEventError,
    PayloadTooLargeError,
    SignatureError,
    StaleSignatureError,
    UnknownSourceError,
    UnknownWorkflowError,
)
from ..identity import Permission, Principal, check_tenant
from ..kernel.workflow import StartOptions
from ..storage.events import EventRow
from .intake import Arrival, Channel, dead_letterable

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..identity import Identity
    from ..kernel.runtime import Runtime
    from ..pii.datapolicy import DataPolicy
    from .intake import Intake

SIGNATURE_HEADER = "X-Aevos-Signature"
EVENT_ID_HEADER = "X-Aevos-Event-Id"
DEFAULT_TOLERANCE = 300.0
DEFAULT_MAX_BODY = 1 << 20
MAX_BODY_LIMIT = 64 << 20
MIN_SECRET_BYTES = 16

Mapper = Callable[[Any], Mapping[str, Any]]
"""Turns a parsed event into the keyword arguments of the source's workflow."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# "event:<source>:<id>" fits the 200 characters of an idempotency key. No "." in an id: the
# signed string is "<t>.<id>.<body>", and a dot in the id would let one string parse two ways.
_EVENT_ID = re.compile(r"^[A-Za-z0-9_:@+=/-]{1,128}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_MAX_SIGNATURE_HEADER = 2048
_MAX_SIGNATURES = 8
_MAX_RECORDED_SIZE = 2**31 - 1  # the size column is a 32-bit integer
# Where deliveries to no declared source are recorded: the request names no tenant we trust.
UNKNOWN_SOURCE_TENANT = "default"
# Their rejections recorded one by one per minute, all undeclared names together.
UNKNOWN_SOURCE_LIMIT = DEFAULT_LIMIT

log = logging.getLogger("aevos.webhook")


class EventStatus(StrEnum):
    ACCEPTED = "ACCEPTED"  # started a run
    DUPLICATE = "DUPLICATE"  # a redelivery: answered with the first delivery's run
    SIGNALLED = "SIGNALLED"  # delivered as a signal to a running workflow
    REJECTED = "REJECTED"  # refused; ``reason`` says why


def _whole_event(event: Any) -> Mapping[str, Any]:
    return {"event": event}


def _key(secret: str | bytes, what: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        # Names the parameter, never the value.
        raise DefinitionError(f"{what} must be a str or bytes of at least {MIN_SECRET_BYTES} bytes")
    return secret


@dataclass(frozen=True)
class WebhookSource:
    """A declared sender of events (see :meth:`aevos.Aevos.webhook`).

    ``secrets`` holds the HMAC keys, current first; it is left out of ``repr`` and
    comparisons so that it cannot reach a log line by accident.
    """

    name: str
    workflow: str
    tenant: str = "default"
    secrets: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    map: Mapper = field(default=_whole_event, repr=False, compare=False)
    queue: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    max_body: int = DEFAULT_MAX_BODY
    # Rejected deliveries recorded one by one per minute; past it a flood is counted.
    rejections_per_minute: int = DEFAULT_LIMIT
    # What is done to personal data in the runs' input (None: the workflow's own policy).
    data_policy: DataPolicy | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(
                f"webhook source name {str(self.name)[:70]!r} must be 1-64 characters of "
                "lowercase letters, digits, '_', '.', '-'"
            )
        if not isinstance(self.workflow, str) or not 0 < len(self.workflow) <= 200:
            raise DefinitionError(f"webhook source {self.name!r} needs a workflow name")
        check_tenant(self.tenant)
        if not callable(self.map):
            raise DefinitionError(f"map of webhook source {self.name!r} must be callable")
        if not 0 < self.tolerance <= 24 * 3600:
            raise DefinitionError(
                f"tolerance of webhook source {self.name!r} must be between 0 and 86400 seconds"
            )
        if isinstance(self.max_body, bool) or not 0 < self.max_body <= MAX_BODY_LIMIT:
            raise DefinitionError(
                f"max_body of webhook source {self.name!r} must be 1 to {MAX_BODY_LIMIT} bytes"
            )
        rate = self.rejections_per_minute
        if isinstance(rate, bool) or not isinstance(rate, int) or not 0 < rate <= 100_000:
            raise DefinitionError(
                f"rejections_per_minute of webhook source {self.name!r} must be 1 to 100000"
            )

    @classmethod
    def declare(
        cls,
        name: str,
        *,
        workflow: str,
        tenant: str = "default",
        secret: str | bytes | None = None,
        previous_secret: str | bytes | None = None,
        map: Mapper | None = None,
        queue: str | None = None,
        tolerance: float | None = None,
        max_body: int | None = None,
        rejections_per_minute: int | None = None,
        data_policy: DataPolicy | None = None,
    ) -> WebhookSource:
        """A source from the arguments of :meth:`aevos.Aevos.webhook`."""
        if previous_secret is not None and secret is None:
            raise DefinitionError(
                f"webhook source {name!r}: previous_secret is for rotating a secret; "
                "give the new one as secret"
            )
        keys = tuple(
            _key(value, what)
            for value, what in ((secret, "secret"), (previous_secret, "previous_secret"))
            if value is not None
        )
        return cls(
            name,
            workflow,
            tenant,
            keys,
            _whole_event if map is None else map,
            queue,
            DEFAULT_TOLERANCE if tolerance is None else tolerance,
            DEFAULT_MAX_BODY if max_body is None else max_body,
            DEFAULT_LIMIT if rejections_per_minute is None else rejections_per_minute,
            data_policy,
        )

    @property
    def signed(self) -> bool:
        """Whether deliveries must carry a signature (else a bearer token)."""
        return bool(self.secrets)

    def verify(
        self,
        header: str | None,
        body: bytes,
        *,
        event_id: str | None = None,
        now: float | None = None,
    ) -> int:
        """Check ``X-Aevos-Signature``; returns which secret matched (0 current, 1 previous).

        The signature covers the timestamp, the ``X-Aevos-Event-Id`` when one is sent, and
        the body (:func:`signed_bytes`): the id decides which run a delivery is, so a
        captured delivery cannot be replayed as a new event under another id.

        Raises :class:`SignatureError` for a missing, malformed or wrong signature and
        :class:`StaleSignatureError` for a right one whose timestamp is outside the
        tolerance (checked after the signature, so the refusal reveals nothing unsigned).
        """
        timestamp, signatures = _parse_signature(header)
        signed = signed_bytes(timestamp, event_id, body)
        matched = -1
        for index, secret in enumerate(self.secrets):
            expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
            for candidate in signatures:
                # Every pair is compared, so the time taken says nothing about which matched.
                if hmac.compare_digest(expected, candidate) and matched < 0:
                    matched = index
        if matched < 0:
            raise SignatureError(f"the {SIGNATURE_HEADER} signature does not match")
        skew = (time.time() if now is None else now) - timestamp
        if abs(skew) > self.tolerance:
            raise StaleSignatureError(
                f"the signature's timestamp is {abs(skew):.0f} s "
                f"{'old' if skew > 0 else 'in the future'}; at most {self.tolerance:.0f} s "
                "are accepted (a replayed delivery, or a wrong clock)"
            )
        return matched


def signed_bytes(timestamp: int, event_id: str | None, body: bytes) -> bytes:
    """What the HMAC covers: ``"<t>.<event id>.<body>"``, or ``"<t>.<body>"`` without an
    event id (the body's digest is then the id, so the body alone decides)."""
    prefix = f"{timestamp}." if not event_id else f"{timestamp}.{event_id}."
    return prefix.encode() + body


def sign(
    secret: str | bytes,
    body: bytes,
    *,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> str:
    """The ``X-Aevos-Signature`` value for ``body`` sent with ``event_id`` (what a sender
    computes)."""
    key = secret.encode() if isinstance(secret, str) else secret
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(key, signed_bytes(t, event_id, body), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _parse_signature(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    if len(header) <= _MAX_SIGNATURE_HEADER:
        for part in header.split(","):
            scheme, _, value = part.strip().partition("=")
            if scheme == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
                timestamp = int(value)
            elif scheme == "v1" and _HEX.match(value.lower()):
                signatures.append(value.lower())
            # Other schemes are ignored, so senders can add newer ones alongside v1.
    if timestamp is None or not signatures or len(signatures) > _MAX_SIGNATURES:
        raise SignatureError(
            f"malformed {SIGNATURE_HEADER} header: expected t=<unix seconds>,v1=<hex sha256>"
        )
    return timestamp, signatures


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery as the server received it (the input of :meth:`Ingress.receive`).

    ``body`` is None when the body was larger than the source accepts: it was not read to
    its end, and ``size`` is the declared length or what had arrived by then.
    """

    source: str
    body: bytes | None
    size: int
    signature: str | None = None
    event_id: str | None = None
    token: str | None = None
    #: The sender's W3C trace context headers (``traceparent``, ``tracestate``): the run's
    #: trace continues the sender's (see :func:`aevos.kernel.tracing.trace_headers`).
    trace: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    """A received event as recorded in ``aevos_events``."""

    id: int
    tenant: str
    source: str
    event_id: str | None
    status: EventStatus
    reason: str | None  # "<error code>: <message>" for REJECTED events
    run_id: str | None
    payload_digest: str | None  # sha256 of the body, hex; the body itself is never stored
    size: int
    received_at: float
    channel: str = "webhook"  # webhook, nats or signal

    @property
    def code(self) -> str | None:
        """The stable error code of a rejection."""
        return None if self.reason is None else self.reason.partition(":")[0]


@dataclass
class _Received:
    """What is known about a delivery so far; each check adds to it."""

    tenant: str
    source: str
    size: int
    payload_digest: str | None
    received_at: float
    actor: str = "anonymous"
    authenticated: bool = False  # the signature or token checked out
    event_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Ingress:
    """Receives deliveries for an app's declared sources and lists what was received.

    ``refusals`` counts rejected deliveries past each source's budget; ``runtime`` starts
    (or refuses) the runs they ask for.
    """

    def __init__(
        self,
        runtime: Runtime,
        sources: Mapping[str, WebhookSource],
        refusals: RejectionBudget,
        identity: Identity,
        audit: AuditLog,
        intake: Intake | None = None,
    ) -> None:
        self.runtime = runtime
        self.sources = sources
        self.refusals = refusals
        self.identity = identity
        self.audit = audit
        self.intake = intake

    def max_body(self, source: str) -> int:
        """How many bytes of body the server should read for ``source``."""
        declared = self.sources.get(source)
        return DEFAULT_MAX_BODY if declared is None else declared.max_body

    def receive(self, delivery: Delivery) -> EventRecord:
        """Authenticate, parse, map and start a run; record the event whatever happens.

        Returns the ACCEPTED or DUPLICATE record; a refusal is recorded as REJECTED (and
        audited) before its error is raised. With tracing on, the delivery is a span, a
        child of the sender's trace context, and the run it starts is its child.
        """
        tracing = self.runtime.tracing
        if tracing is None:
            return self._receive(delivery)
        attributes = {"aevos.event.source": delivery.source[:100]}
        with tracing.incoming(delivery.trace, "aevos.webhook receive", attributes) as span:
            record = self._receive(delivery)
            span.set_attribute("aevos.event.status", record.status.value)
            if record.run_id is not None:
                span.set_attribute("aevos.run.id", record.run_id)
            return record

    def _receive(self, delivery: Delivery) -> EventRecord:
        source = self.sources.get(delivery.source)
        body = delivery.body
        got = _Received(
            tenant=UNKNOWN_SOURCE_TENANT if source is None else source.tenant,
            source=delivery.source[:100],
            size=min(delivery.size, _MAX_RECORDED_SIZE),
            payload_digest=None if body is None else hashlib.sha256(body).hexdigest(),
            received_at=time.time(),
        )
        try:
            if source is None:
                raise UnknownSourceError(f"no webhook source named {delivery.source[:100]!r}")
            if body is None:
                raise PayloadTooLargeError(
                    f"the event body is {got.size} bytes or more; source "
                    f"{source.name!r} accepts at most {source.max_body}"
                )
            self._authenticate(source, delivery, body, got)
            got.authenticated = True
            got.event_id = _event_id(delivery.event_id, got.payload_digest)
            kwargs = _mapped(source, _parse(body))
            run_id, created = self._start(source, kwargs, got)
        except Exception as exc:
            error = exc if isinstance(exc, AevosError) else None
            code = error.code if error is not None else "internal_error"
            reason = (
                f"{code}: {error.message}"
                if error is not None
                else f"{code}: unexpected {type(exc).__name__}"
            )
            # Anyone can send deliveries that fail before authentication: past the source's
            # budget a flood of those is counted and recorded as one summary a minute, not a
            # row and an audit record per request. Undeclared sources share one budget
            # (their names are free). An authenticated delivery's rejection is always kept.
            key = (got.tenant, got.source if source is not None else "*")
            limit = UNKNOWN_SOURCE_LIMIT if source is None else source.rejections_per_minute
            try:
                self.flush_refusals(got.received_at)
            except AevosError as flush_error:  # kept for the next try; answer this one
                log.error("counted rejections could not be recorded: %s", flush_error.code)
            budget = self.refusals
            if (
                self.intake is not None
                and source is not None
                and body is not None
                and got.event_id is not None
                and dead_letterable(exc)
            ):
                # Authenticated and identified, but not valid or not mappable: kept with
                # its body to be replayed once the cause is fixed.
                arrival = Arrival(Channel.WEBHOOK, source.name, source.tenant, got.event_id, body)
                self.intake.dead_letter(arrival, exc, actor=got.actor)
            elif got.authenticated or budget.admit(key, code, got.received_at, limit):
                self._record(got, EventStatus.REJECTED, reason=reason)
            raise
        status = EventStatus.ACCEPTED if created else EventStatus.DUPLICATE
        return self._record(got, status, run_id=run_id)

    def replay(self, arrival: Arrival, actor: str) -> str:
        """Handle a dead letter of a webhook source again (its body, its event id), as the
        delivery would be handled now; returns the run it started (or the key's run)."""
        source = self.sources.get(arrival.source)
        if source is None:
            raise UnknownSourceError(f"no webhook source named {arrival.source!r}")
        got = _Received(
            tenant=source.tenant,
            source=source.name,
            size=len(arrival.payload),
            payload_digest=arrival.digest,
            received_at=time.time(),
            actor=actor,
            authenticated=True,
            event_id=arrival.event_id,
            extra={"replayed": True},
        )
        kwargs = _mapped(source, _parse(arrival.payload))
        run_id, created = self._start(source, kwargs, got)
        self._record(got, EventStatus.ACCEPTED if created else EventStatus.DUPLICATE, run_id=run_id)
        return run_id

    def _authenticate(
        self, source: WebhookSource, delivery: Delivery, body: bytes, got: _Received
    ) -> None:
        if source.signed:
            matched = source.verify(delivery.signature, body, event_id=delivery.event_id)
            got.actor = f"webhook:{source.name}"
            got.extra["secret"] = "current" if matched == 0 else "previous"
            return
        identity = self.identity
        # Audits its own refusals (auth.denied / authz.denied) besides the event's.
        principal = identity.authenticate(delivery.token, tenant_hint=source.tenant)
        got.actor = principal.actor
        identity.authorize(
            principal, Permission.RUNS_START, action=f"send events to webhook {source.name!r}"
        )
        if principal.tenant != source.tenant:
            identity.deny_cross_tenant(principal, "webhook source", source.name)
            raise AuthorizationError(
                f"webhook source {source.name!r} is not accessible with this token"
            )

    def _start(
        self, source: WebhookSource, kwargs: dict[str, Any], got: _Received
    ) -> tuple[str, bool]:
        opts = StartOptions(
            queue=source.queue,
            idempotency_key=f"event:{source.name}:{got.event_id}",
            # Ours, so that a different id coming back means the key had started a run.
            run_id=uuid.uuid4().hex,
            tenant=source.tenant,
            actor=got.actor,
            data_policy=source.data_policy,
        )
        runtime = self.runtime
        workflow = runtime.workflows.get(source.workflow)
        if workflow is None:
            error = UnknownWorkflowError(
                f"webhook source {source.name!r} starts workflow {source.workflow!r}, "
                "which is not registered"
            )
            runtime.reject(source.workflow, opts, error)
            raise error
        # The run commits first, the event row after it: a crash in between loses the
        # ACCEPTED row, never the run, and the sender's retry is then recorded as DUPLICATE.
        handle = runtime.enqueue(workflow, (), kwargs, opts)
        return handle.run_id, handle.run_id == opts.run_id

    def flush_refusals(self, now: float) -> None:
        """Record each counted flood of rejections whose minute ended as one REJECTED event,
        reason ``too_many_rejections``, with its counts by code (``math.inf``: every one)."""
        budget = self.refusals
        pending = budget.due(now)
        while pending:
            counted = pending[0]
            try:
                self._record_counted(counted)
            except BaseException:
                budget.put_back(pending)  # written on the next try
                raise
            pending.pop(0)

    def _record_counted(self, counted: Suppressed) -> None:
        tenant, source = cast(tuple[str, str], counted.key)
        got = _Received(
            tenant=tenant,
            source=source,
            size=0,
            payload_digest=None,
            received_at=counted.start,
            actor=f"system:{self.runtime.owner}",
            extra={
                "count": counted.count,
                "reasons": dict(counted.reasons),
                "window_end": counted.end,
            },
        )
        reason = f"too_many_rejections: {counted.describe()}"
        self._record(got, EventStatus.REJECTED, reason=reason)

    def _record(
        self,
        got: _Received,
        status: EventStatus,
        *,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> EventRecord:
        data = {
            "source": got.source,
            "event_id": got.event_id,
            "payload_digest": got.payload_digest,
            "size": got.size,
            "reason": reason,
            **got.extra,
        }
        audit = AuditEvent(
            action=f"event.{status.value.lower()}",
            actor=got.actor,
            tenant=got.tenant,
            subject=f"webhook:{got.source}",
            run_id=run_id,
            data={k: v for k, v in data.items() if v is not None},
        )
        with self.runtime.store.transaction() as uow:
            row = uow.events.insert(
                tenant=got.tenant,
                source=got.source,
                event_id=got.event_id,
                status=status.value,
                reason=reason,
                run_id=run_id,
                payload_digest=got.payload_digest,
                size=got.size,
                received_at=got.received_at,
            )
            self.audit.append(audit, uow=uow)
        record = _record_of(row)
        if status is EventStatus.REJECTED:
            # The code only: the message may name what the sender sent.
            log.info("webhook %r: event %s rejected (%s)", got.source, record.id, record.code)
        else:
            log.debug("webhook %r: event %s %s", got.source, record.id, status.value)
        return record

    def list_events(
        self,
        principal: Principal,
        *,
        source: str | None = None,
        status: Iterable[EventStatus] | None = None,
        channel: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        """The events received for the principal's tenant, newest first (``runs:read``)."""
        self.identity.authorize(principal, Permission.RUNS_READ, action="read events")
        statuses = None if status is None else [EventStatus(s).value for s in status]
        with self.runtime.store.reading() as uow:
            rows = uow.events.find(
                principal.tenant,
                source=source,
                statuses=statuses,
                channel=channel,
                limit=limit,
                offset=offset,
            )
        return [_record_of(row) for row in rows]


def _record_of(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        tenant=row.tenant,
        source=row.source,
        event_id=row.event_id,
        status=EventStatus(row.status),
        reason=row.reason,
        run_id=row.run_id,
        payload_digest=row.payload_digest,
        size=row.size,
        received_at=row.received_at,
        channel=row.channel,
    )


def _event_id(header: str | None, payload_digest: str | None) -> str:
    if header is None:
        return f"sha256:{payload_digest}"
    if not _EVENT_ID.match(header):
        raise InvalidEventError(
            f"the {EVENT_ID_HEADER} header must be 1-128 printable ASCII characters"
        )
    return header


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> Any:
    if not body:
        raise InvalidEventError("the event body is empty; it must be JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError(
            f"the event body is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        # msg, line and column only: the exception's full text quotes the document.
        raise InvalidEventError(
            f"the event body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidEventError("the event body is JSON nested too deeply") from None
    except ValueError as exc:
        # NaN / Infinity, or an integer past Python's digit limit; neither quotes the body.
        raise InvalidEventError(f"the event body is not JSON: {exc}") from None


def _mapped(source: WebhookSource, event: Any) -> dict[str, Any]:
    try:
        kwargs = source.map(event)
    except Exception as exc:
        # The exception's type and where it was raised, not its text: that may quote the
        # event (a KeyError names the missing key, a ValueError the bad value).
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        raise EventMappingError(
            f"the mapping of webhook source {source.name!r} raised {type(exc).__name__}{where}"
        ) from None
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise EventMappingError(
            f"the mapping of webhook source {source.name!r} must return a dict of keyword "
            f"arguments for workflow {source.workflow!r}, not {type(kwargs).__name__}"
        )
    return dict(kwargs)
