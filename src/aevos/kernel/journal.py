"""The journal of one run's execution: what the run did at each numbered position.

This is the kernel's one durable-record primitive. Steps, policy decisions, model calls,
human tasks, signals, child runs and the kernel's own recorded values (time, UUIDs, sleeps)
are all built on it, the same way:

1. :meth:`Journal.begin` takes the next position. On replay it returns what was recorded
   there (a different name there means the code changed incompatibly:
   :class:`~aevos.errors.ReplayMismatchError`, remembered so the workflow cannot carry on);
   live, it checks the run was not cancelled.
2. :meth:`Journal.record` commits the position's result, fenced by this executor's lease,
   in one transaction with whatever must commit with it (audit events, a task row). A lease
   lost meanwhile (the run was cancelled, or taken over by another executor after ours
   lapsed) becomes :class:`Cancelled`: the result is not ours to record.
3. The result is remembered, so the rest of this execution replays it without a query.

A step's success may instead be deferred (:meth:`Journal.defer`) to the next commit, which
saves the commit of a run's last step (it goes with the run's completion).

Version markers (:meth:`Journal.patch`, behind ``ctx.patched`` and ``ctx.deprecate_patch``)
are positions too, named ``aevos.patch:<change id>``: one records that this run took the new
path of a code change at that point. A marker the code does not ask about where it stands is
stepped over, so a patch can be retired from the code once no run needs its old path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import (
    ReplayMismatchError,
    StepFailedError,
    StepTimeoutError,
    StorageUnavailableError,
)
from ..records.run import StepInfo
from ..storage import LeaseLost, StepRecord

#: The name of a version marker's position, followed by its change id.
PATCH_PREFIX = "aevos.patch:"

if TYPE_CHECKING:
    import threading

    from ..audit import AuditEvent, AuditLog
    from ..storage import Store, UnitOfWork


class Suspend(BaseException):
    """Unwinds a workflow that parks until ``wake_at``.

    A BaseException so that a workflow's ``except Exception`` cannot swallow it.
    """

    def __init__(self, wake_at: float) -> None:
        super().__init__(wake_at)
        self.wake_at = wake_at


class Cancelled(BaseException):
    """Unwinds a workflow whose run was cancelled or taken over by another executor."""


class Journal:
    """The positions of one execution of one run, recorded and replayed."""

    def __init__(
        self,
        store: Store,
        audit: Callable[[], AuditLog],
        run_id: str,
        owner: str,
        history: dict[int, StepInfo],
        cancel: threading.Event,
        code_version: str,
        recorded_version: str,
    ) -> None:
        self.store = store
        self._audit = audit  # built on first use: a run that audits nothing never opens it
        self.run_id = run_id
        self.owner = owner
        self.cancel = cancel
        self._history = history
        self._code_version = code_version
        self._recorded_version = recorded_version
        self._seq = -1
        self._pending: StepRecord | None = None
        self._patches: dict[str, bool] = {}
        self.fatal: BaseException | None = None

    @property
    def seq(self) -> int:
        """The position taken last (-1 before the first)."""
        return self._seq

    # -- taking a position ----------------------------------------------------------------------

    def begin(self, name: str) -> tuple[int, StepInfo | None]:
        """Take the next position for ``name``: its recorded result on replay, else None."""
        if isinstance(self.fatal, StorageUnavailableError):
            # A workflow that caught the storage error goes no further: the position it
            # could not record would be a hole in its history.
            raise self.fatal
        if self._pending is not None:
            # The previous step's result becomes durable before anything else can happen.
            self.flush()
        seq = self._seq + 1
        recorded = self._history.get(seq)
        if (
            recorded is not None
            and recorded.name != name
            and recorded.name.startswith(PATCH_PREFIX)
        ):
            seq, recorded = self._next(name)
        self._seq = seq
        if recorded is not None:
            if recorded.name != name:
                error = ReplayMismatchError(
                    self.run_id,
                    seq,
                    recorded.name,
                    name,
                    self._recorded_version,
                    self._code_version,
                )
                # Remembered so that a workflow catching it cannot carry on regardless.
                self.fatal = error
                raise error
            return seq, recorded
        if self.cancel.is_set():
            raise Cancelled()
        return seq, None

    def _next(self, name: str) -> tuple[int, StepInfo | None]:
        """The next position for ``name`` and what is recorded there, stepping over version
        markers of changes the code does not ask about at this point (a retired patch)."""
        seq = self._seq + 1
        recorded = self._history.get(seq)
        while (
            recorded is not None
            and recorded.name != name
            and recorded.name.startswith(PATCH_PREFIX)
        ):
            seq += 1
            recorded = self._history.get(seq)
        return seq, recorded

    def patch(self, change_id: str) -> bool:
        """Whether this run takes the new path of code change ``change_id`` here.

        True, with a marker recorded at the next position, when the run reaches this point on
        this code (nothing is recorded there yet), or when its history holds the marker
        there; False when its history holds something else there: the run passed this point
        on code from before the change, and must replay the old path. Decided once per
        change and execution, as Temporal's ``patched`` is: later calls return the same.
        """
        known = self._patches.get(change_id)
        if known is not None:
            return known
        name = PATCH_PREFIX + change_id
        _, recorded = self._next(name)
        if recorded is not None and recorded.name != name:
            self._patches[change_id] = False
            return False
        seq, recorded = self.begin(name)
        if recorded is None:
            now = time.time()
            # Deferred like a step's result: only the workflow's own code runs before the
            # next durable operation, which commits it first, so a crash before then leaves
            # nothing of the new path behind and the replay decides the same again.
            self.defer(StepRecord(seq, name, "SUCCEEDED", "true", None, 1, now, now), True)
        self._patches[change_id] = True
        return True

    @staticmethod
    def replay_value(recorded: StepInfo) -> Any:
        """A recorded step's value, or its failure raised as the workflow saw it live."""
        if recorded.status == "FAILED":
            raise step_error(recorded.name, recorded.seq, recorded.error or {})
        return recorded.output

    # -- recording a result ---------------------------------------------------------------------

    def record(
        self,
        record: StepRecord,
        output: Any = None,
        *,
        events: Sequence[AuditEvent] = (),
        also: Callable[[UnitOfWork], object] | None = None,
    ) -> StepInfo:
        """Commit ``record`` now, with ``events`` appended to the audit log and ``also``
        run in the same transaction; remember ``output`` as its value, and return it."""
        with self.fenced():
            if events or also is not None:
                audit = self._audit() if events else None

                def write(uow: UnitOfWork) -> None:
                    if also is not None:
                        also(uow)
                    if audit is not None:
                        audit.append_many(list(events), uow=uow)

                self.store.record_step_with(self.run_id, self.owner, record, write)
            else:
                self.store.record_step(self.run_id, self.owner, record)
        return self.remember(record, output)

    def defer(self, record: StepRecord, output: Any) -> None:
        """Record a step result, committed before the next durable operation begins or in the
        same transaction as the run's completion, whichever comes first.

        Between a step's return and that point the workflow only runs its own deterministic
        code, so nothing observable happens in between; for the last step of a run this saves
        one commit. A crash in that window re-runs the step, as a crash just before its
        commit would.
        """
        self._pending = record
        self.remember(record, output)

    def flush(self) -> None:
        """Commit the deferred step result, if there is one."""
        record, self._pending = self._pending, None
        if record is not None:
            with self.fenced():
                self.store.record_step(self.run_id, self.owner, record)

    def take_pending(self) -> StepRecord | None:
        """The deferred step result, for the executor to commit with the run's completion."""
        record, self._pending = self._pending, None
        return record

    def remember(self, record: StepRecord, output: Any) -> StepInfo:
        """Keep a committed result as this execution's view of its position."""
        info = StepInfo(
            self.run_id,
            record.seq,
            record.name,
            record.status,
            output,
            record.error,
            record.attempts,
            record.started_at,
            record.finished_at,
        )
        self._history[record.seq] = info
        return info

    @property
    def audit(self) -> AuditLog:
        """The audit log, for fenced writes that audit what they find (a task's expiry)."""
        return self._audit()

    @contextmanager
    def fenced(self) -> Iterator[None]:
        """A fenced write of this run: a lost lease becomes :class:`Cancelled`; storage that
        cannot be reached is remembered, so that a workflow catching the error cannot carry
        on (and end the run) past a position it never recorded."""
        try:
            yield
        except LeaseLost:
            raise Cancelled() from None
        except StorageUnavailableError as exc:
            if self.fatal is None:
                self.fatal = exc
            raise

    # -- the kernel's own recorded values -------------------------------------------------------

    def once(self, name: str, produce: Callable[[], Any]) -> Any:
        """A kernel-internal step: run ``produce`` once, replay its value ever after."""
        seq, recorded = self.begin(name)
        if recorded is not None:
            return self.replay_value(recorded)
        started = time.time()
        value = produce()
        self.record(
            StepRecord(
                seq, name, "SUCCEEDED", codec.encode(value, name), None, 1, started, time.time()
            ),
            value,
        )
        return value


def step_error(name: str, seq: int, error: dict[str, Any]) -> StepFailedError:
    """The exception a workflow sees for a failed step, built the same live and on replay."""
    kind = StepTimeoutError if error.get("type") == "builtins.TimeoutError" else StepFailedError
    return kind(
        name, seq, str(error.get("type")), str(error.get("message")), int(error.get("attempts", 1))
    )
