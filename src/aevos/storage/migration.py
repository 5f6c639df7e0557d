"""Versioned schema migrations (Alembic), applied programmatically.

The revision in ``alembic_version`` tells us where a database stands: missing means a new
database; a revision this code does not know means the database was migrated by a newer
aevos, and we refuse to touch it rather than corrupt it.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from ..errors import SchemaError
from .dialect import classified, dialect_for, parse_url, redact_url

_MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine, *, migrate: bool, url: str) -> None:
    """Bring the schema to head (``migrate=True``) or check that it is there already."""
    script = ScriptDirectory.from_config(_config())
    head = script.get_current_head()
    current = current_revision(engine)
    if current == head:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise SchemaError(
            f"the database {url} is at schema revision {current!r}, which this aevos does not "
            f"know (newest known: {head!r}); it was migrated by a newer aevos, so upgrade aevos"
        )
    if current is None:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        if any(name.startswith("aevos_") for name in tables):
            raise SchemaError(
                f"the database {url} has aevos tables but no schema revision: it is corrupt or "
                "was created by hand; restore it from a backup or point aevos at a new database"
            )
    if not migrate:
        raise SchemaError(
            f"the database {url} is at schema revision {current!r}, this aevos needs {head!r}; "
            "run `aevos migrate` first"
        )
    upgrade(engine)


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting together on a new database: one migrates, the rest wait and
            # then find it done. (On SQLite, BEGIN IMMEDIATE serialises them already.)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7263540021)"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def migrate(url: str) -> tuple[str | None, str]:
    """Bring the database at ``url`` to this aevos's newest revision, opening nothing else
    (``aevos migrate``). Returns the revision before (None: a new database) and after.

    ValueError if the URL cannot be parsed (it is not quoted); storage errors as the aevos
    errors they mean.
    """
    parsed = parse_url(url)
    dialect = dialect_for(parsed)
    safe = redact_url(parsed)
    engine = dialect.create_engine(parsed)
    try:
        with classified(dialect, safe):
            before = current_revision(engine)
            ensure_schema(engine, migrate=True, url=safe)
            after = current_revision(engine)
    finally:
        engine.dispose()
    assert after is not None  # ensure_schema left it at head
    return before, after
