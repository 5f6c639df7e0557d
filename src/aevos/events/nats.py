"""NATS JetStream triggers: messages on a subject start workflow runs, or signal running ones.

A trigger is declared on the app and consumed by workers::

    app.nats_trigger(
        "orders",
        stream="ORDERS",
        subject="orders.created",
        workflow="fulfil",
        tenant="acme",
        key="order.id",                                  # optional: the idempotency field
        map=lambda event: {"order": event["order"]},
    )

- **A durable consumer per trigger** (``aevos-<name>``, explicit acks) on the stream, shared
  by every worker process on every host: JetStream hands each message to one of them.
- **Idempotent starts.** The run's idempotency key is ``nats:<trigger>:<id>``, where the id
  is the declared ``key`` field of the event, else the message's ``Nats-Msg-Id`` header, else
  ``<stream>:<stream sequence>``. A message is acknowledged only after the run's start (its
  row, its audit record and the event's record: one transaction) has committed: a worker
  that dies before that leaves the message to be redelivered, and a redelivery finds the
  key's run and starts nothing (recorded DUPLICATE).
- **Signals.** A trigger with ``signal=<topic>`` and ``correlate=<field>`` delivers each
  event to the run of its tenant whose idempotency key (else run id) is the event's
  correlation value, as a signal on ``topic`` (``ctx.wait_signal(topic)``), once: the
  signal and the event's record commit together, and a redelivery is a DUPLICATE.
- **Dead letters.** A message whose body is not JSON, whose mapping fails, whose workflow
  refuses the arguments or whose correlation key names no run is kept as a dead letter
  (:mod:`aevos.events.intake`) and then acknowledged; it is replayed from the CLI, the API
  or the console. A message that could not be handled because the database is unavailable
  is not acknowledged (``nak`` with a delay), so JetStream delivers it again.
- **Back-pressure.** A trigger's consumer holds at most ``max_pending`` messages that are
  fetched but not yet acknowledged in each worker: when its queue is full it stops pulling
  until a handler frees a slot. (The durable consumer's own ``max_ack_pending``, the
  server's default, bounds all workers together.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import (
    AevosError,
    DefinitionError,
    EventMappingError,
    NoCorrelatedRunError,
    UnknownSourceError,
    UnknownWorkflowError,
)
from ..identity import check_tenant
from ..kernel.tracing import trace_headers
from ..kernel.workflow import StartOptions
from ..records.status import RunStatus
from .intake import Arrival, Channel, Intake, dead_letterable
from .webhook import _parse, _whole_event

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from ..kernel.runtime import PreparedStart, Runtime
    from ..kernel.workflow import Workflow
    from ..pii.datapolicy import DataPolicy
    from ..storage import UnitOfWork

log = logging.getLogger("aevos.events")

URL_ENV = "AEVOS_NATS_URL"
DEFAULT_URL = "nats://127.0.0.1:4222"
MSG_ID_HEADER = "Nats-Msg-Id"
#: How long a pull waits to fill its batch (seconds).
FETCH_WAIT = 0.2

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9_:@+=/.-]{1,128}$")
_FIELD = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$")


def default_servers() -> tuple[str, ...]:
    """``AEVOS_NATS_URL`` (comma-separated URLs), else the local server."""
    text = os.environ.get(URL_ENV) or DEFAULT_URL
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class NatsTrigger:
    """A declared JetStream trigger (see :meth:`aevos.Aevos.nats_trigger`)."""

    name: str
    stream: str
    subject: str
    tenant: str = "default"
    workflow: str | None = None
    signal: str | None = None
    correlate: str | None = None
    key: str | None = None
    map: Callable[[Any], Any] = field(default=_whole_event, repr=False, compare=False)
    queue: str | None = None
    servers: tuple[str, ...] = field(default_factory=default_servers)
    max_pending: int = 64
    batch: int = 16
    concurrency: int = 4
    ack_wait: float = 30.0
    data_policy: DataPolicy | None = None

    def __post_init__(self) -> None:
        what = f"NATS trigger {str(self.name)[:70]!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(
                f"{what}: a name must be 1-64 characters of lowercase letters, digits, '_', '-'"
            )
        if not isinstance(self.stream, str) or not re.match(r"^[A-Za-z0-9_-]{1,64}$", self.stream):
            raise DefinitionError(f"{what}: stream must be a JetStream stream name")
        if not isinstance(self.subject, str) or not 0 < len(self.subject) <= 255:
            raise DefinitionError(f"{what}: subject must be 1-255 characters")
        check_tenant(self.tenant)
        if (self.workflow is None) == (self.signal is None):
            raise DefinitionError(f"{what}: give either workflow= (start runs) or signal=")
        if self.signal is not None and self.correlate is None:
            raise DefinitionError(f"{what}: signal= needs correlate=, the correlation field")
        for label, path in (("key", self.key), ("correlate", self.correlate)):
            if path is not None and not _FIELD.match(path):
                raise DefinitionError(f"{what}: {label} must be a dotted field path like 'a.b'")
        if not callable(self.map):
            raise DefinitionError(f"{what}: map must be callable")
        for label, value, top in (
            ("max_pending", self.max_pending, 100_000),
            ("batch", self.batch, 1_000),
            ("concurrency", self.concurrency, 256),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= top:
                raise DefinitionError(f"{what}: {label} must be 1 to {top}")
        if not 0 < self.ack_wait <= 3600:
            raise DefinitionError(f"{what}: ack_wait must be between 0 and 3600 seconds")
        if not self.servers:
            raise DefinitionError(f"{what}: no NATS server URL")

    @property
    def durable(self) -> str:
        """The durable consumer's name on the stream."""
        return f"aevos-{self.name}"


def _field(event: Any, path: str, what: str) -> str:
    value = event
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise EventMappingError(f"the event has no field {path!r} ({what})")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventMappingError(f"the event's field {path!r} ({what}) must be a string or integer")
    text = str(value)
    if not _ID.match(text):
        raise EventMappingError(
            f"the event's field {path!r} ({what}) must be 1-128 printable ASCII characters"
        )
    return text


def _mapped(trigger: NatsTrigger, event: Any) -> Any:
    try:
        return trigger.map(event)
    except Exception as exc:
        # The type only: the message may quote the event.
        raise EventMappingError(
            f"the mapping of NATS trigger {trigger.name!r} raised {type(exc).__name__}"
        ) from None


class Triggers:
    """Handles the messages of an app's declared triggers (synchronously: what the
    consumers call from their handler threads) and replays their dead letters."""

    def __init__(
        self, runtime: Runtime, intake: Intake, triggers: Mapping[str, NatsTrigger]
    ) -> None:
        self.runtime = runtime
        self.intake = intake
        self.triggers = triggers

    def handle(self, trigger: NatsTrigger, arrival: Arrival) -> str:
        """Start (or signal) what the message asks for; returns the event's status
        (ACCEPTED, DUPLICATE, SIGNALLED, or DEAD when it was dead-lettered). Raises
        :class:`~aevos.errors.StorageError` when nothing could be recorded: the message
        must then not be acknowledged."""
        actor = f"nats:{trigger.name}"
        try:
            status, _ = self._traced(trigger, arrival, actor)
        except Exception as exc:
            if not dead_letterable(exc):
                raise
            self.intake.dead_letter(arrival, exc, actor=actor)
            return "DEAD"
        return status

    def handle_batch(self, trigger: NatsTrigger, arrivals: Sequence[Arrival]) -> list[str]:
        """:meth:`handle` for a fetched batch: the runs it starts are enqueued in one
        transaction (with their audit records and the events' records), so a batch costs
        one commit and one turn on the tenant's audit chain. Events that fail are
        dead-lettered one by one first; should the batch's transaction refuse (a key
        reused for another workflow), each event is handled on its own."""
        if trigger.signal is not None:
            return [self.handle(trigger, arrival) for arrival in arrivals]
        if self.runtime.tracing is not None and any("traceparent" in a.meta for a in arrivals):
            # A message that carries its sender's trace context starts its run on its own,
            # under its own ingress span (a batch's runs share one transaction, not a parent).
            own = [i for i, a in enumerate(arrivals) if "traceparent" in a.meta]
            rest = [i for i, a in enumerate(arrivals) if "traceparent" not in a.meta]
            found = dict(
                zip(rest, self.handle_batch(trigger, [arrivals[i] for i in rest]), strict=True)
            )
            found.update({i: self.handle(trigger, arrivals[i]) for i in own})
            return [found[i] for i in range(len(arrivals))]
        actor = f"nats:{trigger.name}"
        statuses: list[str] = ["DEAD"] * len(arrivals)
        ready: list[tuple[int, Arrival, PreparedStart]] = []
        for index, arrival in enumerate(arrivals):
            try:
                event = _parse(arrival.payload)
                keyed = self._keyed(trigger, arrival, event)
                ready.append((index, keyed, self._prepare(trigger, keyed, event, actor)))
            except Exception as exc:
                if not dead_letterable(exc):
                    raise
                self.intake.dead_letter(arrival, exc, actor=actor)
        if not ready:
            return statuses
        intake = self.intake

        def record(uow: UnitOfWork, created: list[bool]) -> None:
            intake.record_started(
                uow,
                [
                    (keyed, prepared.new.run_id)
                    for (_, keyed, prepared), made in zip(ready, created, strict=True)
                    if made
                ],
            )

        try:
            started = self.runtime.enqueue_prepared([p for _, _, p in ready], also=record)
        except AevosError as exc:
            if not dead_letterable(exc):
                raise
            for index, _, _ in ready:
                statuses[index] = self.handle(trigger, arrivals[index])
            return statuses
        duplicates = []
        for (index, keyed, _), (run_id, made) in zip(ready, started, strict=True):
            statuses[index] = "ACCEPTED" if made else "DUPLICATE"
            if not made:
                duplicates.append((keyed, run_id))
        if duplicates:
            with self.runtime.store.transaction() as uow:
                for keyed, run_id in duplicates:
                    intake.record(uow, keyed, "DUPLICATE", actor=actor, run_id=run_id)
        return statuses

    def replay(self, arrival: Arrival, actor: str) -> str:
        """Handle a dead letter of a trigger again; returns its run."""
        trigger = self.triggers.get(arrival.source)
        if trigger is None:
            raise UnknownSourceError(f"no NATS trigger named {arrival.source!r}")
        _, run_id = self._process(trigger, arrival, actor)
        return run_id

    def _traced(self, trigger: NatsTrigger, arrival: Arrival, actor: str) -> tuple[str, str]:
        tracing = self.runtime.tracing
        if tracing is None:
            return self._process(trigger, arrival, actor)
        carrier = {k: str(v) for k, v in arrival.meta.items() if k in ("traceparent", "tracestate")}
        with tracing.incoming(
            carrier,
            "aevos.nats receive",
            {"aevos.event.source": trigger.name, "aevos.event.channel": "nats"},
        ) as span:
            status, run_id = self._process(trigger, arrival, actor)
            span.set_attribute("aevos.event.status", status)
            span.set_attribute("aevos.run.id", run_id)
        return status, run_id

    def _keyed(self, trigger: NatsTrigger, arrival: Arrival, event: Any) -> Arrival:
        # Records name the event by the id that makes it idempotent.
        ident = arrival.event_id if trigger.key is None else _field(event, trigger.key, "key")
        return Arrival(
            arrival.channel, arrival.source, arrival.tenant, ident, arrival.payload, arrival.meta
        )

    def _process(self, trigger: NatsTrigger, arrival: Arrival, actor: str) -> tuple[str, str]:
        event = _parse(arrival.payload)
        keyed = self._keyed(trigger, arrival, event)
        if trigger.signal is not None:
            return self._signal(trigger, keyed, event, actor)
        return self._start(trigger, keyed, event, actor)

    def _prepare(
        self, trigger: NatsTrigger, arrival: Arrival, event: Any, actor: str
    ) -> PreparedStart:
        workflow, kwargs, opts = self._start_of(trigger, arrival, event, actor)
        return self.runtime.prepare(workflow, (), kwargs, opts)

    def _start_of(
        self, trigger: NatsTrigger, arrival: Arrival, event: Any, actor: str
    ) -> tuple[Workflow[Any, Any], dict[str, Any], StartOptions]:
        kwargs = _mapped(trigger, event)
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise EventMappingError(
                f"the mapping of NATS trigger {trigger.name!r} must return a dict of keyword "
                f"arguments, not {type(kwargs).__name__}"
            )
        opts = StartOptions(
            queue=trigger.queue,
            idempotency_key=f"nats:{trigger.name}:{arrival.event_id}",
            run_id=uuid.uuid4().hex,
            tenant=trigger.tenant,
            actor=actor,
            data_policy=trigger.data_policy,
        )
        runtime = self.runtime
        workflow = runtime.workflows.get(trigger.workflow or "")
        if workflow is None:
            error = UnknownWorkflowError(
                f"NATS trigger {trigger.name!r} starts workflow {trigger.workflow!r}, "
                "which is not registered"
            )
            runtime.reject(trigger.workflow or "", opts, error)
            raise error
        return workflow, dict(kwargs), opts

    def _start(
        self, trigger: NatsTrigger, arrival: Arrival, event: Any, actor: str
    ) -> tuple[str, str]:
        workflow, kwargs, opts = self._start_of(trigger, arrival, event, actor)
        runtime = self.runtime
        intake = self.intake

        def record(uow: UnitOfWork, run_id: str) -> None:
            # The run.started audit record names the key; one audit record per event.
            intake.record(uow, arrival, "ACCEPTED", actor=actor, run_id=run_id, audited=False)

        handle = runtime.enqueue(workflow, (), kwargs, opts, also=record)
        if handle.run_id == opts.run_id:
            return "ACCEPTED", handle.run_id
        with runtime.store.transaction() as uow:
            intake.record(uow, arrival, "DUPLICATE", actor=actor, run_id=handle.run_id)
        return "DUPLICATE", handle.run_id

    def _signal(
        self, trigger: NatsTrigger, arrival: Arrival, event: Any, actor: str
    ) -> tuple[str, str]:
        correlation = _field(event, trigger.correlate or "", "correlation key")
        payload_json = codec.encode(
            _mapped(trigger, event), f"signal of NATS trigger {trigger.name!r}"
        )
        topic = trigger.signal or ""
        store = self.runtime.store
        now = time.time()
        with store.transaction() as uow:
            found = uow.events.run_of(trigger.tenant, correlation, lock=True)
            if found is None:
                raise NoCorrelatedRunError(
                    f"no run of tenant {trigger.tenant!r} has the correlation key of this event"
                )
            run_id, status = found
            seen = uow.events.seen(
                trigger.tenant, Channel.NATS.value, trigger.name, arrival.event_id
            )
            if seen is not None:
                self.intake.record(uow, arrival, "DUPLICATE", actor=actor, run_id=run_id, now=now)
                return "DUPLICATE", run_id
            if RunStatus(status).terminal:
                raise NoCorrelatedRunError(f"run {run_id} of this event's key has ended ({status})")
            uow.events.signal(run_id, topic, payload_json, now)
            self.intake.record(uow, arrival, "SIGNALLED", actor=actor, run_id=run_id, now=now)
        self.runtime.wake(run_id)
        return "SIGNALLED", run_id


def arrival_of(trigger: NatsTrigger, msg: Msg) -> Arrival:
    """The event a JetStream message carries."""
    info = msg.metadata
    stream = info.stream
    seq = info.sequence.stream
    headers = msg.headers or {}
    header = headers.get(MSG_ID_HEADER)
    event_id = header if header is not None and _ID.match(header) else f"{stream}:{seq}"
    meta: dict[str, Any] = {
        "subject": msg.subject[:255],
        "stream": stream,
        "sequence": seq,
        "delivered": info.num_delivered,
    }
    # The sender's W3C trace context (bounded): the run's start joins its trace.
    meta.update(trace_headers(headers))
    return Arrival(
        Channel.NATS,
        trigger.name,
        trigger.tenant,
        event_id,
        bytes(msg.data),
        meta,
    )


class TriggerRunner:
    """Consumes the triggers of one app in a background thread (its own asyncio loop):
    what a worker starts and stops with itself (:meth:`aevos.Aevos.worker`)."""

    def __init__(self, handler: Triggers, triggers: Sequence[NatsTrigger]) -> None:
        self.handler = handler
        self.triggers = list(triggers)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        # Messages fetched and not yet acknowledged, per trigger (the back-pressure gauge).
        self.in_hand: dict[str, int] = {t.name: 0 for t in self.triggers}
        # Set once every trigger's pull subscription is bound to its durable consumer.
        self.subscribed = threading.Event()
        self._bound: set[str] = set()
        self.handled: dict[str, int] = {t.name: 0 for t in self.triggers}

    def start(self) -> TriggerRunner:
        self._thread = threading.Thread(target=self._main, name="aevos-nats", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop pulling, let handlers finish and acknowledge what they hold, disconnect."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        self._ready.set()
        by_servers: dict[tuple[str, ...], list[NatsTrigger]] = {}
        for trigger in self.triggers:
            by_servers.setdefault(trigger.servers, []).append(trigger)
        await asyncio.gather(
            *(self._serve(servers, triggers) for servers, triggers in by_servers.items())
        )

    async def _serve(self, servers: tuple[str, ...], triggers: list[NatsTrigger]) -> None:
        import nats

        stopping = self._stopping
        assert stopping is not None
        nc = None
        while nc is None and not stopping.is_set():
            try:
                nc = await nats.connect(
                    list(servers),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    name=f"aevos:{self.handler.runtime.owner}",
                )
            except Exception as exc:
                log.warning("NATS at %s unreachable (%s); retrying", servers[0], type(exc).__name__)
                await _sleep_or_stop(stopping, 1.0)
        if nc is None:
            return
        try:
            js = nc.jetstream()
            await asyncio.gather(*(self._consume(js, trigger) for trigger in triggers))
        finally:
            try:
                await nc.drain()
            except Exception:  # closing a connection to a server that is gone
                await nc.close()

    async def _consume(self, js: Any, trigger: NatsTrigger) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        stopping = self._stopping
        assert stopping is not None
        psub = None
        while psub is None and not stopping.is_set():
            try:
                psub = await js.pull_subscribe(
                    trigger.subject,
                    durable=trigger.durable,
                    stream=trigger.stream,
                    config=ConsumerConfig(
                        durable_name=trigger.durable,
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_wait=trigger.ack_wait,
                        # Not max_pending: this bounds every worker together, and each
                        # worker already holds at most max_pending (the server's default).
                        filter_subject=trigger.subject,
                    ),
                )
            except Exception as exc:
                log.warning(
                    "NATS trigger %r: cannot consume stream %r (%s); retrying",
                    trigger.name,
                    trigger.stream,
                    type(exc).__name__,
                )
                await _sleep_or_stop(stopping, 1.0)
        if psub is None:
            return
        self._bound.add(trigger.name)
        if len(self._bound) == len(self.triggers):
            self.subscribed.set()
        queue: asyncio.Queue[list[Msg]] = asyncio.Queue()
        room = asyncio.Event()
        pool = ThreadPoolExecutor(trigger.concurrency, thread_name_prefix=f"aevos-{trigger.name}")
        handlers = [
            asyncio.create_task(self._handle_loop(trigger, queue, room, pool))
            for _ in range(trigger.concurrency)
        ]
        name = trigger.name
        try:
            while not stopping.is_set():
                free = trigger.max_pending - self.in_hand[name]
                if free <= 0:
                    # The queue is full: pull nothing until a handler frees a slot.
                    room.clear()
                    await _wait_either(room, stopping)
                    continue
                try:
                    # A pull waits for a whole batch until it expires: short, so that
                    # several workers sharing a trickle do not hold partial batches long.
                    msgs = await psub.fetch(min(trigger.batch, free), timeout=FETCH_WAIT)
                except NatsTimeout:
                    continue
                except Exception as exc:
                    # A server restarting, a connection being re-established: try again.
                    log.debug("NATS trigger %r: fetch failed (%s)", name, type(exc).__name__)
                    await _sleep_or_stop(stopping, 0.25)
                    continue
                if msgs:
                    self.in_hand[name] += len(msgs)
                    queue.put_nowait(msgs)
            # Stopping: what is in hand is handled and acknowledged before disconnecting.
            while self.in_hand[name] > 0:
                room.clear()
                await asyncio.wait_for(room.wait(), timeout=30)
        except TimeoutError:
            log.warning("NATS trigger %r: stopped with messages unacknowledged", name)
        finally:
            for task in handlers:
                task.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(Exception):  # the connection may be gone
                await psub.unsubscribe()

    async def _handle_loop(
        self,
        trigger: NatsTrigger,
        queue: asyncio.Queue[list[Msg]],
        room: asyncio.Event,
        pool: ThreadPoolExecutor,
    ) -> None:
        loop = asyncio.get_running_loop()
        handler = self.handler
        while True:
            msgs = await queue.get()
            try:
                arrivals = [arrival_of(trigger, msg) for msg in msgs]
                began = time.perf_counter()
                await loop.run_in_executor(pool, handler.handle_batch, trigger, arrivals)
                log.debug(
                    "NATS trigger %r: %d messages handled in %.3f s",
                    trigger.name,
                    len(msgs),
                    time.perf_counter() - began,
                )
                # Only now: the runs' start (or the dead letters) have committed.
                for msg in msgs:
                    await msg.ack()
                self.handled[trigger.name] += len(msgs)
            except AevosError as exc:
                log.warning(
                    "NATS trigger %r: %d messages left unacknowledged [%s] %s; they will be "
                    "delivered again",
                    trigger.name,
                    len(msgs),
                    exc.code,
                    exc.message,
                )
                for msg in msgs:
                    await _quietly(msg.nak(delay=1.0))
            except Exception as exc:
                log.warning(
                    "NATS trigger %r: %d messages not acknowledged (%s); they will be "
                    "delivered again",
                    trigger.name,
                    len(msgs),
                    type(exc).__name__,
                )
            finally:
                self.in_hand[trigger.name] -= len(msgs)
                room.set()


async def _quietly(awaitable: Any) -> None:
    # A nak that does not arrive is an ack_wait's redelivery later.
    with contextlib.suppress(Exception):
        await awaitable


async def _sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


async def _wait_either(room: asyncio.Event, stopping: asyncio.Event) -> None:
    waits = [asyncio.create_task(room.wait()), asyncio.create_task(stopping.wait())]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
