"""A handle on one run: its status, its result, cancelling it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from ..errors import RunCancelledError, RunFailedError, RunTimeoutError
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
        """Wait for the run to end; its output, or RunFailedError / RunCancelledError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll
        while True:
            status = self.status()
            if status.terminal:
                return cast(R, result_of(self._runtime.store.get_run(self.run_id)))
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeoutError(f"run {self.run_id} is still {status.value} after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def result_of(info: RunInfo) -> object:
    if info.status is RunStatus.SUCCEEDED:
        return info.output
    if info.status is RunStatus.CANCELLED:
        raise RunCancelledError(info.run_id)
    raise RunFailedError(info.run_id, info.error)
