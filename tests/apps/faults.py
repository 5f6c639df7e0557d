"""Storage faults as an operator meets them, for the fault tests and ``benchmarks/recovery.py``.

- :class:`PrivatePostgres`: a PostgreSQL server of its own (``initdb`` into a temporary
  directory, on a free port) that a test may restart (``pg_ctl restart -m fast|immediate``)
  without disturbing the shared test database.
- :class:`DiskLimit`: a SQLite database that runs out of space on demand. ``PRAGMA
  max_page_count`` makes SQLite report ``database or disk is full`` (SQLITE_FULL, what a full
  disk reports) on the connection it is set on, so it is set on every connection of the
  engine, the kernel's per-thread ones included.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

_UNLIMITED = 2**30


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs (initdb, pg_ctl), if installed."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(found, "initdb").exists() and Path(found, "pg_ctl").exists():
            return Path(found)
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A throw-away PostgreSQL server; ``url`` reaches its ``postgres`` database."""

    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        self._bin = bin_dir
        # The server refuses to run as root: run it as the postgres account then.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="aevos-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        #: The server's own database; ``url`` may be moved to one made by new_database().
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.url = self.admin_url
        self._databases = 0
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "full_page_writes = off\nmax_connections = 200\n"
            )
        self.start()

    def new_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        self._databases += 1
        name = f"aevos_{self._databases}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self._bin / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def _ctl(self, *args: str) -> None:
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", *args)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> float:
        """``pg_ctl restart -m mode``; returns how long the server was away (seconds)."""
        started = time.monotonic()
        self._ctl("restart", "-m", mode)
        return time.monotonic() - started

    def close(self) -> None:
        with suppress(subprocess.SubprocessError):  # not running
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class DiskLimit:
    """Fills and frees a SQLite database on demand, for every connection of ``engine``.

    Install it before the engine's connections are used by the code under test: it keeps
    every connection checked out from the pool from then on.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        # Strong references (sqlite3 connections take no weak ones): a test's few dozen.
        self._conns: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._limit = _UNLIMITED
        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "checkout", self._on_checkout)

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        self._apply(dbapi_conn, self._limit)
        with self._lock:
            self._conns[id(dbapi_conn)] = dbapi_conn

    def _on_checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        # A pooled connection made before the last fill() or free() takes the limit now.
        self._apply(dbapi_conn, self._limit)
        with self._lock:
            self._conns[id(dbapi_conn)] = dbapi_conn

    @staticmethod
    def _apply(dbapi_conn: Any, limit: int) -> None:
        # A limit below the file's size is raised to it: the next page it needs fails.
        dbapi_conn.execute(f"PRAGMA max_page_count={int(limit)}").fetchall()

    def _set(self, limit: int) -> None:
        self._limit = limit
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            # One closed meanwhile is skipped; a new one gets the limit when it connects.
            with suppress(Exception):
                self._apply(conn, limit)

    def fill(self) -> None:
        """From now on, any write that needs a new page fails as a full disk would."""
        self._set(1)

    def free(self) -> None:
        """Space is back."""
        self._set(_UNLIMITED)

    def close(self) -> None:
        event.remove(self._engine, "connect", self._on_connect)
        event.remove(self._engine, "checkout", self._on_checkout)
