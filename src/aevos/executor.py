"""Executing a run: creating or taking it over, replaying its history through the workflow
function, and recording how it ended. A mixin of :class:`~aevos.app.Aevos`.

Every execution goes through :meth:`Executor._execute` (inline runs, child runs, runs a
worker claimed, runs taken over after their owner died). It holds the run in the process's
lease table for as long as it executes, so that no second thread of this process executes
it at the same time (the fence, which names the owner, cannot tell threads apart), and it
ends the run with one fenced commit, or parks it, or leaves it to whoever holds it now.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import codec
from .context import Cancelled, Suspend, WorkflowContext
from .errors import AevosError, RunCancelledError, StorageUnavailableError
from .handle import RunHandle, result_of
from .queue import INLINE_QUEUE
from .run import NewRun, RunInfo, StepInfo
from .status import RunStatus
from .step import error_dict
from .workflow import StartOptions, Workflow

if TYPE_CHECKING:
    from .app import Aevos
    from .lease import Leases
    from .pii.datapolicy import ProtectedInput
    from .storage import Store


@dataclass
class Outcome:
    """How one execution of a run ended, as seen by the executor."""

    status: RunStatus | None  # None: parked or abandoned, the run continues elsewhere
    value: Any = None
    error: BaseException | None = None


class Executor:
    if TYPE_CHECKING:
        owner: str
        lease_seconds: float
        workflows: dict[str, Workflow[Any, Any]]
        _leases: Leases
        _signal_events: dict[str, threading.Event]

        @property
        def store(self) -> Store: ...

        @property
        def code_version(self) -> str: ...

        def _encode_or_reject(
            self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
        ) -> tuple[str, ProtectedInput]: ...

        def _buffer_start(
            self,
            run_id: str,
            workflow: str,
            tenant: str,
            actor: str | None,
            input_json: str,
            parent_run_id: str | None = None,
            pii: dict[str, Any] | None = None,
        ) -> None: ...

    def _run_inline(
        self, workflow: Workflow[Any, Any], args: Any, kwargs: Any, opts: StartOptions
    ) -> Any:
        input_json, protected = self._encode_or_reject(workflow, args, kwargs, opts)
        # The workflow receives its input as stored, on this execution as on any replay.
        args, kwargs = protected.args, protected.kwargs
        info, created = self.store.insert_run(
            NewRun(
                run_id=opts.run_id or uuid.uuid4().hex,
                workflow=workflow.name,
                queue=INLINE_QUEUE,
                input_json=input_json,
                code_version=self.code_version,
                status=RunStatus.RUNNING,
                tenant=opts.tenant,
                priority=opts.priority,
                idempotency_key=opts.idempotency_key,
                owner=self.owner,
                lease_until=time.time() + self.lease_seconds,
            )
        )
        if created:
            self._buffer_start(
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
        return RunHandle(cast("Aevos", self), info.run_id).result()

    def _execute_inline(
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
        info, created = self.store.insert_run(
            NewRun(
                run_id=run_id,
                workflow=workflow.name,
                queue=INLINE_QUEUE,
                input_json=input_json,
                code_version=self.code_version,
                status=RunStatus.RUNNING,
                tenant=tenant,
                parent_run_id=parent_run_id,
                owner=self.owner,
                lease_until=time.time() + self.lease_seconds,
            )
        )
        if created:
            self._buffer_start(
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
        if self._leases.holds(info.run_id):
            return Outcome(None)  # another thread of this process executes it; wait on it
        acquired = self.store.acquire(info.run_id, self.owner, self.lease_seconds)
        if acquired is None:
            return Outcome(None)  # someone else holds it; callers wait on its status
        return self._execute_recorded(acquired, workflow, can_park=can_park)

    def _execute_recorded(
        self, info: RunInfo, workflow: Workflow[Any, Any], *, can_park: bool
    ) -> Outcome:
        payload = info.input or {}
        # Hold the lease from here: loading a long history must not let it lapse.
        cancel = threading.Event()
        if not self._leases.add(info.run_id, cancel):
            return Outcome(None)  # another thread of this process executes it; wait on it
        try:
            history = self.store.load_steps(info.run_id)
        except ValueError as exc:
            self._leases.discard(info.run_id)
            # Replaying it can never succeed; failing it beats retrying every lease period.
            self.store.fail_corrupt(info.run_id, "corrupt_history", exc)
            return Outcome(RunStatus.FAILED, error=exc)
        except BaseException:
            self._leases.discard(info.run_id)
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

    def _execute_claimed(self, info: RunInfo) -> Outcome:
        """Entry point for workers: execute a run this app's owner has claimed."""
        workflow = self.workflows[info.workflow]
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
    ) -> Outcome:
        run_id = info.run_id
        if cancel is None:  # else _execute_recorded holds the run already
            cancel = threading.Event()
            if not self._leases.add(run_id, cancel):
                return Outcome(None)  # another thread of this process executes it
        ctx = WorkflowContext(
            cast("Aevos", self),
            run_id,
            workflow.name,
            self.owner,
            self.code_version,
            info.code_version,
            history,
            can_park,
            cancel,
            info.executions,
            info.tenant,
        )
        store = self.store
        try:
            try:
                if workflow.is_async:
                    coroutine = cast(Coroutine[Any, Any, Any], workflow.func(ctx, *args, **kwargs))
                    value = asyncio.run(coroutine)
                else:
                    value = workflow.func(ctx, *args, **kwargs)
                if ctx.fatal is not None:
                    raise ctx.fatal
                output = codec.encode(value, f"output of workflow {workflow.name!r}")
            except Suspend as suspend:
                store.park(run_id, self.owner, suspend.wake_at)
                return Outcome(None)
            except Cancelled:
                return self._abandoned(run_id)
            except StorageUnavailableError:
                # Not the run's fault: it keeps its lease, which lapses, and it is replayed
                # by whichever executor reaches the database next.
                raise
            except Exception as exc:
                error = ctx.fatal or exc
                if not store.finish_run(
                    run_id,
                    self.owner,
                    RunStatus.FAILED,
                    error=error_dict(error),
                    parent_run_id=info.parent_run_id,
                    step=ctx.take_pending(),
                ):
                    return self._abandoned(run_id)
                return Outcome(RunStatus.FAILED, error=error)
            if not store.finish_run(
                run_id,
                self.owner,
                RunStatus.SUCCEEDED,
                output_json=output,
                parent_run_id=info.parent_run_id,
                step=ctx.take_pending(),
            ):
                return self._abandoned(run_id)
            return Outcome(RunStatus.SUCCEEDED, value)
        finally:
            self._leases.discard(run_id)
            self._signal_events.pop(run_id, None)

    def _abandoned(self, run_id: str) -> Outcome:
        status = self.store.run_status(run_id)
        if status is RunStatus.CANCELLED:
            return Outcome(status, error=RunCancelledError(run_id))
        return Outcome(None)  # taken over by another executor after our lease lapsed
