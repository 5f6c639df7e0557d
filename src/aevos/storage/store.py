"""The one SQL implementation of the kernel's storage, shared by SQLite and PostgreSQL.

Every state change is a single short transaction conditioned on the run's current status
and owner, so a worker that lost its lease (it was presumed dead and its run was taken over)
can never overwrite the new owner's progress: its writes match no row and it stops.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import codec
from ..errors import (
    AevosError,
    IdempotencyConflictError,
    RunNotFoundError,
    StorageError,
    StorageUnavailableError,
)
from ..records.queue import Queue
from ..records.run import NewRun, RunInfo, StepInfo
from ..records.status import RunStatus
from .claims import Claims
from .dialect import READ_ONLY, classified, dialect_for, parse_url, redact_url
from .fastpath import Compiled, RawConnections
from .groupcommit import GroupCommit
from .liveness import Owners
from .operations import OperatorActions
from .schema import blobs, metadata, queues, runs, steps
from .signals import LeaseLost, Signals
from .step_record import StepRecord
from .unit import UnitOfWork
from .versions import Versions

DEFAULT_BLOB_THRESHOLD = 64 * 1024
#: Batches that commit at once on PostgreSQL, each on its own connection.
POSTGRES_COMMIT_LANES = 4

_ACTIVE = (RunStatus.RUNNING.value,)
_S = RunStatus
T = TypeVar("T")


#: Runs a wake-up applies to (see Store._wake).
_WAKEABLE = ("WAITING", "RUNNING", "ENQUEUED")


class _ConnectionLost(StorageUnavailableError):
    """A commit lane's connection was found dead (see groupcommit.py)."""


class _Hot:
    """The hot-path transaction with error classification (a class: it runs every step)."""

    __slots__ = ("_raw", "_store", "_tx")

    def __init__(self, store: Store, raw: RawConnections, single: bool) -> None:
        self._store = store
        self._raw = raw
        self._tx = raw.transaction(single)

    def __enter__(self) -> Any:
        try:
            return self._tx.__enter__()
        except BaseException as exc:
            self._store._raise_classified(exc, self._raw)
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            self._tx.__exit__(kind, exc, tb)
        except BaseException as commit_failure:
            self._store._raise_classified(commit_failure, self._raw)
            raise
        if exc is not None:
            self._store._raise_classified(exc, self._raw)


class Store(Claims, OperatorActions, Signals, Versions, Owners):
    """Durable state of runs, steps, signals and queues in one SQL database."""

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self._owner_locks = weakref.WeakSet()
        try:
            parsed = parse_url(url)
        except ValueError:
            # The text itself may hold a password: do not echo it.
            raise StorageUnavailableError(
                "the database URL cannot be parsed; expected sqlite:///path/to/file.db or "
                "postgresql://user@host:port/database"
            ) from None
        self.dialect = dialect_for(parsed)
        self.backend = self.dialect.name
        self.blob_threshold = blob_threshold
        self.engine = self.dialect.create_engine(parsed)
        self._prepared: dict[Callable[[Store], Any], Any] = {}
        # Imported here: Alembic is only needed once a database is opened, not on import.
        from .migration import ensure_schema

        try:
            with self._guard():
                ensure_schema(self.engine, migrate=migrate, url=self.safe_url)
        except BaseException:
            self.engine.dispose()
            raise
        self._insert_run = self.dialect.insert(runs)
        self._insert_blob = self.dialect.insert(blobs).on_conflict_do_nothing(
            index_elements=["ref"]
        )
        self._dbapi = self.engine.dialect.loaded_dbapi
        sqlite = self.backend == "sqlite"
        # Runs in flight in this process share commits (see groupcommit.py), on one
        # connection per commit lane: SQLite has one writer, PostgreSQL overlaps a few.
        self._lanes = [
            RawConnections(
                self.engine,
                "BEGIN IMMEDIATE" if sqlite else "BEGIN",
                always_begin=sqlite,
                # Only the lane's leader writes through it, one thread at a time.
                shared=True,
            )
            for _ in range(1 if sqlite else POSTGRES_COMMIT_LANES)
        ]
        self.group = GroupCommit(
            self._hot, _ConnectionLost, lanes=len(self._lanes), pipeline=not sqlite
        )
        bp = sa.bindparam
        owned = sa.and_(
            runs.c.run_id == bp("w_run"), runs.c.owner == bp("w_owner"), runs.c.status == "RUNNING"
        )
        self._hot_fence = Compiled(
            sa.update(runs).where(owned).values(updated_at=bp("now")), self.engine
        )
        self._hot_step = Compiled(steps.insert(), self.engine)
        self._hot_run = Compiled(self._insert_run.on_conflict_do_nothing(), self.engine)
        finish = (
            sa.update(runs)
            .where(owned)
            .values(
                status=bp("run_status"),
                output=bp("run_output"),
                output_ref=sa.null(),
                error=bp("run_error"),
                owner=sa.null(),
                lease_until=sa.null(),
                wake_at=sa.null(),
                updated_at=bp("now"),
                finished_at=bp("now"),
            )
        )
        self._hot_finish = Compiled(finish, self.engine)
        # PostgreSQL: fence and insert in one statement (one round trip); the UPDATE in the
        # CTE still takes the run's row lock, so a concurrent takeover serialises with it.
        self._hot_step_fenced: Compiled | None = None
        self._hot_finish_step: Compiled | None = None
        if self.backend == "postgresql":
            fence = sa.update(runs).where(owned).values(updated_at=bp("now"))
            self._hot_step_fenced = self._fenced_step_insert(fence)
            self._hot_finish_step = self._fenced_step_insert(finish)
        else:
            # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE), so an
            # EXISTS check fences as safely as an UPDATE and does not write the run's page
            # to the WAL on every step.
            cols = [c.name for c in steps.c]
            held = sa.exists(sa.select(runs.c.run_id).where(owned))
            self._hot_step_fenced = Compiled(
                steps.insert().from_select(
                    cols, sa.select(*[bp(name).label(name) for name in cols]).where(held)
                ),
                self.engine,
            )
        self._hot_wake = Compiled(
            sa.update(runs)
            .where(
                runs.c.run_id == bp("parent"),
                # Not IN (...): an expanding IN cannot be compiled once for the fast path.
                sa.or_(*(runs.c.status == status for status in _WAKEABLE)),
            )
            .values(wake_at=bp("now"), updated_at=bp("now")),
            self.engine,
        )

    def _fenced_step_insert(self, fence: Any) -> Compiled:
        """``WITH f AS (<fence> RETURNING run_id) INSERT INTO steps SELECT ... FROM f``: the
        step row is written only if the fencing UPDATE matched, in one round trip."""
        cte = fence.returning(runs.c.run_id).cte("fence")
        cols = [c.name for c in steps.c]
        select = sa.select(
            *[sa.cast(sa.bindparam(name), steps.c[name].type).label(name) for name in cols]
        ).select_from(cte)
        return Compiled(steps.insert().from_select(cols, select), self.engine)

    @staticmethod
    def _step_values(
        run_id: str, step: StepRecord, text: str | None, ref: str | None
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "seq": step.seq,
            "name": step.name,
            "status": step.status,
            "output": text,
            "output_ref": ref,
            "error": None if step.error is None else codec.encode(step.error, "step error"),
            "attempts": step.attempts,
            "started_at": step.started_at,
            "finished_at": step.finished_at,
        }

    def close(self) -> None:
        self.release_owner_locks()
        for lane in self._lanes:
            lane.close()
        self.engine.dispose()

    def _hot(self, lane: int, single: bool = False) -> _Hot:
        """A transaction on a commit lane's raw connection, errors classified like
        ``_guard``."""
        return _Hot(self, self._lanes[lane], single)

    def _raise_classified(self, exc: BaseException, raw: RawConnections | None = None) -> None:
        """Re-raise a driver error as the aevos error it means; other errors pass through."""
        if isinstance(exc, AevosError | LeaseLost | self._dbapi.IntegrityError):
            return
        if isinstance(exc, self._dbapi.Error | sa.exc.SQLAlchemyError):
            # SQLAlchemy wraps what fails while checking out a connection (a refused one).
            classified = self.dialect.classify(exc, self.safe_url)
            if classified is not None:
                if (
                    raw is not None
                    and raw.discard()
                    and isinstance(classified, StorageUnavailableError)
                ):
                    raise _ConnectionLost(classified.message) from None
                raise classified from None
            raise StorageError(
                f"database error on {self.safe_url}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc

    # -- units of work ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """A unit of work that writes: everything done through it commits together when the
        block ends, or is rolled back if it raises. On SQLite it holds the write lock from
        its first statement (``BEGIN IMMEDIATE``), so keep it short."""
        with self._tx() as conn:
            yield UnitOfWork(self, conn)

    @contextmanager
    def reading(self) -> Iterator[UnitOfWork]:
        """A unit of work that only reads: one consistent snapshot, which on SQLite neither
        waits for nor blocks the writer. Never write through it."""
        with self._read() as conn:
            yield UnitOfWork(self, conn, read_only=True)

    def prepared(self, build: Callable[[Store], T]) -> T:
        """``build(self)``, made once per store: statements a repository prepares for this
        store's dialect (and compiles for its fast path)."""
        try:
            return self._prepared[build]  # type: ignore[no-any-return]
        except KeyError:
            # Two threads may both build it; either result is the same.
            made = self._prepared[build] = build(self)
            return made

    # -- plumbing ---------------------------------------------------------------------------

    def _guard(self) -> AbstractContextManager[None]:
        """Driver errors raised inside, as the aevos errors they mean."""
        return classified(self.dialect, self.safe_url)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._guard(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A transaction that only reads: one consistent snapshot that, on SQLite, takes no
        write lock (never write through it: the upgrade could fail as busy)."""
        with self._guard(), self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn

    def _value(self, conn: Connection, text: str | None) -> tuple[str | None, str | None]:
        """Inline JSON, or a blob reference for values past the size threshold."""
        if text is None or len(text) <= self.blob_threshold:
            return text, None
        data = text.encode()
        ref = hashlib.sha256(data).hexdigest()
        conn.execute(
            self._insert_blob,
            {"ref": ref, "data": data, "size": len(data), "created_at": time.time()},
        )
        return None, ref

    def _load_blob(self, conn: Connection, ref: str) -> str:
        data = conn.execute(sa.select(blobs.c.data).where(blobs.c.ref == ref)).scalar_one()
        return bytes(data).decode()

    def _decode(self, conn: Connection, text: str | None, ref: str | None) -> Any:
        if ref is not None:
            return codec.decode(self._load_blob(conn, ref))
        return None if text is None else codec.decode(text)

    def _lenient(self, conn: Connection, text: str | None, ref: str | None) -> Any:
        try:
            return self._decode(conn, text, ref)
        except ValueError:
            return None  # corrupt: shown as missing; claiming the run fails it with the reason

    def _run_info(self, conn: Connection, row: Any, *, strict: bool = True) -> RunInfo:
        """A run row as RunInfo; ``strict=False`` (status queries) tolerates corrupt data."""
        decode = self._decode if strict else self._lenient
        return RunInfo(
            run_id=row.run_id,
            tenant=row.tenant,
            workflow=row.workflow,
            status=RunStatus(row.status),
            queue=row.queue,
            priority=row.priority,
            idempotency_key=row.idempotency_key,
            input=decode(conn, row.input, row.input_ref),
            output=decode(conn, row.output, row.output_ref),
            error=None if row.error is None else decode(conn, row.error, None),
            code_version=row.code_version,
            parent_run_id=row.parent_run_id,
            owner=row.owner,
            lease_until=row.lease_until,
            wake_at=row.wake_at,
            executions=row.executions,
            created_at=row.created_at,
            updated_at=row.updated_at,
            claimed_at=row.claimed_at,
            finished_at=row.finished_at,
        )

    # -- runs -------------------------------------------------------------------------------

    def insert_run(
        self, new: NewRun, *, also: Callable[[UnitOfWork], object] | None = None
    ) -> tuple[RunInfo, bool]:
        """Create a run; with an idempotency key, return the existing run instead.

        Returns ``(run, created)``. Reusing a key for a different workflow is a conflict.
        ``also(uow)`` runs in the same unit of work when the run is created (its audit
        record), so a run never exists without it.
        """
        now = time.time()
        if (
            also is None
            and new.status is _S.RUNNING
            and new.error is None
            and (new.input_json is None or len(new.input_json) <= self.blob_threshold)
        ):
            created = self._insert_running(new, now)
            if created is not None:
                return created, True
        with self.transaction() as uow:
            conn = uow.conn
            values = self._run_values(conn, new, now)
            # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT DO NOTHING.
            stmt = self._insert_run.on_conflict_do_nothing().returning(runs.c.run_id)
            inserted = conn.execute(stmt, values).first() is not None
            if inserted and also is not None:
                also(uow)
            if inserted:
                if new.status is _S.RUNNING:
                    # Hand back what we wrote without a round trip: the hot path.
                    return self._fresh_info(new, values), True
                row = conn.execute(sa.select(runs).where(runs.c.run_id == new.run_id)).one()
                return self._run_info(conn, row), True
            existing = self._existing_run(conn, new)
            return self._run_info(conn, existing), False

    def _run_values(self, conn: Connection, new: NewRun, now: float) -> dict[str, Any]:
        input_text, input_ref = self._value(conn, new.input_json)
        return {
            "run_id": new.run_id,
            "tenant": new.tenant,
            "workflow": new.workflow,
            "status": new.status.value,
            "queue": new.queue,
            "priority": new.priority,
            "idempotency_key": new.idempotency_key,
            "input": input_text,
            "input_ref": input_ref,
            "error": None if new.error is None else codec.encode(new.error, "run error"),
            "code_version": new.code_version,
            "parent_run_id": new.parent_run_id,
            "owner": new.owner,
            "lease_until": new.lease_until,
            "executions": 1 if new.status is _S.RUNNING else 0,
            "created_at": now,
            "updated_at": now,
            "claimed_at": now if new.status is _S.RUNNING else None,
            "finished_at": now if new.status.terminal else None,
        }

    def _existing_run(self, conn: Connection, new: NewRun) -> Any:
        """The run that holds ``new``'s idempotency key (or id), checked to be of the same
        workflow."""
        if new.idempotency_key is not None:
            cond = sa.and_(
                runs.c.tenant == new.tenant, runs.c.idempotency_key == new.idempotency_key
            )
        else:
            cond = runs.c.run_id == new.run_id
        existing = conn.execute(sa.select(runs).where(cond)).one_or_none()
        if existing is None:
            # Conflict on the run id with a different key: a caller reused a run id.
            raise IdempotencyConflictError(
                f"run id {new.run_id!r} already exists with another idempotency key"
            )
        if existing.workflow != new.workflow:
            raise IdempotencyConflictError(
                f"idempotency key {new.idempotency_key!r} already started a run of "
                f"workflow {existing.workflow!r} ({existing.run_id}); it cannot start "
                f"{new.workflow!r}"
            )
        return existing

    def insert_runs(
        self,
        news: Sequence[NewRun],
        *,
        also: Callable[[UnitOfWork, list[bool]], object] | None = None,
    ) -> list[tuple[str, bool]]:
        """Create many enqueued runs in one transaction (an event consumer's batch): per
        run, the id of the run holding its idempotency key and whether it was created here.
        ``also(uow, created)`` runs in the same unit of work, after the inserts."""
        now = time.time()
        with self.transaction() as uow:
            conn = uow.conn
            rows = [self._run_values(conn, new, now) for new in news]
            inserted: set[str] = set()
            if rows:
                # One statement for the batch: a round trip per run would cost more than
                # the commit.
                # (executemany with RETURNING: SQLAlchemy sends it as multi-row INSERTs.)
                stmt = self._insert_run.on_conflict_do_nothing().returning(runs.c.run_id)
                inserted = {str(run_id) for run_id in conn.execute(stmt, rows).scalars()}
            result = [
                (new.run_id, True)
                if new.run_id in inserted
                else (str(self._existing_run(conn, new).run_id), False)
                for new in news
            ]
            if also is not None:
                also(uow, [created for _, created in result])
        return result

    def _insert_running(self, new: NewRun, now: float) -> RunInfo | None:
        """Hot path of an inline start: one INSERT; None if the id or key already exists."""
        values = {
            "run_id": new.run_id,
            "tenant": new.tenant,
            "workflow": new.workflow,
            "status": "RUNNING",
            "queue": new.queue,
            "priority": new.priority,
            "idempotency_key": new.idempotency_key,
            "input": new.input_json,
            "input_ref": None,
            "error": None,
            "code_version": new.code_version,
            "parent_run_id": new.parent_run_id,
            "owner": new.owner,
            "lease_until": new.lease_until,
            "wake_at": None,
            "executions": 1,
            "created_at": now,
            "updated_at": now,
            "claimed_at": now,
            "finished_at": None,
        }
        stmt = self._hot_run
        params = stmt.params(values)

        def insert(cursor: Any, _retried: bool) -> bool:
            # A retried insert that finds its own first one committed inserts nothing and
            # returns False: the slow path then finds the run and hands it back.
            cursor.execute(stmt.sql, params)
            return bool(cursor.rowcount == 1)

        if not self.group.run(True, insert, (stmt.sql, params), _one_row):
            return None
        return self._fresh_info(new, values)

    def _fresh_info(self, new: NewRun, values: dict[str, Any]) -> RunInfo:
        return RunInfo(
            run_id=new.run_id,
            tenant=new.tenant,
            workflow=new.workflow,
            status=new.status,
            queue=new.queue,
            priority=new.priority,
            idempotency_key=new.idempotency_key,
            input=None,  # the caller holds the live value
            output=None,
            error=None,
            code_version=new.code_version,
            parent_run_id=new.parent_run_id,
            owner=new.owner,
            lease_until=new.lease_until,
            wake_at=None,
            executions=1,
            created_at=values["created_at"],
            updated_at=values["updated_at"],
            claimed_at=values["claimed_at"],
            finished_at=None,
        )

    def get_run(self, run_id: str) -> RunInfo:
        with self._read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).one_or_none()
            if row is None:
                raise RunNotFoundError(f"no run with id {run_id!r}")
            return self._run_info(conn, row, strict=False)

    def run_status(self, run_id: str) -> RunStatus:
        with self._read() as conn:
            value = conn.execute(
                sa.select(runs.c.status).where(runs.c.run_id == run_id)
            ).scalar_one_or_none()
        if value is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        return RunStatus(value)

    def list_runs(
        self,
        *,
        status: Sequence[RunStatus] | None = None,
        workflow: str | None = None,
        queue: str | None = None,
        parent_run_id: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunInfo]:
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.run_id)
        if status:
            query = query.where(runs.c.status.in_([s.value for s in status]))
        if workflow is not None:
            query = query.where(runs.c.workflow == workflow)
        if queue is not None:
            query = query.where(runs.c.queue == queue)
        if parent_run_id is not None:
            query = query.where(runs.c.parent_run_id == parent_run_id)
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        with self._read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
            return [self._run_info(conn, row, strict=False) for row in rows]

    def count_runs(self) -> dict[RunStatus, int]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
            ).all()
        return {RunStatus(status): count for status, count in rows}

    # -- steps ------------------------------------------------------------------------------

    def load_steps(self, run_id: str, *, strict: bool = True) -> dict[int, StepInfo]:
        """A run's recorded positions; ``strict=False`` (inspection) tolerates corrupt data."""
        decode = self._decode if strict else self._lenient
        with self._read() as conn:
            rows = conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.seq)
            ).all()
            return {
                row.seq: StepInfo(
                    run_id=row.run_id,
                    seq=row.seq,
                    name=row.name,
                    status=row.status,
                    output=decode(conn, row.output, row.output_ref),
                    error=None if row.error is None else decode(conn, row.error, None),
                    attempts=row.attempts,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    output_ref=row.output_ref,
                )
                for row in rows
            }

    def list_steps(self, run_id: str) -> list[StepInfo]:
        self.get_run(run_id)  # a clear error for an unknown id
        return list(self.load_steps(run_id, strict=False).values())

    def _fence(self, conn: Connection, run_id: str, owner: str, now: float) -> bool:
        """Touch the run if ``owner`` still holds it; False means stop (lost or cancelled)."""
        result = conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status == "RUNNING")
            .values(updated_at=now)
        )
        return result.rowcount == 1

    def _holds(self, run_id: str, owner: str) -> bool:
        with self._read() as conn:
            held = conn.execute(
                sa.select(runs.c.run_id).where(
                    runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status == "RUNNING"
                )
            ).first()
        return held is not None

    def record_step(self, run_id: str, owner: str, step: StepRecord) -> None:
        """Commit one step result; raises :class:`LeaseLost` (nothing written) if ``owner``
        no longer holds the run: it was cancelled or taken over after a missed lease."""
        if step.output_json is None or len(step.output_json) <= self.blob_threshold:
            values = {
                **self._step_values(run_id, step, step.output_json, None),
                "w_run": run_id,
                "w_owner": owner,
                "now": step.finished_at,
            }

            def insert(cursor: Any, retried: bool) -> None:
                try:
                    if self._hot_step_fenced is not None:
                        fenced = self._hot_step_fenced
                        cursor.execute(fenced.sql, fenced.params(values))
                        if cursor.rowcount != 1:
                            raise LeaseLost(run_id)
                        return
                    cursor.execute(self._hot_fence.sql, self._hot_fence.params(values))
                    if cursor.rowcount != 1:
                        raise LeaseLost(run_id)
                    cursor.execute(self._hot_step.sql, self._hot_step.params(values))
                except self._dbapi.IntegrityError:
                    if not self._holds(run_id, owner):
                        # Another executor recorded this position first: it holds the run.
                        raise LeaseLost(run_id) from None
                    if retried:
                        # The first attempt committed before its connection died: only this
                        # execution records new positions of a run it holds.
                        return
                    # The run is still ours, yet its position is taken: no takeover explains
                    # it, so the run fails with the cause rather than be retried for ever.
                    raise StorageError(
                        f"step {step.seq} ({step.name!r}) of run {run_id} could not be "
                        "recorded: that position is already recorded (a constraint of "
                        "aevos_steps refused it)"
                    ) from None

            fenced = self._hot_step_fenced
            if self.backend == "postgresql" and fenced is not None:

                def held(count: int) -> None:
                    if count != 1:
                        raise LeaseLost(run_id)

                # Pipelined: a unique violation fails the pipeline, and the batch then goes
                # again through ``insert``, which handles it.
                self.group.run(True, insert, (fenced.sql, fenced.params(values)), held)
            else:
                self.group.run(False, insert)
            return
        with self._tx() as conn:
            if not self._fence(conn, run_id, owner, step.finished_at):
                raise LeaseLost(run_id)
            text, ref = self._value(conn, step.output_json)
            conn.execute(steps.insert(), self._step_values(run_id, step, text, ref))

    def record_step_with(
        self, run_id: str, owner: str, step: StepRecord, also: Callable[[UnitOfWork], object]
    ) -> None:
        """Commit a step result and ``also(uow)`` (an audit record) in one unit of work, so
        a decision is never recorded without its audit trail or the other way round."""
        with self.transaction() as uow:
            uow.runs.record_step(run_id, owner, step)
            also(uow)

    def record_with(
        self, run_id: str, owner: str, build: Callable[[UnitOfWork, float], StepRecord | None]
    ) -> StepRecord | None:
        """Record at a run's position what ``build(uow, now)`` finds, in one unit of work.

        ``build`` reads (and may write) through the unit of work and returns the step to
        record, or None to record nothing yet (the run keeps waiting). The step is fenced on
        ``owner``'s lease: if the run is no longer theirs this raises :class:`LeaseLost` and
        nothing ``build`` wrote commits.
        """
        now = time.time()
        with self.transaction() as uow:
            step = build(uow, now)
            if step is not None:
                uow.runs.record_step(run_id, owner, step)
            return step

    def finish_run(
        self,
        run_id: str,
        owner: str,
        status: RunStatus,
        *,
        output_json: str | None = None,
        error: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        step: StepRecord | None = None,
    ) -> bool:
        """End a run held by ``owner``; ``step`` is a last step result committed with it.

        False (nothing written) if ``owner`` no longer holds the run.
        """
        now = time.time()
        limit = self.blob_threshold
        small = (output_json is None or len(output_json) <= limit) and (
            step is None or step.output_json is None or len(step.output_json) <= limit
        )
        if small:
            values = {
                "w_run": run_id,
                "w_owner": owner,
                "now": now,
                "run_status": status.value,
                "run_output": output_json,
                "run_error": None if error is None else codec.encode(error, "run error"),
                "parent": parent_run_id,
            }
            if step is not None:
                values.update(self._step_values(run_id, step, step.output_json, None))

            # Retried on a dead connection, a finish that had committed matches no row and
            # returns False: the executor then reads the run's status, as for a lost lease.
            def finish_with_step(cursor: Any, _retried: bool) -> bool:
                assert self._hot_finish_step is not None
                stmt = self._hot_finish_step
                cursor.execute(stmt.sql, stmt.params(values))
                return bool(cursor.rowcount == 1)

            def finish(cursor: Any, _retried: bool) -> bool:
                cursor.execute(self._hot_finish.sql, self._hot_finish.params(values))
                if cursor.rowcount != 1:
                    raise LeaseLost(run_id)
                if step is not None:
                    cursor.execute(self._hot_step.sql, self._hot_step.params(values))
                if parent_run_id is not None:
                    cursor.execute(self._hot_wake.sql, self._hot_wake.params(values))
                return True

            try:
                if step is not None and parent_run_id is None and self._hot_finish_step is not None:
                    stmt = self._hot_finish_step
                    return self.group.run(
                        True, finish_with_step, (stmt.sql, stmt.params(values)), _one_row
                    )
                return self.group.run(step is None and parent_run_id is None, finish)
            except LeaseLost:
                return False
            except self._dbapi.IntegrityError:
                return False  # another executor recorded that position: it holds the run
        with self._tx() as conn:
            text, ref = self._value(conn, output_json)
            result = conn.execute(
                sa.update(runs)
                .where(runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status == "RUNNING")
                .values(
                    status=status.value,
                    output=text,
                    output_ref=ref,
                    error=None if error is None else codec.encode(error, "run error"),
                    owner=None,
                    lease_until=None,
                    wake_at=None,
                    updated_at=now,
                    finished_at=now,
                )
            )
            if result.rowcount != 1:
                return False
            if step is not None:
                step_text, step_ref = self._value(conn, step.output_json)
                conn.execute(steps.insert(), self._step_values(run_id, step, step_text, step_ref))
            if parent_run_id is not None:
                self._wake(conn, parent_run_id, now)
            return True

    def _wake(self, conn: Connection, run_id: str, now: float) -> None:
        # A RUNNING run may be just about to park: the wake-up is remembered in wake_at and
        # park() keeps the earlier time, so it cannot be lost in between. An ENQUEUED run
        # (just resumed) may be claimed while this transaction is still open, and then read
        # what it waits for before this commits: the claim keeps an ENQUEUED run's wake_at
        # (see Claims._taken_by), so its park is woken at once.
        conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == run_id, runs.c.status.in_(_WAKEABLE))
            .values(wake_at=now, updated_at=now)
        )

    def upsert_queue(self, queue: Queue) -> None:
        values = {
            "name": queue.name,
            "concurrency": queue.concurrency,
            "rate_limit": queue.rate_limit,
            "rate_period": queue.rate_period,
            "updated_at": time.time(),
        }
        stmt = self.dialect.insert(queues).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={k: v for k, v in values.items() if k != "name"},
        )
        with self._tx() as conn:
            conn.execute(stmt)

    def ping(self) -> None:
        """Raise StorageUnavailableError if the database cannot be reached."""
        with self._guard(), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def truncate_all(self) -> None:
        """Delete every row (tests and ``aevos reset``); the schema stays."""
        with self._tx() as conn:
            # Every aevos table, children before parents, whatever later revisions add.
            for table in reversed(metadata.sorted_tables):
                conn.execute(sa.delete(table))


def _one_row(count: int) -> bool:
    return count == 1


def open_store(
    url: str, *, migrate: bool = True, blob_threshold: int = DEFAULT_BLOB_THRESHOLD
) -> Store:
    """The store for ``url``; the backend is chosen by the URL's scheme."""
    if not url:
        raise StorageUnavailableError("no database URL given (set AEVOS_DATABASE_URL)")
    return Store(url, migrate=migrate, blob_threshold=blob_threshold)
