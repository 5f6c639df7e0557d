"""Executing a run: creating or taking it over, replaying its history through the workflow
function, and recording how it ended. One per :class:`~aevos.kernel.runtime.Runtime`.

Every execution goes through :meth:`Executor._execute` (inline runs, child runs, runs a
worker claimed, runs taken over after their owner died). It holds the run in the process's
lease table for as long as it executes, so that no second thread of this process executes
it at the same time (the fence, which names the owner, cannot tell threads apart), and it
ends the run with one fenced commit, or parks it, or leaves it to whoever holds it now.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from .. import codec
from ..errors import AevosError, RunCancelledError, StorageUnavailableError
from ..records.queue import INLINE_QUEUE
from ..records.run import NewRun, RunInfo, StepInfo, error_dict
from ..records.status import RunStatus
from ..storage.outage import seconds
from .context import Host as ContextHost
from .context import WorkflowContext
from .handle import RunHandle, Runs, result_of
from .journal import Cancelled, Journal, Suspend
from .tracing import Tracing, stored_trace
from .workflow import StartOptions, Workflow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..pii.datapolicy import ProtectedInput
    from ..storage import UnitOfWork
    from .lease import Leases

log = logging.getLogger("aevos")


class Host(ContextHost, Runs, Protocol):
    """What an executor runs through (the kernel's runtime)."""

    owner: str
    lease_seconds: float
    leases: Leases

    def insert_run(
        self, new: NewRun, also: Callable[[UnitOfWork], object] | None = None
    ) -> tuple[RunInfo, bool]: ...

    def started_trace(self, run_id: str) -> tuple[str, str | None] | None: ...

    @property
    def workflows(self) -> Mapping[str, Workflow[Any, Any]]: ...

    @property
    def claimable_versions(self) -> frozenset[str] | None: ...

    def encode_or_reject(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> tuple[str, ProtectedInput]: ...

    def buffer_start(
        self,
        run_id: str,
        workflow: str,
        tenant: str,
        actor: str | None,
        input_json: str,
        parent_run_id: str | None = None,
        pii: dict[str, Any] | None = None,
    ) -> None: ...

    def forget_signals(self, run_id: str) -> None: ...


@dataclass
class Outcome:
    """How one execution of a run ended, as seen by the executor."""

    status: RunStatus | None  # None: parked or abandoned, the run continues elsewhere
    value: Any = None
    error: BaseException | None = None


class Executor:
    """Executes runs for one runtime: inline, as children, claimed by workers, taken over."""

    def __init__(self, runtime: Host) -> None:
        self.runtime = runtime

    def run_inline(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> Any:
        runtime = self.runtime
        input_json, protected = runtime.encode_or_reject(workflow, args, kwargs, opts)
        # The workflow receives its input as stored, on this execution as on any replay.
        args, kwargs = protected.args, protected.kwargs
        info, created = runtime.insert_run(
            NewRun(
                run_id=opts.run_id or uuid.uuid4().hex,
                workflow=workflow.name,
                queue=INLINE_QUEUE,
                input_json=input_json,
                code_version=runtime.code_version,
                status=RunStatus.RUNNING,
                tenant=opts.tenant,
                priority=opts.priority,
                idempotency_key=opts.idempotency_key,
                owner=runtime.owner,
                lease_until=time.time() + runtime.lease_seconds,
            )
        )
        if created:
            runtime.buffer_start(
                info.run_id,
                workflow.name,
                opts.tenant,
                opts.actor,
                input_json,
                pii=protected.summary(),
            )
            outcome = self._execute(info, workflow, args, kwargs, {}, can_park=False)
        else:
            outcome = self._continue(info, workflow, can_park=False)
        if outcome.status is RunStatus.SUCCEEDED:
            return outcome.value
        if outcome.error is not None:
            raise outcome.error
        return RunHandle(runtime, info.run_id).result()

    def execute_inline(
        self,
        workflow: Workflow[Any, Any],
        run_id: str,
        args: Any,
        kwargs: Any,
        input_json: str,
        *,
        tenant: str,
        parent_run_id: str,
        can_park: bool,
        raise_errors: bool,
        pii: dict[str, Any] | None = None,
    ) -> Outcome:
        """Create (or take over) run ``run_id`` and execute it in this thread (child runs)."""
        runtime = self.runtime
        info, created = runtime.insert_run(
            NewRun(
                run_id=run_id,
                workflow=workflow.name,
                queue=INLINE_QUEUE,
                input_json=input_json,
                code_version=runtime.code_version,
                status=RunStatus.RUNNING,
                tenant=tenant,
                parent_run_id=parent_run_id,
                owner=runtime.owner,
                lease_until=time.time() + runtime.lease_seconds,
            )
        )
        if created:
            runtime.buffer_start(
                run_id, workflow.name, tenant, None, input_json, parent_run_id, pii=pii
            )
            return self._execute(info, workflow, args, kwargs, {}, can_park=can_park)
        return self._continue(info, workflow, can_park=can_park)

    def _continue(self, info: RunInfo, workflow: Workflow[Any, Any], *, can_park: bool) -> Outcome:
        """An existing run: its result if finished, else take it over if nobody holds it."""
        if info.status.terminal:
            try:
                return Outcome(info.status, result_of(info))
            except AevosError as exc:
                return Outcome(info.status, error=exc)
        if self.runtime.leases.holds(info.run_id):
            return Outcome(None)  # another thread of this process executes it; wait on it
        runtime = self.runtime
        acquired = runtime.store.acquire(
            info.run_id, runtime.owner, runtime.lease_seconds, versions=runtime.claimable_versions
        )
        if acquired is None:
            # Someone else holds it, or (pinned) it is for a process of another code version;
            # callers wait on its status.
            return Outcome(None)
        return self._execute_recorded(acquired, workflow, can_park=can_park)

    def _execute_recorded(
        self, info: RunInfo, workflow: Workflow[Any, Any], *, can_park: bool
    ) -> Outcome:
        payload = info.input or {}
        # Hold the lease from here: loading a long history must not let it lapse.
        cancel = threading.Event()
        leases, store = self.runtime.leases, self.runtime.store
        if not leases.add(info.run_id, cancel, info.lease_until):
            return Outcome(None)  # another thread of this process executes it; wait on it
        try:
            history = store.load_steps(info.run_id)
        except ValueError as exc:
            leases.discard(info.run_id)
            # Replaying it can never succeed; failing it beats retrying every lease period.
            store.fail_corrupt(info.run_id, "corrupt_history", exc)
            return Outcome(RunStatus.FAILED, error=exc)
        except BaseException:
            leases.discard(info.run_id)
            raise
        return self._execute(
            info,
            workflow,
            payload.get("args", []),
            payload.get("kwargs", {}),
            history,
            can_park=can_park,
            cancel=cancel,
        )

    def execute_claimed(self, info: RunInfo) -> Outcome:
        """Entry point for workers: execute a run this app's owner has claimed."""
        workflow = self.runtime.workflows[info.workflow]
        return self._execute_recorded(info, workflow, can_park=True)

    def _execute(
        self,
        info: RunInfo,
        workflow: Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        history: dict[int, StepInfo],
        *,
        can_park: bool,
        cancel: threading.Event | None = None,
        traced: bool = False,
    ) -> Outcome:
        run_id = info.run_id
        runtime = self.runtime
        if runtime.tracing is not None and not traced:
            return self._execute_traced(
                runtime.tracing, info, workflow, args, kwargs, history, can_park, cancel
            )
        owner = runtime.owner
        if cancel is None:  # else _execute_recorded holds the run already
            cancel = threading.Event()
            if not runtime.leases.add(run_id, cancel):
                return Outcome(None)  # another thread of this process executes it
        store = runtime.store
        journal = Journal(
            store,
            lambda: runtime.services.audit,
            run_id,
            owner,
            history,
            cancel,
            runtime.code_version,
            info.code_version,
        )
        ctx = WorkflowContext(
            runtime,
            journal,
            workflow.name,
            can_park=can_park,
            executions=info.executions,
            tenant=info.tenant,
        )
        try:
            try:
                if workflow.is_async:
                    coroutine = cast(Coroutine[Any, Any, Any], workflow.func(ctx, *args, **kwargs))
                    value = asyncio.run(coroutine)
                else:
                    value = workflow.func(ctx, *args, **kwargs)
                if journal.fatal is not None:
                    raise journal.fatal
                output = codec.encode(value, f"output of workflow {workflow.name!r}")
            except Suspend as suspend:
                store.park(run_id, owner, suspend.wake_at)
                return Outcome(None)
            except Cancelled:
                return self._abandoned(run_id)
            except StorageUnavailableError:
                # Not the run's fault: it keeps its lease and is replayed when the database
                # answers again, by this process (a worker retries it) or, once the lease
                # lapses, by whichever executor reaches the database first.
                raise
            except Exception as exc:
                error = journal.fatal or exc
                if isinstance(error, StorageUnavailableError):
                    # The workflow caught the storage error (or wrapped it): still not its
                    # failure.
                    raise error from None
                if not store.finish_run(
                    run_id,
                    owner,
                    RunStatus.FAILED,
                    error=error_dict(error),
                    parent_run_id=info.parent_run_id,
                    step=journal.take_pending(),
                ):
                    return self._abandoned(run_id)
                return Outcome(RunStatus.FAILED, error=error)
            if not store.finish_run(
                run_id,
                owner,
                RunStatus.SUCCEEDED,
                output_json=output,
                parent_run_id=info.parent_run_id,
                step=journal.take_pending(),
            ):
                return self._abandoned(run_id)
            return Outcome(RunStatus.SUCCEEDED, value)
        finally:
            runtime.leases.discard(run_id)
            runtime.forget_signals(run_id)

    def _execute_traced(
        self,
        tracing: Tracing,
        info: RunInfo,
        workflow: Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        history: dict[int, StepInfo],
        can_park: bool,
        cancel: threading.Event | None,
    ) -> Outcome:
        """:meth:`_execute` inside the span of this execution, a child of the run's stored
        start context (one trace per run, whichever worker executes it)."""
        runtime = self.runtime
        context = runtime.started_trace(info.run_id) or stored_trace(runtime.store, info.run_id)
        with tracing.execution(info, context) as span:
            outcome = self._execute(
                info,
                workflow,
                args,
                kwargs,
                history,
                can_park=can_park,
                cancel=cancel,
                traced=True,
            )
            if outcome.status is None:  # parked, or left to whoever holds the run now
                span.set_attribute("aevos.run.suspended", True)
            else:
                span.set_attribute("aevos.run.status", outcome.status.value)
            return outcome

    def _abandoned(self, run_id: str) -> Outcome:
        status = self.runtime.store.run_status(run_id)
        if status is RunStatus.CANCELLED:
            return Outcome(status, error=RunCancelledError(run_id))
        # Taken over by another executor (our lease lapsed, or we were presumed dead): the
        # fence refused what this execution did since. Which of the two is said: a takeover
        # while the lease ran means this process was judged dead although it lived.
        overdue = self.runtime.leases.overdue(run_id)
        log.warning(
            "run %s is no longer this process's (taken over by another worker %s): "
            "what this execution did since was not recorded",
            run_id,
            "while its lease ran"
            if overdue is None
            else f"after its lease lapsed {seconds(overdue)} ago",
        )
        return Outcome(None)
