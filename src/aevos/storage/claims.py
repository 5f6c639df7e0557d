"""Who executes a run: claiming from queues, leases and their heartbeat, parking, release.

A mixin of :class:`~aevos.storage.store.Store`. A run's lease lives in its row; every write
of its executor is fenced on it (``Store._fence``), so a worker whose lease lapsed cannot
commit, and any worker on any host may claim a run whose lease lapsed.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import codec
from ..records.queue import Queue
from ..records.run import RunInfo
from .schema import runs

if TYPE_CHECKING:
    from .dialect import Dialect


class Claims:
    if TYPE_CHECKING:
        dialect: Dialect

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _run_info(self, conn: Connection, row: Any, *, strict: bool = True) -> RunInfo: ...

    def park(self, run_id: str, owner: str, wake_at: float) -> bool:
        """Release a run that waits (sleep, signal, child) until ``wake_at`` or a wake-up."""
        now = time.time()
        with self._tx() as conn:
            result = conn.execute(
                sa.update(runs)
                .where(runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status == "RUNNING")
                .values(
                    status="WAITING",
                    owner=None,
                    lease_until=None,
                    # A wake-up recorded while running (see _wake) wins over the timer.
                    wake_at=sa.case(
                        (
                            sa.and_(runs.c.wake_at.is_not(None), runs.c.wake_at < wake_at),
                            runs.c.wake_at,
                        ),
                        else_=wake_at,
                    ),
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    def release(self, run_id: str, owner: str) -> bool:
        """Give a run back to its queue (a worker shutting down mid-run)."""
        now = time.time()
        with self._tx() as conn:
            result = conn.execute(
                sa.update(runs)
                .where(runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status == "RUNNING")
                .values(status="ENQUEUED", owner=None, lease_until=None, updated_at=now)
            )
            return result.rowcount == 1

    def _claimable(self, now: float) -> Any:
        return sa.or_(
            runs.c.status == "ENQUEUED",
            sa.and_(runs.c.status == "WAITING", runs.c.wake_at <= now),
            sa.and_(runs.c.status == "RUNNING", runs.c.lease_until < now),
        )

    @staticmethod
    def _taken_by(owner: str, now: float, lease_seconds: float) -> dict[str, Any]:
        """What a run becomes when ``owner`` takes it to execute (claim or acquire)."""
        return {
            "status": "RUNNING",
            "owner": owner,
            "lease_until": now + lease_seconds,
            "claimed_at": now,
            "updated_at": now,
            # A waiting run's timer is spent; an enqueued run keeps a wake-up that arrived
            # before it was claimed (Store._wake), so the park after it is woken at once.
            "wake_at": sa.case((runs.c.status == "ENQUEUED", runs.c.wake_at), else_=sa.null()),
            "executions": runs.c.executions + 1,
        }

    def acquire(
        self,
        run_id: str,
        owner: str,
        lease_seconds: float,
        *,
        versions: Collection[str] | None = None,
    ) -> RunInfo | None:
        """Take a run to execute in this process now (an idempotent re-start, a child run).

        Succeeds if the run is claimable, or already ours; None if someone else holds it,
        it is finished, or it was started on a code version not in ``versions`` (when
        given: a pinned process leaves it to one that declares it).
        """
        now = time.time()
        with self._tx() as conn:
            result = conn.execute(
                sa.update(runs)
                .where(
                    runs.c.run_id == run_id,
                    sa.or_(
                        self._claimable(now),
                        sa.and_(runs.c.status == "RUNNING", runs.c.owner == owner),
                    ),
                    *_of_versions(versions),
                )
                .values(self._taken_by(owner, now, lease_seconds))
            )
            if result.rowcount != 1:
                return None
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).one()
            return self._run_info(conn, row)

    def claim(
        self,
        owner: str,
        queue: Queue,
        workflows: Sequence[str],
        slots: int,
        lease_seconds: float,
        *,
        exclude: Collection[str] = (),
        versions: Collection[str] | None = None,
    ) -> list[RunInfo]:
        """Claim up to ``slots`` runs of ``queue`` for ``owner``, honouring its limits;
        ``exclude`` names runs not to take (those the caller's threads are executing);
        ``versions``, when given, the code versions whose runs it may take (pinning)."""
        if slots <= 0 or not workflows or (versions is not None and not versions):
            return []
        now = time.time()
        with self._tx() as conn:
            self.dialect.lock_queue(conn, queue.name)
            in_queue = runs.c.queue == queue.name
            live = sa.and_(in_queue, runs.c.status == "RUNNING", runs.c.lease_until >= now)
            if queue.concurrency is not None:
                running = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
                slots = min(slots, queue.concurrency - running)
            if queue.worker_concurrency is not None:
                mine = conn.execute(
                    sa.select(sa.func.count()).where(live, runs.c.owner == owner)
                ).scalar_one()
                slots = min(slots, queue.worker_concurrency - mine)
            if queue.rate_limit is not None:
                recent = conn.execute(
                    sa.select(sa.func.count()).where(
                        in_queue, runs.c.claimed_at >= now - queue.rate_period
                    )
                ).scalar_one()
                slots = min(slots, queue.rate_limit - recent)
            if slots <= 0:
                return []
            # One indexed lookup per claimable state: an OR across statuses would defeat the
            # (queue, status, priority, created_at) index and scan the whole queue.
            known = runs.c.workflow.in_(list(workflows))
            # In any state: a run resumed or woken while a thread of ours still winds it
            # down is claimed once that thread lets go, not handed to a second thread.
            not_held = [runs.c.run_id.not_in(list(exclude))] if exclude else []
            found: list[Any] = []
            for state in (
                runs.c.status == "ENQUEUED",
                sa.and_(runs.c.status == "WAITING", runs.c.wake_at <= now),
                sa.and_(runs.c.status == "RUNNING", runs.c.lease_until < now),
            ):
                candidates = (
                    sa.select(runs.c.run_id, runs.c.priority, runs.c.created_at)
                    .where(in_queue, state, known, *not_held, *_of_versions(versions))
                    .order_by(runs.c.priority, runs.c.created_at)
                    .limit(slots)
                )
                if self.dialect.skip_locked:
                    candidates = candidates.with_for_update(skip_locked=True)
                found.extend(conn.execute(candidates).all())
            found.sort(key=lambda row: (row.priority, row.created_at))
            ids = [row.run_id for row in found[:slots]]
            if not ids:
                return []
            conn.execute(
                sa.update(runs)
                .where(runs.c.run_id.in_(ids), self._claimable(now))
                .values(self._taken_by(owner, now, lease_seconds))
            )
            rows = conn.execute(
                sa.select(runs).where(runs.c.run_id.in_(ids), runs.c.owner == owner)
            ).all()
            claimed = []
            for row in rows:
                try:
                    claimed.append(self._run_info(conn, row))
                except ValueError as exc:
                    # A row that no longer decodes must not block the queue for every worker.
                    self._fail_corrupt(conn, row.run_id, "corrupt_run", exc, now)
            return claimed

    def _fail_corrupt(
        self, conn: Connection, run_id: str, code: str, exc: Exception, now: float
    ) -> None:
        error = {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "code": code,
            "message": f"the run's stored data cannot be decoded: {str(exc)[:200]}",
        }
        conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == run_id)
            .values(
                status="FAILED",
                error=codec.encode(error, "run error"),
                owner=None,
                lease_until=None,
                updated_at=now,
                finished_at=now,
            )
        )

    def fail_corrupt(self, run_id: str, code: str, exc: Exception) -> None:
        """Mark a run FAILED because its recorded history cannot be read back."""
        with self._tx() as conn:
            self._fail_corrupt(conn, run_id, code, exc, time.time())

    def heartbeat(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> Beat:
        """Extend the leases of the runs ``owner`` is executing; says which of them are no
        longer its to run (cancelled, or taken over after a missed heartbeat) and until
        when the others' leases now run.

        Only the listed runs: a run abandoned in this process (its thread died) must lapse
        and be recovered elsewhere, not be kept alive by its neighbours' heartbeats.
        """
        if not run_ids:
            return Beat([], time.time() + lease_seconds)
        ids = list(run_ids)
        extended: set[str] = set()
        with self._tx() as conn:
            # Read once the transaction holds what it waited for (SQLite's write lock): a
            # heartbeat that waited still grants a whole lease from now.
            now = time.time()
            until = now + lease_seconds
            update = sa.update(runs).values(lease_until=until).returning(runs.c.run_id)
            owned = (runs.c.owner == owner, runs.c.status == "RUNNING")
            if self.dialect.skip_locked:
                # Never wait for one run's row while holding the others': the commits of the
                # runs in flight (groupcommit.py) lock several rows in their own order, and
                # one UPDATE over all our runs deadlocked with them, failing either the
                # heartbeat (leases lapsed) or a whole batch (its steps ran again). Rows
                # locked now are extended one by one below.
                held = runs.alias("held")
                free = (
                    sa.select(held.c.run_id)
                    .where(held.c.run_id.in_(ids), held.c.owner == owner)
                    .with_for_update(skip_locked=True)
                )
                update = update.where(runs.c.run_id.in_(free), *owned)
            else:
                update = update.where(runs.c.run_id.in_(ids), *owned)
            extended.update(conn.execute(update).scalars())
        for run_id in ids:
            if run_id in extended or not self.dialect.skip_locked:
                continue
            # One row per transaction: waiting for it while holding no other lock cannot
            # close a cycle.
            with self._tx() as conn:
                now = time.time()
                if conn.execute(
                    sa.update(runs)
                    .where(runs.c.run_id == run_id, *owned)
                    .values(lease_until=now + lease_seconds)
                ).rowcount:
                    extended.add(run_id)
        return Beat([run_id for run_id in ids if run_id not in extended], until)


class Beat(NamedTuple):
    """What a heartbeat found: the runs no longer the owner's, and until when (at the
    earliest) the leases of the others run now."""

    lost: list[str]
    until: float


def _of_versions(versions: Collection[str] | None) -> list[Any]:
    """The condition that a run was started on one of ``versions`` (none: any version)."""
    return [] if versions is None else [runs.c.code_version.in_(sorted(versions))]
