"""Workflows: durable functions made of steps, started by key, resumed after any crash."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from . import codec
from .context import WorkflowContext
from .errors import DefinitionError

if TYPE_CHECKING:
    from .app import Aevos
    from .handle import RunHandle
    from .pii.datapolicy import DataPolicy

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StartOptions:
    """How one run is started (the operation's input; new fields arrive with defaults)."""

    queue: str | None = None
    idempotency_key: str | None = None
    run_id: str | None = None
    priority: int = 0
    tenant: str = "default"
    actor: str | None = None  # who started it, for the audit log (None: this process)
    # Replaces the workflow's data policy for this start (a webhook source's own).
    data_policy: DataPolicy | None = None


class Workflow(Generic[P, R]):
    """A decorated workflow.

    - ``wf.run(*args)`` runs it now in this process, durably, and returns its result;
    - ``wf.start(*args)`` enqueues it for a worker and returns a :class:`RunHandle`;
    - ``wf(ctx, *args)`` inside another workflow runs it as a durable child run;
    - ``wf.options(idempotency_key=..., queue=..., priority=...)`` sets start options.
    """

    def __init__(
        self,
        app: Aevos,
        func: Callable[Concatenate[WorkflowContext, P], R]
        | Callable[Concatenate[WorkflowContext, P], Awaitable[R]],
        name: str,
        queue: str,
        options: StartOptions | None = None,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.queue = queue
        self.is_async = inspect.iscoroutinefunction(func)
        self._options = options or StartOptions()
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())[1:]
        plain = all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            for p in params
        )
        # The exact count of a call that is valid without binding, or -1 when none is.
        self._positional = len(params) if plain else -1
        functools.update_wrapper(self, func)

    def options(
        self,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_id: str | None = None,
        tenant: str | None = None,
    ) -> Workflow[P, R]:
        """A copy of this workflow that starts runs with these options."""
        opts = replace(
            self._options,
            idempotency_key=idempotency_key or self._options.idempotency_key,
            queue=queue or self._options.queue,
            priority=self._options.priority if priority is None else priority,
            run_id=run_id or self._options.run_id,
            tenant=tenant or self._options.tenant,
        )
        if opts.queue is not None:
            self.app._queue_named(opts.queue)  # unknown queue names fail here, not in a worker
        return Workflow(self.app, self.func, self.name, self.queue, opts)

    def _encode_input(self, args: Any, kwargs: Any) -> str:
        # Plain positional calls with exactly the declared parameters need no binding
        # (the common case, and bind() is the costliest part of starting a run).
        if kwargs or len(args) != self._positional:
            try:
                # Wrong arity or unknown keyword: refuse before anything is recorded or run.
                self._signature.bind(None, *args, **kwargs)
            except TypeError as exc:
                raise DefinitionError(f"bad arguments for workflow {self.name!r}: {exc}") from None
        return codec.encode(
            {"args": list(args), "kwargs": kwargs}, f"input of workflow {self.name!r}"
        )

    def __call__(self, ctx: WorkflowContext, *args: P.args, **kwargs: P.kwargs) -> R:
        if not isinstance(ctx, WorkflowContext):
            raise DefinitionError(
                f"workflow {self.name!r} called directly: use {self.name}.run(...) to run it, "
                f"{self.name}.start(...) to enqueue it, or pass the parent's context to run it "
                "as a child workflow"
            )
        return cast(R, ctx.run_child(self, args, kwargs))

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run now, in this thread, durably; returns the result or raises the error.

        With an idempotency key that already started a run, returns (or waits for) that
        run's result instead of starting another.
        """
        return cast(R, self.app._run_inline(self, args, kwargs, self._options))

    async def run_async(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """``run`` for async workflows, from inside a running event loop."""
        return cast(
            R, await asyncio.to_thread(self.app._run_inline, self, args, kwargs, self._options)
        )

    def start(self, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]:
        """Enqueue a run for a worker; returns at once with a handle."""
        return self.app._enqueue(self, args, kwargs, self._options)


class WorkflowDecorator:
    """What ``@app.workflow(...)`` returns; overloads type async and plain functions."""

    def __init__(
        self, app: Aevos, name: str | None, queue: str, data_policy: DataPolicy | None = None
    ) -> None:
        self._app = app
        self._name = name
        self._queue = queue
        self._data_policy = data_policy

    @overload
    def __call__(
        self, func: Callable[Concatenate[WorkflowContext, P], Coroutine[Any, Any, R]]
    ) -> Workflow[P, R]: ...

    @overload
    def __call__(self, func: Callable[Concatenate[WorkflowContext, P], R]) -> Workflow[P, R]: ...

    def __call__(self, func: Callable[..., Any]) -> Workflow[Any, Any]:
        return self._app._register_workflow(func, self._name, self._queue, self._data_policy)
