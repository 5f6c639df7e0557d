"""The database's health as an operator checks it (``aevos doctor``): can it be reached, is
its schema this aevos's, how big is it, how big is its write-ahead log, and is there room
beside it for the log to be checkpointed.

In WAL mode SQLite writes committed pages to the ``-wal`` file and copies them into the
database file at a checkpoint, which can grow the database file by up to the log's size.
With less free space than that on the database's file system the checkpoint fails and the
log cannot be emptied: freeing a little space after a full disk is not enough. PostgreSQL's
log lives on the server; its size is read when the role may (superuser or ``pg_monitor``),
and its free space is not visible over SQL.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import AevosError
from .dialect import classified, dialect_for, parse_url, redact_url
from .migration import current_revision, head_revision
from .repository import StoreHandle


@dataclass(frozen=True)
class StorageHealth:
    """What ``aevos doctor`` reports; None where a figure cannot be known."""

    url: str  # password hidden
    backend: str
    reachable: bool
    error: str | None = None  # why it is not reachable
    latency_seconds: float | None = None  # one round trip (SELECT 1)
    revision: str | None = None  # the schema's Alembic revision (None: no schema yet)
    head: str = field(default_factory=head_revision)  # this aevos's newest revision
    size_bytes: int | None = None
    wal_bytes: int | None = None
    free_bytes: int | None = None  # on the database's file system (SQLite only)
    warnings: tuple[str, ...] = ()

    @property
    def schema_current(self) -> bool:
        return self.revision == self.head

    @property
    def ok(self) -> bool:
        return self.reachable and self.schema_current and not self.warnings

    def to_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "backend": self.backend,
            "reachable": self.reachable,
            "error": self.error,
            "latency_seconds": self.latency_seconds,
            "revision": self.revision,
            "head": self.head,
            "schema_current": self.schema_current,
            "size_bytes": self.size_bytes,
            "wal_bytes": self.wal_bytes,
            "free_bytes": self.free_bytes,
            "warnings": list(self.warnings),
            "ok": self.ok,
        }


def check_storage(url: str) -> StorageHealth:
    """The health of the database at ``url``; never raises for a database that is down."""
    parsed = parse_url(url)
    dialect = dialect_for(parsed)
    safe = redact_url(parsed)
    engine = dialect.create_engine(parsed)
    try:
        return _check(engine, dialect.name, safe, parsed.database)
    finally:
        engine.dispose()


def store_health(store: StoreHandle) -> StorageHealth:
    """The health of an open store's database, through its own engine (a scrape)."""
    return _check(store.engine, store.backend, store.safe_url, store.engine.url.database)


def _check(engine: Engine, backend: str, safe: str, database: str | None) -> StorageHealth:
    files = _sqlite_files(database) if backend == "sqlite" else None
    size = wal = free = None
    if files is not None:
        size, wal, free = files
    try:
        with classified(dialect_for(engine.url), safe):
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                latency = time.perf_counter() - started
            revision = current_revision(engine)
            if backend == "postgresql":
                size, wal = _postgres_sizes(engine)
    except AevosError as exc:
        return StorageHealth(
            safe,
            backend,
            False,
            error=f"[{exc.code}] {exc.message}",
            size_bytes=size,
            wal_bytes=wal,
            free_bytes=free,
            warnings=_warnings(wal, free),
        )
    return StorageHealth(
        safe,
        backend,
        True,
        latency_seconds=latency,
        revision=revision,
        size_bytes=size,
        wal_bytes=wal,
        free_bytes=free,
        warnings=_warnings(wal, free),
    )


def _sqlite_files(database: str | None) -> tuple[int | None, int | None, int | None] | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    size = path.stat().st_size if path.exists() else None
    wal_path = Path(f"{database}-wal")
    wal = wal_path.stat().st_size if wal_path.exists() else 0
    folder = path.parent if path.parent.exists() else Path(os.getcwd())
    free = shutil.disk_usage(folder).free
    return size, wal, free


def _postgres_sizes(engine: Engine) -> tuple[int | None, int | None]:
    with engine.connect() as conn:
        size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
    try:
        with engine.connect() as conn:
            wal = conn.execute(
                sa.text("SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()")
            ).scalar()
    except sa.exc.DBAPIError:
        wal = None  # the role may not list the log (superuser or pg_monitor only)
    return (None if size is None else int(size)), (None if wal is None else int(wal))


def _warnings(wal: int | None, free: int | None) -> tuple[str, ...]:
    if wal is None or free is None:
        return ()
    if free < wal:
        return (
            f"free space beside the database ({_mb(free)}) is less than its write-ahead log "
            f"({_mb(wal)}): a checkpoint cannot complete and writes will fail as on a full "
            "disk; free at least the log's size",
        )
    return ()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
