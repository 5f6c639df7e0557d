"""Steps: the unit whose result is committed once and never re-run after it completed."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from .. import codec
from ..errors import DefinitionError, SerializationError, StepFailedError
from ..records.run import error_dict
from ..storage import StepRecord
from .context import WorkflowContext
from .journal import step_error
from .outbox import Published, checked, messages
from .retry import RetryPolicy
from .tracing import Attribute, TraceSpan, Tracing

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StepContext:
    """What a step body sees: where it runs and a stable key for its side effects.

    ``idempotency_key`` is the same on every attempt and every replay of this step of this
    run, so a connector that forwards it (an HTTP ``Idempotency-Key`` header, a unique
    column) turns at-least-once step execution into an exactly-once effect.
    """

    run_id: str
    workflow: str
    step: str
    seq: int
    attempt: int
    # This attempt's messages, written with the step's result (only a successful attempt's).
    published: list[Published] = field(default_factory=list, compare=False, repr=False)
    #: The runtime's tracer (None when tracing is off): connectors open their call spans
    #: with it, under the step's span.
    tracing: Tracing | None = field(default=None, compare=False, repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}/{self.seq}"

    def publish(self, subject: str, payload: Any = None) -> str:
        """Publish ``payload`` on ``subject`` through the outbox when this step succeeds:
        the message is written in the transaction that records the step's result, so a step
        that fails, or a run that crashes before that commit, publishes nothing, and a
        replay publishes nothing again. Returns the message's id (the downstream
        de-duplication key)."""
        self.published.append(checked(subject, payload))
        return f"{self.idempotency_key}/{len(self.published) - 1}"


class Step(Generic[P, R]):
    """A decorated step; call it from a workflow as ``step(ctx, *args, **kwargs)``."""

    def __init__(
        self,
        func: Callable[Concatenate[StepContext, P], R],
        name: str,
        retry: RetryPolicy,
        timeout: float | None,
        timeout_pool: Callable[[], ThreadPoolExecutor],
    ) -> None:
        self.func = func
        self.name = name
        self.retry = retry
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(func)
        self._pool = timeout_pool
        functools.update_wrapper(self, func)

    def __call__(self, ctx: WorkflowContext | StepContext, *args: P.args, **kwargs: P.kwargs) -> R:
        if isinstance(ctx, StepContext):
            # A step called from inside another step is a plain function call of that step.
            return self.func(ctx, *args, **kwargs)
        if not isinstance(ctx, WorkflowContext):
            raise DefinitionError(
                f"step {self.name!r} must be called from a workflow with the workflow's context "
                f"as its first argument, got {type(ctx).__name__}"
            )
        if self.is_async:
            return cast(R, self._call_async(ctx, args, kwargs))
        return self._call_sync(ctx, args, kwargs)

    # -- sync -------------------------------------------------------------------------------

    def _call_sync(self, ctx: WorkflowContext, args: Any, kwargs: Any) -> R:
        seq, recorded = ctx.journal.begin(self.name)
        if recorded is not None:
            return cast(R, ctx.journal.replay_value(recorded))
        if ctx.tracing is not None:
            with ctx.tracing.span(self._span_name, self._span_attributes(ctx, seq)) as span:
                value = self._run_sync(ctx, seq, args, kwargs)
                self._trace_output(ctx, ctx.tracing, span, value)
                return value
        return self._run_sync(ctx, seq, args, kwargs)

    def _run_sync(self, ctx: WorkflowContext, seq: int, args: Any, kwargs: Any) -> R:
        started = time.time()
        failures = 0
        while True:
            sctx = StepContext(
                ctx.run_id, ctx.workflow, self.name, seq, failures + 1, tracing=ctx.tracing
            )
            try:
                if self.timeout is None:
                    value = self.func(sctx, *args, **kwargs)
                else:
                    value = self._with_timeout(sctx, args, kwargs)
                break
            except Exception as exc:
                failures += 1
                if self.retry.should_retry(exc, failures):
                    ctx.pause(self.retry.delay(failures))
                    continue
                raise self._fail(ctx, seq, started, failures, exc) from exc
        return self._succeed(ctx, sctx, seq, started, failures + 1, value)

    def _with_timeout(self, sctx: StepContext, args: Any, kwargs: Any) -> R:
        # In the step's context, so the attempt's spans (a connector's) nest under the step's.
        context = contextvars.copy_context()
        call: Callable[[], R] = functools.partial(self.func, sctx, *args, **kwargs)
        future = self._pool().submit(context.run, call)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            # The attempt's thread cannot be killed; it finishes in the background and its
            # result is discarded. Steps with timeouts should be safe to abandon.
            raise TimeoutError(f"step attempt exceeded its {self.timeout}s timeout") from None

    # -- async ------------------------------------------------------------------------------

    async def _call_async(self, ctx: WorkflowContext, args: Any, kwargs: Any) -> R:
        seq, recorded = ctx.journal.begin(self.name)
        if recorded is not None:
            return cast(R, ctx.journal.replay_value(recorded))
        if ctx.tracing is not None:
            with ctx.tracing.span(self._span_name, self._span_attributes(ctx, seq)) as span:
                value = await self._run_async(ctx, seq, args, kwargs)
                self._trace_output(ctx, ctx.tracing, span, value)
                return value
        return await self._run_async(ctx, seq, args, kwargs)

    async def _run_async(self, ctx: WorkflowContext, seq: int, args: Any, kwargs: Any) -> R:
        started = time.time()
        failures = 0
        func = cast(Callable[..., Awaitable[R]], self.func)
        while True:
            sctx = StepContext(
                ctx.run_id, ctx.workflow, self.name, seq, failures + 1, tracing=ctx.tracing
            )
            try:
                if self.timeout is None:
                    value = await func(sctx, *args, **kwargs)
                else:
                    try:
                        value = await asyncio.wait_for(func(sctx, *args, **kwargs), self.timeout)
                    except TimeoutError:
                        raise TimeoutError(
                            f"step attempt exceeded its {self.timeout}s timeout"
                        ) from None
                break
            except Exception as exc:
                failures += 1
                if self.retry.should_retry(exc, failures):
                    await ctx.pause_async(self.retry.delay(failures))
                    continue
                raise self._fail(ctx, seq, started, failures, exc) from exc
        return self._succeed(ctx, sctx, seq, started, failures + 1, value)

    # -- tracing (only when the runtime has a tracer) ----------------------------------------

    @functools.cached_property
    def _span_name(self) -> str:
        return f"aevos.step {self.name}"

    def _span_attributes(self, ctx: WorkflowContext, seq: int) -> dict[str, Attribute]:
        return {
            "aevos.run.id": ctx.run_id,
            "aevos.workflow": ctx.workflow,
            "aevos.step.name": self.name,
            "aevos.step.seq": seq,
        }

    @staticmethod
    def _trace_output(ctx: WorkflowContext, tracing: Tracing, span: TraceSpan, value: Any) -> None:
        payload = tracing.payload(ctx.workflow, value)
        if payload is not None:
            span.set_attribute("aevos.step.output", payload)

    # -- recording --------------------------------------------------------------------------

    def _succeed(
        self,
        ctx: WorkflowContext,
        sctx: StepContext,
        seq: int,
        started: float,
        attempts: int,
        value: R,
    ) -> R:
        try:
            text = codec.encode(value, f"output of step {self.name!r}")
        except SerializationError as exc:
            # Deterministic: retrying cannot help, so it is recorded as the step's failure.
            raise self._fail(ctx, seq, started, attempts, exc) from None
        record = StepRecord(seq, self.name, "SUCCEEDED", text, None, attempts, started, time.time())
        if sctx.published:
            # Not deferred: the messages must be in the outbox (and so on their way) as soon
            # as the step's result is durable, in the same transaction.
            rows = messages(
                sctx.idempotency_key, ctx.tenant, ctx.run_id, sctx.published, numbered=True
            )
            ctx.journal.record(record, value, also=lambda uow: uow.outbox.add(rows))
        else:
            ctx.journal.defer(record, value)
        return value

    def _fail(
        self, ctx: WorkflowContext, seq: int, started: float, attempts: int, exc: Exception
    ) -> StepFailedError:
        error = error_dict(exc)
        error["attempts"] = attempts
        ctx.journal.record(
            StepRecord(seq, self.name, "FAILED", None, error, attempts, started, time.time())
        )
        return step_error(self.name, seq, error)
