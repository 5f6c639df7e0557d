"""What the kernel tells a tracer, declared here so the kernel never imports one.

Tracing lives in :mod:`aevos.telemetry.tracing`, a layer above the kernel (it reads the
kernel's records and the gateway's call records to name spans). The kernel reaches it only
through :class:`Tracing`, set on the runtime by the app when tracing is configured and
None otherwise. That is the seam rather than OpenTelemetry API calls in the kernel itself
because with tracing off the kernel then pays one ``is None`` test per run and per
position: no context variable is touched, no no-op span is made, and importing the kernel
never imports OpenTelemetry (the kernel benchmark runs with tracing off).

Only live work is traced: a position replayed from the run's history made its span when it
ran, so a resumed run adds spans only for what it does now, under the same trace (the run's
start span's context is stored with the run, :func:`insert_traced`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..models.gateway import Governed
    from ..records.run import NewRun, RunInfo
    from ..storage import Store, UnitOfWork

# What a span attribute may hold (OpenTelemetry's AttributeValue, without the sequences).
Attribute = str | bool | int | float


class TraceSpan(Protocol):
    """A span the kernel may add attributes to (OpenTelemetry's ``Span`` is one)."""

    def set_attribute(self, key: str, value: Attribute) -> None: ...


class StartSpan(TraceSpan, Protocol):
    """A run's start span: its W3C trace context, to store with the run."""

    @property
    def traceparent(self) -> str: ...

    @property
    def tracestate(self) -> str | None: ...


class Tracing(Protocol):
    """A tracer as the kernel and the services around it use it."""

    def start(self, new: NewRun) -> AbstractContextManager[StartSpan]:
        """The span of a run's start, a child of the caller's current span (the ingress
        event's, a parent run's step, or none: a new trace)."""
        ...

    def execution(
        self, info: RunInfo, trace: tuple[str, str | None] | None
    ) -> AbstractContextManager[TraceSpan]:
        """The span of one execution of a run, a child of its stored start context."""
        ...

    def span(
        self, name: str, attributes: Mapping[str, Attribute]
    ) -> AbstractContextManager[TraceSpan]:
        """A span of one position of a run (a step, a decision, a task), current while the
        block runs; an exception escaping the block marks it failed."""
        ...

    def client(
        self, name: str, attributes: Mapping[str, Attribute]
    ) -> AbstractContextManager[TraceSpan]:
        """The span of a call to another system (a connector's), of kind CLIENT, a child of
        the current span (the step's); an exception escaping the block marks it failed."""
        ...

    def model_call(
        self,
        workflow: str,
        run_id: str,
        model: str,
        seq: int,
        input: Any,
        governed: Governed,
        started: float,
    ) -> None:
        """Spans of a governed model call (``ctx.predict``): the position's, and one per
        call the gateway made, with the GenAI semantic conventions' attributes."""
        ...

    def payload(self, workflow: str, value: Any) -> str | None:
        """``value`` redacted, as JSON for a span attribute, if the workflow's data policy
        lets payloads into traces; None otherwise (the default)."""
        ...

    def incoming(
        self, carrier: Mapping[str, str] | None, name: str, attributes: Mapping[str, Attribute]
    ) -> AbstractContextManager[TraceSpan]:
        """The span of an ingress event (a webhook delivery, an API call, a NATS message),
        a child of the W3C trace context in ``carrier`` (its headers) when there is one;
        runs started inside the block are its children."""
        ...

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        """Write the current trace context into ``carrier`` (outgoing headers)."""
        ...


# W3C trace context headers and the longest value the standard allows for each
# (traceparent is 55 characters; tracestate has at most 32 members).
TRACE_HEADERS = {"traceparent": 55, "tracestate": 512}


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context headers among ``headers`` (any case), lower-cased, for
    :meth:`Tracing.incoming`; a value longer than the standard allows is dropped, so what a
    sender puts there stays bounded."""
    found: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        limit = TRACE_HEADERS.get(name)
        if limit is not None and isinstance(value, str) and len(value) <= limit:
            found[name] = value
    return found


def insert_traced(
    tracing: Tracing,
    store: Store,
    new: NewRun,
    also: Callable[[UnitOfWork], object] | None,
) -> tuple[RunInfo, bool, tuple[str, str | None]]:
    """Create a run as ``store.insert_run`` does, its start span's trace context stored in
    the same transaction, so every execution of it continues the same trace. Returns the
    run, whether it was created, and that trace context."""
    with tracing.start(new) as started:

        def write(uow: UnitOfWork) -> None:
            if also is not None:
                also(uow)
            uow.traces.add(new.run_id, started.traceparent, started.tracestate)

        info, created = store.insert_run(new, also=write)
        started.set_attribute("aevos.run.created", created)
    return info, created, (started.traceparent, started.tracestate)


def stored_trace(store: Store, run_id: str) -> tuple[str, str | None] | None:
    """The trace context stored with a run, or None (started before tracing was on)."""
    with store.reading() as uow:
        return uow.traces.get(run_id)


__all__ = [
    "TRACE_HEADERS",
    "StartSpan",
    "TraceSpan",
    "Tracing",
    "insert_traced",
    "stored_trace",
    "trace_headers",
]
