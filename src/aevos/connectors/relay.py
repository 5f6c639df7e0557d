"""The outbox relay: sends what runs published, after their transactions committed.

A run's ``publish`` only writes an outbox row (in the transaction of the position or step
that published it); the relay, a worker chore (or :meth:`OutboxRelay.run_once` from any
process), takes due rows and sends each to the first destination whose subject pattern
matches: NATS JetStream or a signed webhook. An event thus goes out if and only if its
transaction committed, at least once:

- a relay that dies between sending and marking the row sent leaves it to be taken again
  once its lease lapses, and the resend carries the same id (JetStream's ``Nats-Msg-Id``,
  the webhook's ``X-Aevos-Event-Id``), so JetStream's duplicate window, or the receiver,
  drops it;
- a failed attempt is retried with exponential backoff (the kernel's
  :class:`~aevos.kernel.retry.RetryPolicy`); a message that can never be delivered (no
  destination takes its subject, the receiver refuses it with a 4xx, the attempts are spent)
  is marked ``DEAD`` with its reason, visible in :meth:`OutboxRelay.messages`, and can be
  sent again with :meth:`OutboxRelay.requeue`.

Webhooks are signed like the ones aevos receives (:mod:`aevos.events.webhook`):
``X-Aevos-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<event id>.<body>">``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..audit import AuditEvent
from ..errors import ConnectorConfigError, ConnectorRejectedError, ConnectorUnavailableError
from ..kernel.retry import RetryPolicy
from ..storage.outbox import DEAD, OutboxRow
from .credentials import Secret, resolve, scrub

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage import Store, UnitOfWork

log = logging.getLogger("aevos.outbox")
T = TypeVar("T")

MSG_ID_HEADER = "Nats-Msg-Id"
EVENT_ID_HEADER = "X-Aevos-Event-Id"
SIGNATURE_HEADER = "X-Aevos-Signature"
SUBJECT_HEADER = "X-Aevos-Subject"
RUN_HEADER = "X-Aevos-Run-Id"

#: The relay's default retries: 10 attempts over about 17 minutes.
DEFAULT_RETRY = RetryPolicy(max_attempts=10, initial_interval=1.0, backoff=2.0, max_interval=300.0)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def sign(secret: bytes, body: bytes, event_id: str, timestamp: int | None = None) -> str:
    """The ``X-Aevos-Signature`` value of an outgoing webhook (the incoming scheme)."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.{event_id}.".encode() + body
    return f"t={t},v1={hmac.new(secret, signed, hashlib.sha256).hexdigest()}"


def _takes_trace(destination: Destination) -> bool:
    """Whether a destination's ``send`` takes the trace headers (a user's destination
    written before they existed takes only the row)."""
    try:
        parameters = inspect.signature(destination.send).parameters
    except (TypeError, ValueError):
        return False
    return "trace" in parameters or any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values()
    )


class Destination:
    """Where messages of matching subjects go; :meth:`send` raises a connector error."""

    subjects: str
    name: str

    def send(self, row: OutboxRow, trace: Mapping[str, str] | None = None) -> None:
        """Send one message; ``trace`` (when the relay traces) holds the W3C headers of
        the run that published it, to send along."""
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class NatsDestination(Destination):
    """NATS JetStream at ``servers``; a stream must take the subjects (the relay does not
    create streams: their retention is the operator's choice). ``token``/``token_env`` or
    ``user`` with ``password``/``password_env`` authenticate."""

    servers: str | list[str]
    subjects: str = ">"
    timeout: float = 5.0
    token: Secret | str | None = None
    token_env: str | None = None
    user: str | None = None
    password: Secret | str | None = None
    password_env: str | None = None
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _nc: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._token = resolve(self.token, self.token_env)
        self._password = resolve(self.password, self.password_env)
        self.token = self.password = None  # kept only as Secrets
        servers = [self.servers] if isinstance(self.servers, str) else list(self.servers)
        if not servers or not all(s.startswith(("nats://", "tls://")) for s in servers):
            raise ConnectorConfigError("NATS destination servers must be nats:// or tls:// URLs")
        # Without any user:password@ part: the name goes into rows, errors and logs.
        self.name = ",".join(
            s.split("://", 1)[0] + "://" + s.split("://", 1)[1].split("@")[-1] for s in servers
        )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="aevos-outbox-nats", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(self.timeout * 3 + 5)

    async def _connection(self) -> Any:
        import nats

        if self._nc is None or self._nc.is_closed:
            options: dict[str, Any] = {
                "servers": self.servers,
                "connect_timeout": max(1, int(self.timeout)),
                # Few reconnects: a server down for long closes the connection, and the
                # next attempt (after the row's backoff) connects afresh.
                "max_reconnect_attempts": 3,
                "reconnect_time_wait": 0.5,
                "name": "aevos-outbox",
            }
            if self._token is not None:
                options["token"] = self._token.reveal()
            if self.user is not None:
                options["user"] = self.user
                if self._password is not None:
                    options["password"] = self._password.reveal()

            async def quiet(exc: Exception) -> None:
                log.debug("outbox NATS connection: %s", type(exc).__name__)

            options["error_cb"] = quiet
            self._nc = await nats.connect(**options)
        return self._nc

    async def _publish(self, row: OutboxRow, trace: Mapping[str, str] | None) -> None:
        from nats.errors import NoRespondersError
        from nats.js.errors import APIError, NoStreamResponseError

        nc = await self._connection()
        js = nc.jetstream(timeout=self.timeout)
        headers = {**(trace or {}), MSG_ID_HEADER: row.message_id}
        if row.run_id:
            headers[RUN_HEADER] = row.run_id
        try:
            ack = await js.publish(row.subject, row.payload.encode(), headers=headers)
        except (NoStreamResponseError, NoRespondersError):
            raise ConnectorUnavailableError(
                f"no JetStream stream takes subject {row.subject!r} on {self.name}"
            ) from None
        except APIError as exc:
            raise ConnectorRejectedError(
                f"JetStream on {self.name} refused {row.subject!r}: {exc.description or exc}"
            ) from None
        if ack.duplicate:
            log.info("outbox message %s was already in stream %s", row.message_id, ack.stream)

    def send(self, row: OutboxRow, trace: Mapping[str, str] | None = None) -> None:
        try:
            self._run(self._publish(row, trace))
        except (ConnectorUnavailableError, ConnectorRejectedError):
            raise
        except Exception as exc:
            raise ConnectorUnavailableError(
                f"NATS at {self.name}: {type(exc).__name__}: "
                f"{scrub(str(exc), [self._token, self._password])}"
            ) from None

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        nc, self._nc = self._nc, None

        async def shutdown() -> None:
            if nc is not None and not nc.is_closed:
                # Closing a connection to a server that is gone may fail; it is closed then.
                with contextlib.suppress(Exception):
                    await nc.close()
            # A client whose connect failed leaves tasks behind (its reconnect loop);
            # finished here, they cannot be destroyed pending when the loop is closed.
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        loop.close()


@dataclass
class WebhookDestination(Destination):
    """An HTTP endpoint receiving each message as a signed ``POST`` of its JSON payload."""

    url: str
    secret: Secret | str | None = None
    secret_env: str | None = None
    subjects: str = ">"
    timeout: float = 10.0
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._secret = resolve(self.secret, self.secret_env)
        self.secret = None  # kept only as a Secret
        if self._secret is None:
            raise ConnectorConfigError("a webhook destination needs secret= or secret_env=")
        url = httpx.URL(self.url)
        if url.scheme not in ("http", "https") or not url.host or url.userinfo:
            raise ConnectorConfigError(
                "webhook destination URL must be http(s)://host/path without credentials"
            )
        # The query may carry a token: the name shows scheme, host and path only, and the
        # query's values are scrubbed from whatever the receiver answers.
        self.name = f"webhook:{url.scheme}://{url.netloc.decode()}{url.path}"
        self._hidden: list[Secret | str | None] = [
            self._secret,
            *(value for _, value in url.params.multi_items() if len(value) >= 4),
        ]

    def send(self, row: OutboxRow, trace: Mapping[str, str] | None = None) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        assert self._secret is not None
        body = row.payload.encode()
        headers = {
            **(trace or {}),
            "Content-Type": "application/json",
            EVENT_ID_HEADER: row.message_id,
            SUBJECT_HEADER: row.subject,
            SIGNATURE_HEADER: sign(self._secret.reveal().encode(), body, row.message_id),
        }
        if row.run_id:
            headers[RUN_HEADER] = row.run_id
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise ConnectorUnavailableError(f"{self.name}: timed out") from None
        except httpx.TransportError as exc:
            raise ConnectorUnavailableError(
                f"{self.name}: {type(exc).__name__}: {scrub(str(exc), self._hidden)}"
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = scrub(response.text[:4096], self._hidden)[:120].replace("\n", " ")
        if status >= 500 or status in (408, 425, 429):
            raise ConnectorUnavailableError(f"{self.name}: HTTP {status}: {excerpt!r}")
        raise ConnectorRejectedError(f"{self.name}: HTTP {status}: {excerpt!r}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass(frozen=True)
class RelayReport:
    """What one :meth:`OutboxRelay.run_once` did."""

    sent: int = 0
    retried: int = 0
    dead: int = 0


#: The most messages one listing returns.
MAX_LISTED = 1000


class Outbox:
    """The outbox as operators see it: messages with their state, DEAD ones sent again."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def messages(
        self,
        tenant: str | None = None,
        *,
        status: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[OutboxRow]:
        """Messages, oldest first (``status="DEAD"``: those given up, with the reason in
        ``last_error``); ``tenant`` None lists every tenant's."""
        if status is not None and status not in ("PENDING", "SENT", DEAD):
            raise ConnectorConfigError(
                f"outbox status must be PENDING, SENT or DEAD, got {status[:20]!r}"
            )
        if not 0 < limit <= MAX_LISTED:
            raise ConnectorConfigError(f"outbox limit must be 1 to {MAX_LISTED}, got {limit}")
        with self.store.reading() as uow:
            return uow.outbox.find(tenant, status=status, run_id=run_id, limit=limit)

    def requeue(
        self,
        tenant: str,
        message_ids: Sequence[str],
        *,
        also: Callable[[UnitOfWork, int], object] | None = None,
    ) -> int:
        """Make the tenant's DEAD ``message_ids`` due again (after their cause was fixed);
        how many were. ``also(uow, count)`` runs in the same transaction (an audit record)."""
        ids = list(message_ids)
        if not 0 < len(ids) <= MAX_LISTED:
            raise ConnectorConfigError(f"requeue 1 to {MAX_LISTED} message ids, got {len(ids)}")
        with self.store.transaction() as uow:
            count = uow.outbox.requeue(tenant, ids, time.time())
            if also is not None:
                also(uow, count)
            return count

    def lag(self) -> float:
        """Seconds the oldest unsent message has waited (0 when none waits)."""
        with self.store.reading() as uow:
            oldest = uow.outbox.oldest_pending()
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)


class OutboxRelay:
    """Sends outbox messages to their destinations (first whose ``subjects`` matches).

    ``lease``: seconds a taken message stays hidden from other relays (longer than a send
    can take); ``retry``: the backoff between attempts and how many are made before a
    message is marked DEAD. With ``audit``, each message given up is also an
    ``outbox.dead`` audit record of its tenant (id, subject, destination, reason), in the
    transaction that marks it.
    """

    def __init__(
        self,
        store: Store,
        destinations: Sequence[Destination],
        *,
        batch: int = 100,
        lease: float = 60.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        audit: AuditLog | None = None,
        trace_context: bool = False,
    ) -> None:
        if not destinations:
            raise ConnectorConfigError("an outbox relay needs at least one destination")
        if batch < 1 or lease <= 0:
            raise ConnectorConfigError("outbox relay batch must be >= 1 and lease > 0")
        self.store = store
        self.outbox = Outbox(store)
        self.destinations = list(destinations)
        self.batch = batch
        self.lease = lease
        self.retry = retry
        self.audit = audit
        #: Send each message with its run's W3C trace context (``traceparent`` of the run's
        #: start span, stored with the run), so consumers join the run's trace.
        self.trace_context = trace_context

    def destination_for(self, subject: str) -> Destination | None:
        return next((d for d in self.destinations if subject_matches(d.subjects, subject)), None)

    def run_once(self, *, rounds: int = 10) -> RelayReport:
        """Send what is due, up to ``rounds`` batches; what it did."""
        sent = retried = dead = 0
        for _ in range(rounds):
            rows = self.claim()
            for row in rows:
                outcome = self.deliver(row)
                sent += outcome == "sent"
                retried += outcome == "retried"
                dead += outcome == "dead"
            if len(rows) < self.batch:
                break
        return RelayReport(sent, retried, dead)

    def claim(self) -> list[OutboxRow]:
        """Take the due messages of one batch (hidden from other relays for the lease)."""
        with self.store.transaction() as uow:
            return uow.outbox.claim(time.time(), limit=self.batch, lease=self.lease)

    def deliver(self, row: OutboxRow) -> str:
        """Send one taken message and record the outcome: ``sent``, ``retried`` or ``dead``."""
        destination = self.destination_for(row.subject)
        if destination is None:
            reason = f"no destination takes subject {row.subject!r}"
            return self._dead(row, None, reason)
        trace = self._trace_of(row) if self.trace_context else None
        try:
            try:
                if trace and _takes_trace(destination):
                    destination.send(row, trace)
                else:
                    destination.send(row)
            except (ConnectorRejectedError, ConnectorUnavailableError):
                raise
            except Exception as exc:
                # A destination of the user's own that raised something else: retried like
                # an outage (the attempts bound it), never left to stop the batch.
                raise ConnectorUnavailableError(
                    f"{destination.name}: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None
        except ConnectorRejectedError as exc:
            return self._dead(row, destination.name, exc.message)
        except ConnectorUnavailableError as exc:
            if not self.retry.should_retry(exc, row.attempts):
                reason = f"gave up after {row.attempts} attempts: {exc.message}"
                return self._dead(row, destination.name, reason)
            delay = self.retry.delay(row.attempts)
            with self.store.transaction() as uow:
                uow.outbox.retry_later(
                    row.id,
                    destination=destination.name,
                    error=exc.message,
                    due_at=time.time() + delay,
                )
            log.info(
                "outbox message %s to %s failed (attempt %d), retrying in %.1f s: %s",
                row.message_id,
                destination.name,
                row.attempts,
                delay,
                exc.message,
            )
            return "retried"
        with self.store.transaction() as uow:
            uow.outbox.mark_sent(row.id, destination=destination.name, now=time.time())
        return "sent"

    def _trace_of(self, row: OutboxRow) -> dict[str, str] | None:
        if row.run_id is None:
            return None
        with self.store.reading() as uow:
            found = uow.traces.get(row.run_id)
        if found is None:
            return None
        traceparent, tracestate = found
        headers = {"traceparent": traceparent}
        if tracestate:
            headers["tracestate"] = tracestate
        return headers

    def _dead(self, row: OutboxRow, destination: str | None, reason: str) -> str:
        with self.store.transaction() as uow:
            uow.outbox.mark_dead(row.id, destination=destination, reason=reason)
            if self.audit is not None:
                event = AuditEvent(
                    action="outbox.dead",
                    actor="system:outbox-relay",
                    tenant=row.tenant,
                    subject=f"outbox:{row.message_id}",
                    run_id=row.run_id,
                    data={
                        "subject": row.subject,
                        "destination": destination,
                        "attempts": row.attempts,
                        "reason": reason,
                    },
                )
                self.audit.append(event, uow=uow)
        log.warning("outbox message %s is DEAD: %s", row.message_id, reason)
        return "dead"

    def messages(
        self, tenant: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[OutboxRow]:
        """See :meth:`Outbox.messages`."""
        return self.outbox.messages(tenant, status=status, limit=limit)

    def requeue(self, tenant: str, message_ids: Sequence[str]) -> int:
        """See :meth:`Outbox.requeue`."""
        return self.outbox.requeue(tenant, message_ids)

    def lag(self) -> float:
        """See :meth:`Outbox.lag`."""
        return self.outbox.lag()

    def close(self) -> None:
        for destination in self.destinations:
            destination.close()


__all__ = [
    "DEAD",
    "DEFAULT_RETRY",
    "Destination",
    "NatsDestination",
    "Outbox",
    "OutboxRelay",
    "RelayReport",
    "WebhookDestination",
    "sign",
    "subject_matches",
]
