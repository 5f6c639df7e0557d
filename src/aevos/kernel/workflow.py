"""Workflows: durable functions made of steps, started by key, resumed after any crash."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from .. import codec
from ..errors import DefinitionError
from .arguments import check_arguments
from .context import WorkflowContext

if TYPE_CHECKING:
    from ..pii.datapolicy import DataPolicy
    from ..records.queue import Queue
    from .handle import RunHandle

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

    def __post_init__(self) -> None:
        # Checked here, where every start's options are made (wf.options, the API, the CLI,
        # webhooks), so that a bad one is a precise error, not a database error at insert.
        for name in ("queue", "idempotency_key", "run_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
                got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
                raise DefinitionError(
                    f"start option {name} must be a string of 1-200 characters, got {got}"
                )
        # bool is an int, but priority=True is a mistake; the column is a 32-bit integer.
        priority = self.priority
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not -(2**31) <= priority < 2**31
        ):
            raise DefinitionError(
                f"start option priority must be an integer from -2**31 to 2**31-1, got {priority!r}"
            )
        if self.tenant != "default":
            from ..identity import check_tenant  # governance loads on first use, not on import

            if not isinstance(self.tenant, str):
                raise DefinitionError(
                    f"start option tenant must be a string, got {type(self.tenant).__name__}"
                )
            check_tenant(self.tenant)


class Host(Protocol):
    """What workflows are registered with and run through (the kernel's runtime)."""

    def queue_named(self, name: str) -> Queue: ...

    def register_workflow(
        self,
        func: Callable[..., Any],
        name: str | None,
        queue: str,
        data_policy: DataPolicy | None = None,
    ) -> Workflow[Any, Any]: ...

    def run_inline(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> Any: ...

    def enqueue(
        self, workflow: Workflow[Any, R], args: Any, kwargs: Any, opts: StartOptions
    ) -> RunHandle[R]: ...


class Workflow(Generic[P, R]):
    """A decorated workflow.

    - ``wf.run(*args)`` runs it now in this process, durably, and returns its result;
    - ``wf.start(*args)`` enqueues it for a worker and returns a :class:`RunHandle`;
    - ``wf(ctx, *args)`` inside another workflow runs it as a durable child run;
    - ``wf.options(idempotency_key=..., queue=..., priority=..., tenant=..., run_id=...)``
      returns a copy that starts runs with those options.

    Every argument of ``run``, ``start`` and a child call, keywords included, is the
    workflow's (checked against its signature before the run exists); start options are
    given only through ``options``.
    """

    def __init__(
        self,
        runtime: Host,
        func: Callable[Concatenate[WorkflowContext, P], R]
        | Callable[Concatenate[WorkflowContext, P], Awaitable[R]],
        name: str,
        queue: str,
        options: StartOptions | None = None,
    ) -> None:
        self._runtime = runtime
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
        """A copy of this workflow that starts runs with these options (None keeps the
        current one); the only way to give start options, so that none of them can be taken
        for one of the workflow's arguments, or the reverse.
        """
        current = self._options
        opts = replace(
            current,
            idempotency_key=current.idempotency_key if idempotency_key is None else idempotency_key,
            queue=current.queue if queue is None else queue,
            priority=current.priority if priority is None else priority,
            run_id=current.run_id if run_id is None else run_id,
            tenant=current.tenant if tenant is None else tenant,
        )
        if opts.queue is not None:
            self._runtime.queue_named(opts.queue)  # unknown queue names fail here, not in a worker
        return Workflow(self._runtime, self.func, self.name, self.queue, opts)

    @property
    def signature(self) -> inspect.Signature:
        """The workflow function's signature (its first parameter takes the context)."""
        return self._signature

    def encode_input(self, args: Any, kwargs: Any) -> str:
        """The run's recorded input, checked against the signature (DefinitionError)."""
        # Plain positional calls with exactly the declared parameters need no binding
        # (the common case, and bind() is the costliest part of starting a run).
        if kwargs or len(args) != self._positional:
            # Wrong arity or unknown keyword: refuse before anything is recorded or run.
            check_arguments(self._signature, self.name, args, kwargs)
        return codec.encode(
            {"args": list(args), "kwargs": kwargs}, f"input of workflow {self.name!r}"
        )

    def __call__(self, ctx: WorkflowContext, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not isinstance(ctx, WorkflowContext):
            raise DefinitionError(
                f"workflow {self.name!r} called directly: use {self.name}.run(...) to run it, "
                f"{self.name}.start(...) to enqueue it, or pass the parent's context to run it "
                "as a child workflow"
            )
        self.child_options(enqueued=False)
        return cast(R, ctx.run_child(self, args, kwargs))

    def child_options(self, *, enqueued: bool) -> StartOptions:
        """The options of a child run of this copy, refusing those a child cannot take: it
        has its parent's tenant and an id derived from its parent's position, and an inline
        child runs in the parent's thread (so it has no queue or priority either)."""
        opts = self._options
        refused = [
            name
            for name, given in (
                ("idempotency_key", opts.idempotency_key is not None),
                ("run_id", opts.run_id is not None),
                ("tenant", opts.tenant != StartOptions.tenant),
                ("queue", not enqueued and opts.queue is not None),
                ("priority", not enqueued and opts.priority != StartOptions.priority),
            )
            if given
        ]
        if refused:
            how = (
                "an enqueued child takes only queue and priority"
                if enqueued
                else "an inline child runs in its parent's thread; to give it a queue or a "
                "priority, enqueue it with ctx.start_child(wf.options(...), ...)"
            )
            raise DefinitionError(
                f"child run of workflow {self.name!r} cannot take start option(s) "
                f"{', '.join(refused)}: a child has its parent's tenant and an id derived "
                f"from the parent's position, and {how}"
            )
        return opts

    def run(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run now, in this thread, durably; returns the result or raises the error.

        With an idempotency key that already started a run, returns (or waits for) that
        run's result instead of starting another.
        """
        return cast(R, self._runtime.run_inline(self, args, kwargs, self._options))

    async def run_async(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``run`` for async workflows, from inside a running event loop."""
        return cast(
            R,
            await asyncio.to_thread(self._runtime.run_inline, self, args, kwargs, self._options),
        )

    def start(self, /, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]:
        """Enqueue a run for a worker; returns at once with a handle."""
        return self._runtime.enqueue(self, args, kwargs, self._options)


class WorkflowDecorator:
    """What ``@app.workflow(...)`` returns; overloads type async and plain functions."""

    def __init__(
        self, runtime: Host, name: str | None, queue: str, data_policy: DataPolicy | None = None
    ) -> None:
        self._runtime = runtime
        self._name = name
        self._queue = queue
        self._data_policy = data_policy
        self._data_policy = data_policy

    @overload
    def __call__(
        self, func: Callable[Concatenate[WorkflowContext, P], Coroutine[Any, Any, R]]
    ) -> Workflow[P, R]: ...

    @overload
    def __call__(self, func: Callable[Concatenate[WorkflowContext, P], R]) -> Workflow[P, R]: ...

    def __call__(self, func: Callable[..., Any]) -> Workflow[Any, Any]:
        return self._runtime.register_workflow(func, self._name, self._queue, self._data_policy)
