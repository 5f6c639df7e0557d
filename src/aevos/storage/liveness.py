"""Which owners of runs are alive, observed at once instead of a lease later.

A process that executes runs registers its owner name (``aevos_workers``) while holding a
lock that is released the moment the process dies:

- PostgreSQL: a session-level advisory lock, on a connection of its own, that the server
  releases when the session ends (the process died, or its connection dropped);
- SQLite (one host): an exclusive ``flock`` on a file beside the database
  (``<database>-owners/<key>.lock``) that the operating system releases when the process
  dies.

A worker that can take a registered owner's lock knows the owner is gone. Holding that lock,
in one transaction, it forgets the owner and makes the leases of the owner's running runs
lapse; those runs are then claimable at once, by any worker, like any run whose lease lapsed.
The fence is unchanged: a claim sets a run's owner, and every write of an executor is
conditioned on it, so an owner presumed dead that was in fact alive (its connection
dropped) cannot commit. Leases remain what recovers the runs of a process that is alive but
stalled, and of an owner whose lock cannot be observed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import AevosError, StorageUnavailableError
from .schema import runs, workers

if TYPE_CHECKING:
    from .dialect import Dialect

log = logging.getLogger("aevos.liveness")

#: After the PostgreSQL server (re)starts, every session's locks are gone, the live owners'
#: too, until each reconnects and locks again: no owner is judged dead until the server has
#: been up this long (an owner that died across the restart is recovered this much later).
SERVER_START_GRACE = 5.0
#: How soon an owner whose liveness connection dropped tries to lock again.
RECONNECT_EVERY = 0.25


def lock_key(owner: str) -> int:
    """The signed 64-bit key of ``owner``'s lock (an advisory lock key, a file name)."""
    return int.from_bytes(hashlib.sha256(owner.encode()).digest()[:8], "big", signed=True)


class OwnerLock(Protocol):
    """An owner's liveness lock, held until :meth:`close` or the process's death."""

    def close(self, *, forget: bool) -> None:
        """Release it; ``forget`` also unregisters the owner (it holds no runs any more).
        Left registered, the owner's runs are handed back by the next worker that looks."""
        ...


class Owners:
    """A mixin of :class:`~aevos.storage.store.Store`: registering owners, finding the dead."""

    if TYPE_CHECKING:
        dialect: Dialect
        engine: Engine
        backend: str

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _guard(self) -> AbstractContextManager[None]: ...

    #: The locks held through this store, released when it closes (set by the store).
    _owner_locks: weakref.WeakSet[Any]

    def hold_owner(self, owner: str) -> OwnerLock | None:
        """Take ``owner``'s liveness lock, then register it (in that order: a registered
        owner's lock is free only once it is gone). None where liveness cannot be observed
        (an in-memory SQLite database): that owner's runs are recovered by lease alone."""
        key = lock_key(owner)
        held: OwnerLock
        if self.backend == "postgresql":
            held = _SessionLock(self, owner, key)
        else:
            directory = self._lock_directory()
            if directory is None:
                return None
            held = _FileLock(self, owner, key, directory)
        self._owner_locks.add(held)
        return held

    def release_owner_locks(self) -> None:
        """Release every lock held through this store (it is closing), forgetting none."""
        for held in list(self._owner_locks):
            held.close(forget=False)

    def _register_owner(self, owner: str, key: int) -> None:
        values = {"owner": owner, "lock_key": key, "registered_at": time.time()}
        stmt = self.dialect.insert(workers).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["owner"], set_=values)
        with self._tx() as conn:
            conn.execute(stmt)

    def forget_owner(self, owner: str) -> None:
        """Unregister ``owner`` (it stopped, holding no run)."""
        with self._tx() as conn:
            conn.execute(sa.delete(workers).where(workers.c.owner == owner))

    def registered_owners(self) -> list[str]:
        """The owners registered now (alive, or dead and not yet noticed)."""
        with self._read() as conn:
            return list(conn.execute(sa.select(workers.c.owner)).scalars())

    def take_back_dead(self, me: str) -> dict[str, int]:
        """Find the registered owners other than ``me`` whose lock is free, forget them, and
        make their running runs' leases lapse; returns how many runs each one had."""
        if self.backend == "postgresql":
            with self._tx() as conn:
                up = sa.extract("epoch", sa.func.now() - sa.func.pg_postmaster_start_time())
                # The transaction-level lock is held until commit: an owner reconnecting
                # meanwhile waits for it, then registers again after the row is deleted.
                dead = list(
                    conn.execute(
                        sa.select(workers.c.owner).where(
                            workers.c.owner != me,
                            up > SERVER_START_GRACE,
                            sa.func.pg_try_advisory_xact_lock(workers.c.lock_key),
                        )
                    ).scalars()
                )
                return _hand_back(conn, dead) if dead else {}
        directory = self._lock_directory()
        if directory is None:
            return {}
        with self._read() as conn:
            rows = conn.execute(
                sa.select(workers.c.owner, workers.c.lock_key).where(workers.c.owner != me)
            ).all()
        taken: list[_Taken] = []
        try:
            for row in rows:
                found = _try_file(_lock_path(directory, row.lock_key))
                if found is not None:
                    taken.append(_Taken(row.owner, found))
            if not taken:
                return {}
            with self._tx() as conn:
                return _hand_back(conn, [t.owner for t in taken])
        finally:
            for t in taken:
                t.release()

    def _lock_directory(self) -> Path | None:
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        path = Path(database).absolute()
        return path.with_name(path.name + "-owners")


def _hand_back(conn: Connection, dead: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(dead, 0)
    lapsed = conn.execute(
        sa.update(runs)
        .where(runs.c.owner.in_(list(dead)), runs.c.status == "RUNNING")
        # The owner stays: the runs are claimed like any whose lease lapsed, and a claim is
        # what changes the owner every write is fenced on.
        .values(lease_until=0.0)
        .returning(runs.c.owner)
    ).scalars()
    for owner in lapsed:
        counts[owner] += 1
    conn.execute(sa.delete(workers).where(workers.c.owner.in_(list(dead))))
    return counts


def _lock_path(directory: Path, key: int) -> Path:
    return directory / f"{key & 0xFFFFFFFFFFFFFFFF:016x}.lock"


class _Taken:
    """A dead owner's lock file, held by the worker handing its runs back."""

    def __init__(self, owner: str, found: tuple[Path, int | None]) -> None:
        self.owner = owner
        self.path, self.fd = found

    def release(self) -> None:
        if self.fd is None:
            return
        # Removed while still locked: nobody can lock it again and take it for a new owner's.
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)


def _try_file(path: Path) -> tuple[Path, int | None] | None:
    """``(path, fd)`` locked if its owner is gone, ``(path, None)`` if its file is gone
    (created before the owner registered, removed only after it was found dead), None if
    the owner is alive or cannot be told (a file this user may not open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return path, None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return path, fd


# A child forked from a worker (without exec) shares its lock file's open description: it
# would keep a dead parent looking alive. Children close their copy.
_file_locks: weakref.WeakSet[_FileLock] = weakref.WeakSet()


def _close_in_child() -> None:
    for held in list(_file_locks):
        held.forget_in_child()


os.register_at_fork(after_in_child=_close_in_child)


class _FileLock:
    """SQLite: an exclusive ``flock`` on ``<database>-owners/<key>.lock``."""

    def __init__(self, store: Owners, owner: str, key: int, directory: Path) -> None:
        self._store = store
        self._owner = owner
        self._path = _lock_path(directory, key)
        directory.mkdir(mode=0o755, exist_ok=True)
        # Readable by all: other users' workers may probe it (flock needs no write access).
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            store._register_owner(owner, key)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        _file_locks.add(self)

    def forget_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self, *, forget: bool) -> None:
        if self._fd is None:
            return
        if forget:
            try:
                self._store.forget_owner(self._owner)
            except Exception as exc:
                log.warning("owner %s not unregistered: %s", self._owner, exc)
        with contextlib.suppress(OSError):
            self._path.unlink()
        fd, self._fd = self._fd, None
        os.close(fd)


class _SessionLock:
    """PostgreSQL: a session-level advisory lock on a connection of its own, watched by a
    thread that locks again on a new connection when that one drops (a server restart)."""

    def __init__(self, store: Owners, owner: str, key: int) -> None:
        self._store = store
        self._owner = owner
        self._key = key
        self._closed = threading.Event()
        self._mutex = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._conn: Any = self._connect()
        self._thread = threading.Thread(target=self._watch, name="aevos-liveness", daemon=True)
        self._thread.start()

    def _connect(self) -> Any:
        with self._store._guard():
            proxied = self._store.engine.raw_connection()
        conn: Any = proxied.driver_connection
        # Out of the pool: this session lives as long as the lock, and its end is the
        # signal; the pool must never recycle or reset it.
        proxied.detach()
        try:
            conn.autocommit = True  # no transaction left idle around the lock
            conn.execute("SELECT pg_advisory_lock(%s)", (self._key,))
            self._store._register_owner(self._owner, self._key)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.close()
            if isinstance(exc, Exception) and not isinstance(exc, AevosError):
                reason = str(exc).strip().splitlines()
                raise StorageUnavailableError(
                    f"the liveness lock of {self._owner} was not taken: "
                    f"{type(exc).__name__}: {reason[0] if reason else ''}"
                ) from None
            raise
        return conn

    def _watch(self) -> None:
        while not self._closed.is_set():
            conn = self._conn
            if conn is None:
                try:
                    conn = self._connect()
                except Exception as exc:
                    log.debug("owner %s: liveness lock not taken yet: %s", self._owner, exc)
                    self._closed.wait(RECONNECT_EVERY)
                    continue
                with self._mutex:
                    if self._closed.is_set():
                        conn.close()
                        return
                    self._conn = conn
                log.info("owner %s: liveness lock held again", self._owner)
            try:
                ready = select.select([conn.fileno(), self._wake_r], [], [])[0]
            except (OSError, ValueError):
                ready = [None]
            if self._closed.is_set():
                return
            if not ready:
                continue
            try:
                # Reads whatever arrived; raises if the session is gone.
                conn.execute("SELECT 1")
                continue
            except Exception as exc:
                # Info: the outage behind it is the claim loop's and heartbeat's to report.
                log.info(
                    "owner %s: liveness connection lost (%s); locking again",
                    self._owner,
                    type(exc).__name__,
                )
            with self._mutex:
                with contextlib.suppress(Exception):
                    conn.close()
                self._conn = None
            self._closed.wait(RECONNECT_EVERY)

    def close(self, *, forget: bool) -> None:
        if self._closed.is_set():
            return
        if forget:
            try:
                self._store.forget_owner(self._owner)
            except Exception as exc:
                log.warning("owner %s not unregistered: %s", self._owner, exc)
        self._closed.set()
        os.write(self._wake_w, b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
