"""Spans of connector calls, in the run's trace.

Connectors sit below :mod:`aevos.telemetry`, so they reach the tracer through the kernel's
seam: :attr:`~aevos.kernel.step.StepContext.tracing`, the runtime's tracer or None. With
tracing off a call costs one ``is None`` test. A call's span is a CLIENT span under the
step's span, named ``<system> <operation>``, with what identifies the call (system,
operation, server, table, status) and never credentials, URLs' queries, statements or
payloads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..kernel.tracing import Attribute, TraceSpan

if TYPE_CHECKING:
    from ..kernel.step import StepContext


@contextmanager
def call_span(
    sctx: StepContext, system: str, operation: str, attributes: Mapping[str, Attribute | None]
) -> Iterator[TraceSpan | None]:
    """The span of one connector call when the step's run is traced (else None)."""
    tracing = getattr(sctx, "tracing", None)
    if tracing is None:
        yield None
        return
    found: dict[str, Attribute] = {
        "aevos.connector.system": system,
        "aevos.connector.operation": operation,
        "aevos.run.id": sctx.run_id,
        "aevos.step.name": sctx.step,
        "aevos.step.seq": sctx.seq,
        "aevos.step.attempt": sctx.attempt,
    }
    found.update({k: v for k, v in attributes.items() if v is not None})
    with tracing.client(f"{system} {operation}", found) as span:
        try:
            yield span
        except Exception:
            span.set_attribute("aevos.connector.status", "error")
            raise
        span.set_attribute("aevos.connector.status", "ok")
