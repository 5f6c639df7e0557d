"""Group commit: the hot-path writes of many runs in flight in one process, in one commit.

Every run's start, step record and completion is a short write whose cost is the commit's
disk flush, not its statements. When several threads of one process write at once, the
first becomes the *leader*: it takes every write queued at that moment, executes them in one
transaction on its own connection and commits once, while the others (*followers*) wait.
A follower is released only when the commit that carried its write has returned, so nothing
about durability changes: a write is durable before the thread that asked for it goes on.
When the leader is done it hands the lead to the oldest write queued meanwhile, whose batch
is everything that arrived during the previous commit. Alone, a thread leads a batch of one
and commits it as before (one statement in autocommit mode where it can), so a sequential
run pays nothing for this.

Each write is a function of the batch's cursor that either completes or raises. If one write
of a batch fails (a constraint, a lost lease, a value the database rejects), the transaction
is rolled back, the failing write gets its own error, and the batch is executed again without
it: one run's bad record never loses or fails the others. Errors that are no write's own
(the database unreachable, the commit itself failing) go to every write of the batch. A
connection found dead mid-batch may have committed before it died, so each write is then
retried by itself on a fresh connection, told so (``retried``), exactly as the single path
does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, TypeVar

from ..errors import StorageUnavailableError

T = TypeVar("T")

#: ``work(cursor, retried)``: one run's write, executed in the batch's transaction.
Work = Callable[[Any, bool], T]


class _Write(Generic[T]):
    """One thread's write waiting in the queue, with a latch its thread waits on."""

    __slots__ = ("work", "single", "result", "error", "done", "_latch")

    def __init__(self, work: Work[T], single: bool) -> None:
        self.work = work
        self.single = single
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False
        # A held lock is the cheapest latch: released once, by whoever wakes this thread.
        self._latch = threading.Lock()
        self._latch.acquire()

    def wait(self) -> None:
        self._latch.acquire()

    def wake(self) -> None:
        self._latch.release()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Leader/follower batching of one store's hot-path writes (see the module docstring).

    ``transaction(single)`` opens a hot-path transaction on the calling thread's connection,
    with driver errors classified; ``lost`` is the error it raises when that connection was
    found dead.
    """

    def __init__(
        self,
        transaction: Callable[[bool], AbstractContextManager[Any]],
        lost: type[BaseException],
        *,
        max_batch: int = 256,
    ) -> None:
        self._transaction = transaction
        self._lost = lost
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: list[_Write[Any]] = []
        self._leading = False
        #: Commits made and writes they carried (the benchmark's "commit sharing").
        self.commits = 0
        self.writes = 0

    def run(self, single: bool, work: Work[T]) -> T:
        """Execute ``work`` in the next commit and return its result once that commit is
        durable; ``single`` says it is one statement (committed by itself when alone)."""
        write: _Write[T] = _Write(work, single)
        with self._lock:
            self._queue.append(write)
            self._queued.notify_all()
            lead = not self._leading
            if lead:
                self._leading = True
        if not lead:
            write.wait()
            if write.done:
                return write.outcome()
            # Woken undone: the previous leader handed this thread the lead.
        while True:
            with self._lock:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self.commit(batch)
            for other in batch:
                if other is not write:
                    other.wake()
            with self._lock:
                if not self._queue:
                    self._leading = False
                    break
                if write.done:
                    # Hand the lead to the oldest waiting write and go on with our own.
                    self._queue[0].wake()
                    break
        return write.outcome()

    @contextmanager
    def held(self) -> Iterator[Callable[[int], None]]:
        """Hold every write back until the block ends, then commit all of them as one batch.

        For tests that need a batch of known writes: the block receives ``wait_for(n)``,
        which returns once ``n`` writes are queued.
        """

        def wait_for(count: int) -> None:
            with self._queued:
                self._queued.wait_for(lambda: len(self._queue) >= count)

        with self._queued:
            while self._leading:  # a commit in progress: let it end (a leader never notifies)
                self._queued.wait(0.001)
            self._leading = True
        try:
            yield wait_for
        finally:
            with self._lock:
                batch, self._queue = self._queue, []
            self.commit(batch)
            for write in batch:
                write.wake()
            with self._lock:
                if self._queue:
                    self._queue[0].wake()
                else:
                    self._leading = False

    def commit(self, batch: list[_Write[Any]]) -> None:
        """Execute and commit ``batch`` on this thread's connection; every write ends done,
        with its result or its own error."""
        try:
            if len(batch) == 1:
                self._alone(batch[0])
            else:
                self._together(batch)
        finally:
            for write in batch:
                write.done = True

    def _alone(self, write: _Write[Any]) -> None:
        try:
            try:
                with self._transaction(write.single) as cursor:
                    write.result = write.work(cursor, False)
            except self._lost:
                with self._transaction(write.single) as cursor:
                    write.result = write.work(cursor, True)
            self.commits += 1
            self.writes += 1
        except BaseException as exc:
            write.error = exc

    def _together(self, batch: list[_Write[Any]]) -> None:
        pending = batch
        while len(pending) > 1:
            failed: _Write[Any] | None = None
            try:
                with self._transaction(False) as cursor:
                    for write in pending:
                        failed = write
                        write.result = write.work(cursor, False)
                    failed = None
            except self._lost:
                # It may have committed before the connection died: each write alone, told.
                for write in pending:
                    self._retry_alone(write)
                return
            except BaseException as exc:
                if failed is None or isinstance(exc, StorageUnavailableError):
                    # BEGIN or COMMIT failed, or the database is unreachable: no one write's
                    # fault, and nothing of the batch committed.
                    for write in pending:
                        write.error = exc
                    return
                # Rolled back: the failing write keeps its error, the others go again.
                failed.error = exc
                failed.result = None
                pending = [write for write in pending if write is not failed]
                continue
            self.commits += 1
            self.writes += len(pending)
            return
        if pending:
            self._alone(pending[0])

    def _retry_alone(self, write: _Write[Any]) -> None:
        try:
            with self._transaction(write.single) as cursor:
                write.result = write.work(cursor, True)
            self.commits += 1
            self.writes += 1
        except BaseException as exc:
            write.error = exc
