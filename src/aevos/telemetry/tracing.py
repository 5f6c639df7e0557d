"""Tracing with OpenTelemetry: one trace per run, spans for what the run does live.

Configured by ``Aevos(tracing=TracingConfig(...))`` or, without that, by the standard
environment (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``):
an OTLP/HTTP exporter then sends the spans in batches. Without either, the app has no
tracer at all and the kernel skips every hook (``runtime.tracing is None``).

The spans of a run (names; every one carries ``aevos.run.id``)::

    aevos.webhook <source> | aevos.api start_run   the ingress event, a child of the
                                                   sender's ``traceparent`` if it sent one
      aevos.run.start <workflow>                   its context is stored with the run
        aevos.run <workflow>                       one per execution (a resumed run, on
                                                   any worker, adds one under the same start)
          aevos.step <name>                        a step (its attempts and retries inside)
          aevos.decide <policy>                    a policy decision (version, result, rule)
          aevos.predict <model>                    a governed model call (ctx.predict)
            <operation> <model>                    each call the gateway made (a cascade
                                                   makes several), GenAI conventions
          aevos.ask_human <queue>                  a human task created
          aevos.human_decision                     its outcome taken by the run

Each tracer has its own ``TracerProvider`` (no process-wide one is set), so one process
can hold several apps. Payloads are off by default; a workflow whose data policy says
``DataPolicy(trace_payloads=True)`` has its steps' outputs and its model calls' inputs and
labels attached, always redacted by the app's redactor first, and truncated.
Exception messages never go into spans (they may quote data): a failed span carries the
exception's type as ``error.type``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..kernel.tracing import trace_headers

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from ..kernel.tracing import Attribute
    from ..models.gateway import Governed
    from ..models.recorder import CallRecord
    from ..pii import Redactor
    from ..pii.datapolicy import DataPolicy
    from ..records.run import NewRun, RunInfo

__all__ = ["Tracer", "TracingConfig", "extract_context", "inject_context", "trace_headers"]

_PROPAGATOR = TraceContextTextMapPropagator()
# Flavors whose calls are chat completions; every other flavor's are predictions.
_CHAT_FLAVORS = frozenset({"openai"})


@dataclass(frozen=True)
class TracingConfig:
    """How an app traces (see the module doc).

    ``endpoint``: the OTLP/HTTP traces URL (``http://collector:4318/v1/traces``); None
    exports nowhere unless ``processors`` or ``provider`` say otherwise. ``headers`` go with
    every export (an API key). ``provider``: an SDK ``TracerProvider`` the application
    already runs, used as it is (aevos adds its exporter to it when ``endpoint`` is set,
    and never shuts it down). ``processors``: more span processors (a test's in-memory
    exporter). ``payload_limit``: the longest payload attribute, in characters.
    """

    endpoint: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    service_name: str = "aevos"
    provider: TracerProvider | None = None
    processors: Sequence[SpanProcessor] = ()
    payload_limit: int = 4096

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TracingConfig | None:
        """The configuration the standard OpenTelemetry variables ask for, or None.

        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as it is,
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets ``/v1/traces`` appended (as the specification
        says); ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off;
        ``OTEL_SERVICE_NAME`` names the service. Headers, timeout and compression are read
        from their own variables by the exporter.
        """
        env = os.environ if environ is None else environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
            return None
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not endpoint:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            if not base:
                return None
            endpoint = base.rstrip("/") + "/v1/traces"
        return cls(endpoint=endpoint, service_name=env.get("OTEL_SERVICE_NAME") or "aevos")


# -- carriers: W3C trace context in a dict of headers -----------------------------------------


def extract_context(headers: Mapping[str, str]) -> Context:
    """The trace context carried in ``headers`` (an empty context if none or malformed)."""
    return _PROPAGATOR.extract(trace_headers(headers))


def inject_context(
    headers: MutableMapping[str, str], context: Context | None = None
) -> MutableMapping[str, str]:
    """Write ``traceparent`` (and ``tracestate``) of ``context`` (default: the current
    span's) into ``headers``, for a message or request going out; returns ``headers``."""
    _PROPAGATOR.inject(headers, context=context)
    return headers


# -- the tracer -------------------------------------------------------------------------------


class _Started:
    """A run's start span with its context as W3C headers (to store with the run)."""

    def __init__(self, span: Span) -> None:
        self.span = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        self.traceparent = carrier["traceparent"]
        self.tracestate: str | None = carrier.get("tracestate") or None

    def set_attribute(self, key: str, value: Attribute) -> None:
        self.span.set_attribute(key, value)


class Tracer:
    """The app's tracer: the kernel's :class:`~aevos.kernel.tracing.Tracing`, on the
    OpenTelemetry SDK. ``data_policy_of`` and ``redactor`` decide and redact payloads."""

    def __init__(
        self,
        config: TracingConfig,
        *,
        data_policy_of: Callable[[str], DataPolicy],
        redactor: Callable[[], Redactor],
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        self.config = config
        self._data_policy_of = data_policy_of
        self._redactor = redactor
        self._owned = config.provider is None
        self.provider = config.provider or TracerProvider(
            resource=Resource.create({"service.name": config.service_name})
        )
        if config.endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            # None, not {}: the exporter then reads OTEL_EXPORTER_OTLP_(TRACES_)HEADERS.
            exporter = OTLPSpanExporter(
                endpoint=config.endpoint, headers=dict(config.headers) or None
            )
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        for processor in config.processors:
            self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("aevos")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every span ended so far."""
        return bool(self.provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Flush and stop the exporters of a provider this tracer made."""
        if self._owned:
            self.provider.shutdown()
        else:
            self.provider.force_flush()

    # -- spans ------------------------------------------------------------------------------

    @contextmanager
    def _span(
        self,
        name: str,
        attributes: Mapping[str, Attribute],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        context: Context | None = None,
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                # A failed step's original type, which StepFailedError names.
                original = getattr(exc, "error_type", None)
                code = getattr(exc, "code", None)
                _failed(
                    span,
                    original if isinstance(original, str) else _qualified(type(exc)),
                    code if isinstance(code, str) else None,
                )
                raise
            except BaseException as exc:
                # A run parking or cancelled unwinds through here: not an error of the span.
                span.set_attribute("aevos.interrupted", type(exc).__name__)
                raise

    @contextmanager
    def start(self, new: NewRun) -> Iterator[_Started]:
        attributes: dict[str, Attribute] = {
            "aevos.run.id": new.run_id,
            "aevos.workflow": new.workflow,
            "aevos.tenant": new.tenant,
            "aevos.queue": new.queue,
        }
        if new.parent_run_id is not None:
            attributes["aevos.run.parent_id"] = new.parent_run_id
        with self._span(
            f"aevos.run.start {new.workflow}", attributes, kind=SpanKind.PRODUCER
        ) as span:
            yield _Started(span)

    def execution(
        self, info: RunInfo, trace_context: tuple[str, str | None] | None
    ) -> AbstractContextManager[Span]:
        parent = None
        if trace_context is not None:
            traceparent, tracestate = trace_context
            headers = {"traceparent": traceparent}
            if tracestate:
                headers["tracestate"] = tracestate
            parent = _PROPAGATOR.extract(headers)
        return self._span(
            f"aevos.run {info.workflow}",
            {
                "aevos.run.id": info.run_id,
                "aevos.workflow": info.workflow,
                "aevos.tenant": info.tenant,
                "aevos.run.execution": info.executions,
                "aevos.code_version": info.code_version,
            },
            kind=SpanKind.CONSUMER,
            context=parent,
        )

    def span(self, name: str, attributes: Mapping[str, Attribute]) -> AbstractContextManager[Span]:
        return self._span(name, attributes)

    def client(
        self, name: str, attributes: Mapping[str, Attribute]
    ) -> AbstractContextManager[Span]:
        return self._span(name, attributes, kind=SpanKind.CLIENT)

    def incoming(
        self, carrier: Mapping[str, str] | None, name: str, attributes: Mapping[str, Attribute]
    ) -> AbstractContextManager[Span]:
        context = None if not carrier else extract_context(carrier)
        return self._span(name, attributes, kind=SpanKind.SERVER, context=context)

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        inject_context(carrier)

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
        end = time.time_ns()
        span = self._tracer.start_span(
            f"aevos.predict {model}",
            kind=SpanKind.INTERNAL,
            start_time=int(started * 1e9),
            attributes={
                "aevos.run.id": run_id,
                "aevos.workflow": workflow,
                "aevos.step.seq": seq,
                "aevos.model.name": model,
            },
        )
        result, error = governed.result, governed.error
        if result is not None:
            span.set_attribute("aevos.model.version", result.version)
            span.set_attribute("aevos.model.route", result.route)
            span.set_attribute("aevos.model.call_id", result.call_id)
            if result.prediction.confidence is not None:
                span.set_attribute("aevos.model.confidence", float(result.prediction.confidence))
        if error is not None:
            _failed(span, _qualified(type(error)), error.code)
        payload = self.payload(workflow, input)
        if payload is not None:
            span.set_attribute("aevos.model.input", payload)
            if result is not None:
                label = self.payload(workflow, result.prediction.label)
                if label is not None:
                    span.set_attribute("aevos.model.label", label)
        parent = trace.set_span_in_context(span)
        for record in governed.records:
            self._call_span(record, parent, end)
        span.end(end_time=end)

    def _call_span(self, record: CallRecord, parent: Context, end: int) -> None:
        flavor = record.flavor or "unknown"
        operation = "chat" if flavor in _CHAT_FLAVORS else "predict"
        attributes: dict[str, Attribute] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": flavor,
            "gen_ai.request.model": record.model,
            "aevos.model.ref": record.ref,
            "aevos.model.route": record.route,
            "aevos.model.call_id": record.call_id,
            "aevos.model.outcome": record.outcome,
        }
        if record.version is not None:
            attributes["aevos.model.version"] = record.version
            attributes["gen_ai.response.model"] = record.response_model or record.version_ref
        if record.tokens_in is not None:
            attributes["gen_ai.usage.input_tokens"] = record.tokens_in
        if record.tokens_out is not None:
            attributes["gen_ai.usage.output_tokens"] = record.tokens_out
        if record.confidence is not None:
            attributes["aevos.model.confidence"] = float(record.confidence)
        if record.cost is not None:
            attributes["aevos.model.cost"] = float(record.cost)
        span = self._tracer.start_span(
            f"{operation} {record.model}",
            context=parent,
            kind=SpanKind.CLIENT,
            # The gateway measured the call; the span shows it ending when its answer came.
            start_time=end - int(record.latency_ms * 1e6),
            attributes=attributes,
        )
        if record.outcome != "ok":
            span.set_attribute("error.type", record.error_type or record.outcome)
            span.set_status(Status(StatusCode.ERROR, record.outcome))
        span.end(end_time=end)

    # -- payloads ---------------------------------------------------------------------------

    def payload(self, workflow: str, value: Any) -> str | None:
        if not self._data_policy_of(workflow).trace_payloads:
            return None
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(value)
        # The text as a whole (keys included) goes through the redactor, whatever it holds.
        redacted = str(self._redactor().redact_value(text))
        limit = self.config.payload_limit
        return redacted if len(redacted) <= limit else redacted[:limit] + "..."


def _qualified(kind: type[BaseException]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _failed(span: Span, error_type: str, code: str | None = None) -> None:
    """Mark ``span`` failed by the exception's type (its message may quote data)."""
    span.set_attribute("error.type", error_type)
    if code is not None:
        span.set_attribute("aevos.error.code", code)
    span.set_status(Status(StatusCode.ERROR, code or error_type))
