"""The app's edge: how events come in (webhooks, NATS triggers, maildirs and watched
folders, their intake and dead letters), what goes out (the outbox and its relay), and the
schedules that start workflows on their own: the declarations and services
:class:`~aevos.Aevos` offers for them, apart from its core (kernel, models, people,
evolution) in :mod:`aevos.app`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DefinitionError
from ..kernel.runtime import as_data_policy

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..audit.rejections import RejectionBudget
    from ..connectors import Outbox, OutboxRelay
    from ..connectors.relay import Destination
    from ..events.files import FileTrigger, FileTriggers, FileWatcher
    from ..events.intake import Intake, Replayer
    from ..events.nats import NatsTrigger, Triggers
    from ..events.webhook import Ingress, Mapper, WebhookSource
    from ..identity import Identity
    from ..kernel.runtime import Runtime
    from ..kernel.workflow import Workflow
    from ..pii.datapolicy import DataPolicy
    from ..schedules import Schedule, Schedules
    from ..storage import Store
    from ..telemetry.tracing import Tracer

log = logging.getLogger("aevos")  # as aevos.app's own


class Integrations:
    """Mixed into :class:`~aevos.Aevos`, which holds the state these methods use."""

    if TYPE_CHECKING:
        # Set by Aevos.__init__ (attributes) or served by Aevos (properties).
        runtime: Runtime
        tracer: Tracer | None
        webhooks: dict[str, WebhookSource]
        nats_triggers: dict[str, NatsTrigger]
        file_triggers: dict[str, FileTrigger]
        webhook_refusals: RejectionBudget
        _relay: OutboxRelay | None
        _schedules: Schedules | None

        @property
        def store(self) -> Store: ...

        @property
        def audit(self) -> AuditLog: ...

        @property
        def identity(self) -> Identity: ...

    @property
    def schedules(self) -> Schedules:
        """Schedules declared with :meth:`schedule`: list, pause, resume, trigger, their
        ticks; workers tick them (:mod:`aevos.schedules`)."""
        if self._schedules is None:
            from ..schedules import Schedules

            self._schedules = Schedules(self.runtime, lambda: self.store, lambda: self.audit)
        return self._schedules

    def schedule(
        self,
        name: str,
        workflow: Workflow[Any, Any] | str,
        *,
        cron: str,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        catch_up: int = 1,
        tenant: str = "default",
        queue: str | None = None,
    ) -> Schedule:
        """Start ``workflow`` (a registered workflow or its name) with ``args``/``kwargs``
        on each tick of ``cron`` (five fields or an alias such as ``@daily``) read in time
        zone ``tz`` (an IANA name; daylight-saving changes as cron handles them), in
        ``tenant``, on ``queue`` (the workflow's by default).

        Each tick starts one run however many workers run (its idempotency key is the
        tick's time). When several ticks are due at once (no worker ran for a while), the
        newest ``catch_up`` start and the older ones are recorded as skipped. The schedule's
        state (paused, last tick) lives in the database: ``app.schedules`` and
        ``aevos schedules`` list, pause, resume and trigger it. Misuse (a bad expression,
        an unknown zone, arguments that do not fit the workflow) raises here.
        """
        target = workflow if isinstance(workflow, str) else workflow.name
        return self.schedules.declare(
            name,
            target,
            cron=cron,
            tz=tz,
            args=args,
            kwargs=kwargs,
            catch_up=catch_up,
            tenant=tenant,
            queue=queue,
        )

    @property
    def ingress(self) -> Ingress:
        """Webhook deliveries: received, authenticated, mapped to runs, recorded."""
        from ..events.webhook import Ingress

        return Ingress(
            self.runtime,
            self.webhooks,
            self.webhook_refusals,
            self.identity,
            self.audit,
            self.intake,
        )

    @property
    def intake(self) -> Intake:
        """Events of every channel and their dead letters: list, show, replay
        (:mod:`aevos.events.intake`)."""
        from ..events.intake import Intake

        return Intake(self.store, self.audit, self._replayers)

    def _replayers(self) -> dict[tuple[str, str], Replayer]:
        found: dict[tuple[str, str], Replayer] = {}
        if self.webhooks:
            ingress = self.ingress
            found.update({("webhook", name): ingress for name in self.webhooks})
        if self.nats_triggers:
            triggers = self.triggers
            found.update({("nats", name): triggers for name in self.nats_triggers})
        if self.file_triggers:
            files = self.file_events
            found.update({(t.channel.value, t.name): files for t in self.file_triggers.values()})
        return found

    @property
    def file_events(self) -> FileTriggers:
        """The handler of this app's maildir and folder triggers (:mod:`aevos.events.files`)."""
        from ..events.files import FileTriggers

        return FileTriggers(self.runtime, self.intake, self.file_triggers)

    def file_watcher(self) -> FileWatcher:
        """A watcher of this app's maildir and folder triggers (what workers run);
        ``scan_once()`` handles what is there now."""
        from ..events.files import FileWatcher

        return FileWatcher(self.file_events, list(self.file_triggers.values()))

    @property
    def triggers(self) -> Triggers:
        """The handler of this app's NATS JetStream triggers (:mod:`aevos.events.nats`)."""
        from ..events.nats import Triggers

        return Triggers(self.runtime, self.intake, self.nats_triggers)

    def _declaring(
        self,
        declared: Mapping[str, object],
        name: str,
        kind: str,
        queue: str | None,
        data_policy: DataPolicy | str | None,
    ) -> DataPolicy | None:
        """What every ingress declaration checks first: its name is new among its
        ``kind``, its queue is declared; and its data policy, resolved."""
        what = f"{kind} {name!r}"
        if name in declared:
            raise DefinitionError(f"{what} is declared twice")
        if queue is not None:
            self.runtime.queue_named(queue)
        return None if data_policy is None else as_data_policy(data_policy, what)

    def webhook(
        self,
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
        data_policy: DataPolicy | str | None = None,
    ) -> WebhookSource:
        """Declare a webhook source: each ``POST /v1/events/{name}`` starts a run of
        ``workflow`` in ``tenant`` with the keyword arguments ``map(event)`` returns,
        idempotent by the sender's event id.

        With ``secret`` (and ``previous_secret`` while rotating it), deliveries must be
        signed (HMAC-SHA256, ``X-Aevos-Signature``, within ``tolerance`` seconds, default
        300); without, they need a bearer token of ``tenant`` that may start runs. Bodies
        past ``max_body`` bytes (default 1 MiB) are refused. Past ``rejections_per_minute``
        rejected deliveries (default 60) a minute's further rejections are counted and
        recorded as one summary (:mod:`aevos.audit.rejections`). ``data_policy`` replaces the
        workflow's for the runs this source starts (:mod:`aevos.pii.datapolicy`). See
        :mod:`aevos.events.webhook`.
        """
        from ..events.webhook import WebhookSource

        policy = self._declaring(self.webhooks, name, "webhook source", queue, data_policy)
        source = WebhookSource.declare(
            name,
            workflow=workflow,
            tenant=tenant,
            secret=secret,
            previous_secret=previous_secret,
            map=map,
            queue=queue,
            tolerance=tolerance,
            max_body=max_body,
            rejections_per_minute=rejections_per_minute,
            data_policy=policy,
        )
        self.webhooks[name] = source
        return source

    def nats_trigger(
        self,
        name: str,
        *,
        stream: str,
        subject: str,
        workflow: str | None = None,
        signal: str | None = None,
        correlate: str | None = None,
        tenant: str = "default",
        key: str | None = None,
        map: Callable[[Any], Any] | None = None,
        queue: str | None = None,
        servers: Sequence[str] | None = None,
        max_pending: int = 64,
        batch: int = 16,
        concurrency: int = 4,
        ack_wait: float = 30.0,
        data_policy: DataPolicy | str | None = None,
    ) -> NatsTrigger:
        """Declare a NATS JetStream trigger, consumed by this app's workers through the
        durable consumer ``aevos-<name>`` on ``stream``, filtered by ``subject``.

        With ``workflow``, each message starts a run with the keyword arguments
        ``map(event)`` returns (the whole event as ``event`` without ``map``), idempotent by
        the ``key`` field (dotted path), else the ``Nats-Msg-Id`` header, else the stream
        sequence. With ``signal`` and ``correlate``, each message is a signal on topic
        ``signal`` (payload ``map(event)``) to the run whose idempotency key (else id) is
        the event's ``correlate`` field. At most ``max_pending`` messages are in hand at
        once, handled by ``concurrency`` threads; ``servers`` default to
        ``AEVOS_NATS_URL``. See :mod:`aevos.events.nats`.
        """
        from ..events.nats import NatsTrigger, default_servers

        policy = self._declaring(self.nats_triggers, name, "NATS trigger", queue, data_policy)
        trigger = NatsTrigger(
            name,
            stream,
            subject,
            tenant=tenant,
            workflow=workflow,
            signal=signal,
            correlate=correlate,
            key=key,
            map=map if map is not None else (lambda event: event if signal else {"event": event}),
            queue=queue,
            servers=tuple(servers) if servers else default_servers(),
            max_pending=max_pending,
            batch=batch,
            concurrency=concurrency,
            ack_wait=ack_wait,
            data_policy=policy,
        )
        self.nats_triggers[name] = trigger
        return trigger

    def maildir_trigger(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        workflow: str,
        tenant: str = "default",
        map: Callable[[Any], Any] | None = None,
        queue: str | None = None,
        max_bytes: int = 10 * 1024 * 1024,
        interval: float = 1.0,
        data_policy: DataPolicy | str | None = None,
    ) -> FileTrigger:
        """Declare an e-mail inbox trigger on the maildir at ``path``: each message
        delivered to its ``new/`` starts a run of ``workflow`` with the keyword arguments
        ``map(mail)`` returns (``mail`` as :func:`aevos.events.files.parse_mail` reads it;
        the whole mail as ``mail`` without ``map``), idempotent by its Message-ID, and is
        moved to ``cur/`` once the start committed. Watched every ``interval`` seconds by
        this app's workers. See :mod:`aevos.events.files`."""
        from ..events.intake import Channel

        return self._file_trigger(
            name,
            Channel.EMAIL,
            path,
            workflow,
            tenant,
            map,
            queue,
            max_bytes,
            interval,
            data_policy,
            "mail",
        )

    def folder_trigger(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        workflow: str,
        tenant: str = "default",
        map: Callable[[Any], Any] | None = None,
        queue: str | None = None,
        max_bytes: int = 10 * 1024 * 1024,
        interval: float = 1.0,
        data_policy: DataPolicy | str | None = None,
    ) -> FileTrigger:
        """Declare a watched folder: each new file in ``path`` (once its size is stable
        across two scans; dotfiles and ``*.tmp``/``*.part`` ignored) starts a run of
        ``workflow`` with ``map(file)`` (``name``, ``size``, ``sha256``, ``text``; the whole
        as ``file`` without ``map``), idempotent by its name and content, and is moved to
        ``done/`` (``failed/`` when dead-lettered) once that committed. See
        :mod:`aevos.events.files`."""
        from ..events.intake import Channel

        return self._file_trigger(
            name,
            Channel.FOLDER,
            path,
            workflow,
            tenant,
            map,
            queue,
            max_bytes,
            interval,
            data_policy,
            "file",
        )

    def _file_trigger(
        self,
        name: str,
        channel: Any,
        path: str | os.PathLike[str],
        workflow: str,
        tenant: str,
        map: Callable[[Any], Any] | None,
        queue: str | None,
        max_bytes: int,
        interval: float,
        data_policy: DataPolicy | str | None,
        arg: str,
    ) -> FileTrigger:
        from ..events.files import FileTrigger

        policy = self._declaring(
            self.file_triggers, name, f"{channel.value} trigger", queue, data_policy
        )
        trigger = FileTrigger(
            name,
            channel,
            Path(os.fspath(path)).absolute(),
            workflow,
            tenant=tenant,
            map=map if map is not None else (lambda event: {arg: event}),
            queue=queue,
            max_bytes=max_bytes,
            interval=interval,
            data_policy=policy,
        )
        self.file_triggers[name] = trigger
        return trigger

    def outbox_relay(self, destinations: Sequence[Destination], **options: Any) -> OutboxRelay:
        """Send what runs publish (``ctx.publish``) to ``destinations`` (NATS JetStream,
        signed webhooks; the first whose subject pattern matches): this app's workers then
        relay the outbox between claims. ``options`` go to
        :class:`~aevos.connectors.OutboxRelay` (batch, lease, retry); messages given up are
        audited (``outbox.dead``) in this app's audit log."""
        from ..connectors import OutboxRelay

        if self._relay is not None:
            self._relay.close()
        options.setdefault("audit", self.audit)
        options.setdefault("trace_context", self.tracer is not None)
        self._relay = OutboxRelay(self.store, destinations, **options)
        return self._relay

    @property
    def outbox(self) -> Outbox:
        """The outbox: what runs published, its state, DEAD messages sent again."""
        from ..connectors import Outbox

        return Outbox(self.store)

    @property
    def relay(self) -> OutboxRelay | None:
        """The outbox relay :meth:`outbox_relay` configured, if any."""
        return self._relay

    def _relay_outbox(self) -> None:
        # Only an app given destinations relays; messages wait in the outbox meanwhile.
        if self._relay is not None:
            report = self._relay.run_once()
            if report.sent or report.dead:
                log.debug("outbox: %d sent, %d dead", report.sent, report.dead)

    def _tick_schedules(self) -> None:
        # Only an app that declared schedules has built the service.
        if self._schedules is not None:
            for record in self._schedules.tick():
                log.debug("schedule %s: tick %s %s", record.schedule, record.tick_at, record.status)
