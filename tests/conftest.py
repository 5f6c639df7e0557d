"""Fixtures shared by every test.

``database_url`` is parametrised over both backends, so any test that takes it (or the
``app`` fixture built on it) is a contract test run on SQLite and on PostgreSQL. SQLite gets
a fresh file per test; PostgreSQL is reset by truncation, after its aevos tables are dropped
once per session (a database kept from an earlier run may hold an older draft of a migration
that has not been released, whose revision id alembic would take as current). Outside CI a test on PostgreSQL
skips when the server is unreachable; in CI (``CI=true``) it fails instead: those tests must
run there.

The suite runs in parallel (pytest-xdist, ``-n`` in pyproject.toml's addopts): each xdist
worker gets its own PostgreSQL database beside the configured one (``test`` becomes
``test_gw0``, ``test_gw1``, ...), created on first use, because a worker drops and truncates
the aevos tables of the database it owns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from aevos import Aevos
from aevos.storage import open_store

BASE_POSTGRES_URL = os.environ.get(
    "AEVOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _worker_database_url(base: str, worker: str) -> str:
    """The base URL with this xdist worker's database name (the base itself when serial)."""
    if not worker:
        return base
    parts = urlsplit(base)
    name = parts.path.lstrip("/") or "postgres"
    return urlunsplit(parts._replace(path=f"/{name}_{worker}"))


POSTGRES_URL = _worker_database_url(BASE_POSTGRES_URL, XDIST_WORKER)

_pg_state: dict[str, object] = {}


def postgres_available() -> bool:
    if "ok" not in _pg_state:
        try:
            import psycopg

            _create_worker_database()
            with psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True) as conn:
                _drop_aevos_tables(conn)
                _pg_state["ok"] = True
        except Exception as exc:
            _pg_state["ok"] = False
            _pg_state["why"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return bool(_pg_state["ok"])


def _create_worker_database() -> None:
    """Create this xdist worker's database on the server of the configured one."""
    if POSTGRES_URL == BASE_POSTGRES_URL:
        return
    import psycopg
    from psycopg import sql

    name = urlsplit(POSTGRES_URL).path.lstrip("/")
    with psycopg.connect(BASE_POSTGRES_URL, connect_timeout=3, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            # Another session's worker of the same number may make it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_aevos_tables(conn: object) -> None:
    """Start the session on an empty schema: the suite owns this database."""
    from psycopg import Connection, sql

    assert isinstance(conn, Connection)
    names = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND (tablename LIKE 'aevos%' OR tablename = 'alembic_version')"
        )
    ]
    for name in names:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def require_postgres() -> str:
    if not postgres_available():
        message = f"PostgreSQL unreachable at {POSTGRES_URL}: {_pg_state.get('why')}"
        if IN_CI:
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message)
    return POSTGRES_URL


def reset_postgres(url: str) -> None:
    store = open_store(url)
    try:
        store.truncate_all()
    finally:
        store.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A truncated PostgreSQL database (backend-only tests take this directly)."""
    url = require_postgres()
    reset_postgres(url)
    yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aevos.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aevos.db'}"
    else:
        url = require_postgres()
        reset_postgres(url)
        yield url


@pytest.fixture
def app(database_url: str) -> Iterator[Aevos]:
    """A fresh app on the parametrised backend, with short timings for tests."""
    application = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    yield application
    application.close()


@pytest.fixture
def make_app(database_url: str) -> Iterator[object]:
    """Factory for more apps on the same database (other processes' view of it)."""
    apps: list[Aevos] = []

    def factory(**options: object) -> Aevos:
        defaults: dict[str, object] = {
            "lease_seconds": 2.0,
            "park_after": 0.3,
            "poll_interval": 0.02,
        }
        defaults.update(options)
        application = Aevos(database_url, **defaults)  # type: ignore[arg-type]
        apps.append(application)
        return application

    yield factory
    for application in apps:
        application.close()
