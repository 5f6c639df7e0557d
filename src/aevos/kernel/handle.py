"""A handle on one run: its status, its result, cancelling it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from ..errors import (
    RunCancelledError,
    RunFailedError,
    RunTimeoutError,
    StorageUnavailableError,
)
from ..records.run import RunInfo, StepInfo
from ..records.status import RunStatus

if TYPE_CHECKING:
    from ..storage import Store

R = TypeVar("R")


class Runs(Protocol):
    """What a handle acts through (the kernel's runtime)."""

    @property
    def store(self) -> Store: ...

    def cancel(self, run_id: str) -> RunStatus: ...


class RunHandle(Generic[R]):
    """One run of a workflow, by id: its status, its steps, its result; cancelling it."""

    def __init__(self, runtime: Runs, run_id: str) -> None:
        self._runtime = runtime
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    def info(self) -> RunInfo:
        return self._runtime.store.get_run(self.run_id)

    def status(self) -> RunStatus:
        return self._runtime.store.run_status(self.run_id)

    def steps(self) -> list[StepInfo]:
        return self._runtime.store.list_steps(self.run_id)

    def cancel(self) -> RunStatus:
        return self._runtime.cancel(self.run_id)

    def result(self, timeout: float | None = None, poll: float = 0.05) -> R:
        """Wait for the run to end; its output, or RunFailedError / RunCancelledError.

        An outage of the database does not end the wait (the run continues when the
        database is back): past ``timeout`` seconds, RunTimeoutError says whether the run
        was still going or the database was not answering, and why.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll
        outage: StorageUnavailableError | None = None
        since = 0.0
        while True:
            try:
                status = self.status()
                if status.terminal:
                    return cast(R, result_of(self._runtime.store.get_run(self.run_id)))
                outage = None
            except StorageUnavailableError as exc:
                if outage is None:
                    since = time.monotonic()
                outage = exc
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if outage is not None:
                    raise RunTimeoutError(
                        f"run {self.run_id} did not end within {timeout}s: the database has not "
                        f"answered for the last {now - since:.1f}s ({outage.message})"
                    ) from outage
                raise RunTimeoutError(f"run {self.run_id} is still {status.value} after {timeout}s")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - now)))
            delay = min(delay * 1.5, 1.0)


def result_of(info: RunInfo) -> object:
    if info.status is RunStatus.SUCCEEDED:
        return info.output
    if info.status is RunStatus.CANCELLED:
        raise RunCancelledError(info.run_id)
    raise RunFailedError(info.run_id, info.error)
