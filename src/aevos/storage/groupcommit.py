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
#: A write that is one statement, for a pipelined batch: its SQL and parameters, and what
#: its row count means (the write's result, or an error such as a lost lease).
Statement = tuple[str, Any]
Check = Callable[[int], T]


class _Write(Generic[T]):
    """One thread's write waiting in the queue, with a latch its thread waits on."""

    __slots__ = (
        "_latch",
        "batch",
        "check",
        "done",
        "error",
        "lane",
        "result",
        "single",
        "statement",
        "work",
    )

    def __init__(
        self,
        work: Work[T],
        single: bool,
        statement: Statement | None = None,
        check: Check[T] | None = None,
    ) -> None:
        self.work = work
        self.single = single
        self.statement = statement
        self.check = check
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False
        # Set when a leader hands this write's thread the lead: its lane and its batch.
        self.lane = -1
        self.batch: list[_Write[Any]] = []
        # Made only for a write that waits (see ``follow``).
        self._latch: threading.Lock | None = None

    def follow(self) -> None:
        """Make the latch this write's thread waits on (under the queue's lock, so that
        no leader can wake the write before it exists)."""
        # A held lock is the cheapest latch: released once, by whoever wakes this thread.
        self._latch = threading.Lock()
        self._latch.acquire()

    def wait(self) -> None:
        assert self._latch is not None
        self._latch.acquire()

    def wake(self) -> None:
        if self._latch is not None:  # a leader's own write has none
            self._latch.release()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Leader/follower batching of one store's hot-path writes (see the module docstring).

    ``transaction(lane, single)`` opens a hot-path transaction on the connection of
    ``lane``, with driver errors classified; ``lost`` is the error it raises when that
    connection was found dead. Up to ``lanes`` batches commit at once, one per lane: a
    server that flushes concurrent commits together (PostgreSQL) then overlaps one batch's
    round trips and flush with another's; SQLite, a single writer, has one lane.
    """

    def __init__(
        self,
        transaction: Callable[[int, bool], AbstractContextManager[Any]],
        lost: type[BaseException],
        *,
        lanes: int = 1,
        pipeline: bool = False,
        max_batch: int = 256,
    ) -> None:
        self._transaction = transaction
        self._lost = lost
        # PostgreSQL: a batch of one-statement writes is sent in one round trip (psycopg's
        # pipeline mode) instead of one round trip per write.
        self._pipeline = pipeline
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: list[_Write[Any]] = []
        self._watched = False  # a test waits for writes to queue (see ``held``)
        self._lanes = lanes
        # Lanes not leading a commit now; each lane has its own connection.
        self._free = list(range(lanes))
        #: Commits made and writes they carried (the benchmark's "commit sharing").
        self.commits = 0
        self.writes = 0

    def run(
        self,
        single: bool,
        work: Work[T],
        statement: Statement | None = None,
        check: Check[T] | None = None,
    ) -> T:
        """Execute ``work`` in the next commit and return its result once that commit is
        durable; ``single`` says it is one statement (committed by itself when alone).

        ``statement`` and ``check`` may say the same as ``work`` for a pipelined batch: the
        one statement ``work`` executes, and what ``work`` makes of its row count.
        """
        write: _Write[T] = _Write(work, single, statement, check)
        with self._lock:
            self._queue.append(write)
            if self._watched:
                self._queued.notify_all()
            if self._free:
                lane, batch = self._free.pop(), self._take()
            else:
                lane, batch = -1, []
                write.follow()
        if lane < 0:
            write.wait()
            if write.done:
                return write.outcome()
            # Woken undone: a leader handed this thread its lane and the next batch.
            lane, batch = write.lane, write.batch
        self._lead(lane, batch, write)
        return write.outcome()

    def _take(self) -> list[_Write[Any]]:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        return batch

    def _lead(self, lane: int, batch: list[_Write[Any]], mine: _Write[Any] | None) -> None:
        """Commit ``batch`` on ``lane``, wake its writes, and hand the lane on."""
        self.commit(lane, batch)
        for other in batch:
            if other is not mine:
                other.wake()
        with self._lock:
            if self._queue:
                # The batch is taken here, under the lock, so no other leader takes it too.
                following = self._queue[0]
                following.lane, following.batch = lane, self._take()
                following.wake()
            else:
                self._free.append(lane)

    @contextmanager
    def held(self) -> Iterator[Held]:
        """Hold every write back until the block ends (or :meth:`Held.commit`), then commit
        all of them as one batch: for tests that need a batch of known writes."""
        lanes: list[int] = []
        with self._queued:
            while len(lanes) < self._lanes:
                if self._free:
                    lanes.append(self._free.pop())
                else:  # a commit in progress: let it end (a leader does not notify)
                    self._queued.wait(0.001)
        try:
            yield Held(self, lanes[0])
        finally:
            with self._lock:
                batch = self._take()
                self._free.extend(lanes[1:])
            self._lead(lanes[0], batch, None)

    def _wait_queued(self, count: int) -> None:
        with self._queued:
            self._watched = True
            try:
                self._queued.wait_for(lambda: len(self._queue) >= count)
            finally:
                self._watched = False

    def _commit_queued(self, lane: int) -> None:
        with self._lock:
            batch = self._take()
        self.commit(lane, batch)
        for write in batch:
            write.wake()

    def commit(self, lane: int, batch: list[_Write[Any]]) -> None:
        """Execute and commit ``batch`` on ``lane``'s connection; every write ends done,
        with its result or its own error."""
        try:
            if len(batch) == 1:
                self._alone(lane, batch[0])
            elif batch:
                self._together(lane, batch)
        finally:
            for write in batch:
                write.done = True

    def _alone(self, lane: int, write: _Write[Any]) -> None:
        try:
            try:
                with self._transaction(lane, write.single) as cursor:
                    write.result = write.work(cursor, False)
            except self._lost:
                with self._transaction(lane, write.single) as cursor:
                    write.result = write.work(cursor, True)
            self.commits += 1
            self.writes += 1
        except BaseException as exc:
            write.error = exc

    def _together(self, lane: int, batch: list[_Write[Any]]) -> None:
        pipelined = self._pipeline and all(write.check is not None for write in batch)
        if pipelined and self._pipelined(lane, batch):
            return
        pending = batch
        while len(pending) > 1:
            failed: _Write[Any] | None = None
            try:
                with self._transaction(lane, False) as cursor:
                    for write in pending:
                        failed = write
                        write.result = write.work(cursor, False)
                    failed = None
            except self._lost:
                # It may have committed before the connection died: each write alone, told.
                for write in pending:
                    self._retry_alone(lane, write)
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
            self._alone(lane, pending[0])

    def _pipelined(self, lane: int, batch: list[_Write[Any]]) -> bool:
        """One round trip for the batch's statements; False (nothing committed) if one
        failed, for the batch to go again one statement at a time, which finds the failing
        write and gives each write's own error handling its error."""
        committing = False
        counts: list[int] = []
        try:
            with self._transaction(lane, False) as cursor:
                connection = cursor.connection
                cursors: list[Any] = []
                try:
                    with connection.pipeline():
                        for write in batch:
                            each = connection.cursor()
                            cursors.append(each)
                            sql, params = write.statement or ("", None)
                            each.execute(sql, params)
                    counts = [each.rowcount for each in cursors]
                finally:
                    for each in cursors:
                        each.close()
                committing = True
        except BaseException as exc:
            if not committing:
                if isinstance(exc, StorageUnavailableError) and not isinstance(exc, self._lost):
                    for write in batch:
                        write.error = exc
                    return True
                return False  # rolled back: the slow batch finds who failed
            if isinstance(exc, self._lost):
                for write in batch:
                    self._retry_alone(lane, write)
                return True
            for write in batch:
                write.error = exc
            return True
        self.commits += 1
        self.writes += len(batch)
        for write, count in zip(batch, counts, strict=True):
            try:
                assert write.check is not None
                write.result = write.check(count)
            except BaseException as exc:
                # A statement that matched no row wrote nothing (a lost lease): the commit
                # carried the others, and this write gets its error.
                write.error = exc
        return True

    def _retry_alone(self, lane: int, write: _Write[Any]) -> None:
        try:
            with self._transaction(lane, write.single) as cursor:
                write.result = write.work(cursor, True)
            self.commits += 1
            self.writes += 1
        except BaseException as exc:
            write.error = exc


class Held:
    """The writes a test holds back (see :meth:`GroupCommit.held`)."""

    def __init__(self, group: GroupCommit, lane: int) -> None:
        self._group = group
        self._lane = lane

    def wait_for(self, count: int) -> None:
        """Return once ``count`` writes are queued."""
        self._group._wait_queued(count)

    def commit(self) -> None:
        """Commit the writes queued now as one batch, and go on holding the later ones."""
        self._group._commit_queued(self._lane)
