"""The model registry's rows: models, their immutable versions, aliases and artifacts.

What a version means (its card, flavor, config) is :mod:`aevos.models.registry`'s business;
this repository stores rows and hands them back as plain mappings. A write to a model locks
its row first (:meth:`ModelRepository.lock`: ``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's write transaction holds the database lock already), so concurrent registrations
number their versions without gaps or collisions, and the lock order (the model's row, then
the audit head) is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .repository import Repository, StoreHandle
from .schema import blobs, model_aliases, model_versions, models

Row = Mapping[str, Any]


class _Sql:
    def __init__(self, store: StoreHandle) -> None:
        self.insert_blob = store.dialect.insert(blobs).on_conflict_do_nothing(
            index_elements=["ref"]
        )
        self.insert_model = store.dialect.insert(models).on_conflict_do_nothing(
            index_elements=["tenant", "name"]
        )


def _mapping(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class ModelRepository(Repository):
    """Models, versions, aliases and artifact bytes, in the unit of work it is bound to."""

    @property
    def _sql(self) -> _Sql:
        return self.uow.prepared(_Sql)

    # -- models and their lock ------------------------------------------------------------------

    def ensure(self, tenant: str, name: str, owner: str, now: float) -> None:
        """Create the model's row unless it exists."""
        self.conn.execute(
            self._sql.insert_model,
            {"tenant": tenant, "name": name, "owner": owner, "created_at": now, "updated_at": now},
        )

    def lock(self, tenant: str, name: str) -> bool:
        """Lock the model's row until the unit of work ends; False if there is no model."""
        m = models.c
        row = self.conn.execute(
            sa.select(m.name).where(m.tenant == tenant, m.name == name).with_for_update()
        ).first()
        return row is not None

    def touch(self, tenant: str, name: str, now: float) -> None:
        self.conn.execute(
            sa.update(models)
            .where(models.c.tenant == tenant, models.c.name == name)
            .values(updated_at=now)
        )

    def names(self, tenant: str, only: str | None = None) -> list[str]:
        """The tenant's model names, sorted (``only``: that name, if it exists)."""
        m = models.c
        query = sa.select(m.name).where(m.tenant == tenant).order_by(m.name)
        if only is not None:
            query = query.where(m.name == only)
        return [str(name) for name in self.conn.execute(query).scalars()]

    # -- versions -------------------------------------------------------------------------------

    def store_artifact(self, digest: str, data: bytes, now: float) -> None:
        """Store artifact bytes under their sha256 ``digest`` (once: content-addressed)."""
        self.conn.execute(
            self._sql.insert_blob,
            {"ref": digest, "data": data, "size": len(data), "created_at": now},
        )

    def artifact(self, digest: str) -> bytes | None:
        """The bytes stored under ``digest``; None if there are none."""
        data = self.conn.execute(
            sa.select(blobs.c.data).where(blobs.c.ref == digest)
        ).scalar_one_or_none()
        return None if data is None else bytes(data)

    def same_version(
        self, tenant: str, name: str, digest: str, flavor: str, config_json: str
    ) -> Row | None:
        """The oldest version of ``name`` with this artifact, flavor and config."""
        v = model_versions.c
        row = self.conn.execute(
            sa.select(model_versions)
            .where(v.tenant == tenant, v.name == name, v.digest == digest)
            .where(v.flavor == flavor, v.config == config_json)
            .order_by(v.version)
            .limit(1)
        ).first()
        return None if row is None else _mapping(row)

    def next_number(self, tenant: str, name: str) -> int:
        """One past the highest version number of ``name`` (1 for the first)."""
        v = model_versions.c
        highest = sa.select(sa.func.coalesce(sa.func.max(v.version), 0)).where(
            v.tenant == tenant, v.name == name
        )
        return 1 + int(self.conn.execute(highest).scalar_one())

    def add_version(self, row: Row) -> None:
        """Insert a version (every column of ``aevos_model_versions``)."""
        self.conn.execute(model_versions.insert().values(dict(row)))

    def version(self, tenant: str, name: str, ref: int | str) -> Row | None:
        """The version ``ref`` names: a number, ``"latest"`` (the highest) or an alias."""
        v, a = model_versions.c, model_aliases.c
        query = sa.select(model_versions).where(v.tenant == tenant, v.name == name)
        if isinstance(ref, int):
            query = query.where(v.version == ref)
        elif ref == "latest":
            query = query.order_by(v.version.desc()).limit(1)
        else:
            # One round trip: the alias and the version it names.
            query = query.join(
                model_aliases,
                sa.and_(a.tenant == v.tenant, a.name == v.name, a.version == v.version),
            ).where(a.alias == ref)
        row = self.conn.execute(query).first()
        return None if row is None else _mapping(row)

    def versions(self, tenant: str, name: str) -> list[Row]:
        """Every version of ``name``, oldest first."""
        v = model_versions.c
        rows = self.conn.execute(
            sa.select(model_versions).where(v.tenant == tenant, v.name == name).order_by(v.version)
        )
        return [_mapping(row) for row in rows]

    def numbers(self, tenant: str, name: str) -> list[int]:
        """The version numbers of ``name``, ascending."""
        v = model_versions.c
        numbers = self.conn.execute(
            sa.select(v.version).where(v.tenant == tenant, v.name == name).order_by(v.version)
        ).scalars()
        return [int(n) for n in numbers]

    def set_tags(self, tenant: str, name: str, version: int, tags_json: str) -> None:
        v = model_versions.c
        self.conn.execute(
            sa.update(model_versions)
            .where(v.tenant == tenant, v.name == name, v.version == version)
            .values(tags=tags_json)
        )

    # -- aliases --------------------------------------------------------------------------------

    def aliases(self, tenant: str, name: str) -> list[Row]:
        """Every alias row of ``name`` (alias, version, previous_version, updated_by,
        updated_at), by alias."""
        a = model_aliases.c
        rows = self.conn.execute(
            sa.select(model_aliases).where(a.tenant == tenant, a.name == name).order_by(a.alias)
        )
        return [_mapping(row) for row in rows]

    def alias(self, tenant: str, name: str, alias: str) -> Row | None:
        """The alias's row; None if ``name`` has no such alias."""
        a = model_aliases.c
        row = self.conn.execute(
            sa.select(model_aliases).where(a.tenant == tenant, a.name == name, a.alias == alias)
        ).first()
        return None if row is None else _mapping(row)

    def alias_version(self, tenant: str, name: str, alias: str) -> int | None:
        """The version ``alias`` names now; None if it names none."""
        row = self.alias(tenant, name, alias)
        return None if row is None else int(row["version"])

    def point(
        self,
        tenant: str,
        name: str,
        alias: str,
        version: int,
        *,
        previous: int | None,
        by: str,
        now: float,
    ) -> None:
        """Point ``alias`` at ``version``, remembering ``previous``: where it pointed, or
        None for an alias that does not exist yet (it is created)."""
        a = model_aliases.c
        values: dict[str, Any] = {"version": version, "previous_version": previous}
        values |= {"updated_by": by, "updated_at": now}
        if previous is None:
            self.conn.execute(
                model_aliases.insert().values(tenant=tenant, name=name, alias=alias, **values)
            )
            return
        self.conn.execute(
            sa.update(model_aliases)
            .where(a.tenant == tenant, a.name == name, a.alias == alias)
            .values(values)
        )

    def roll_back(
        self, tenant: str, name: str, alias: str, version: int, *, by: str, now: float
    ) -> None:
        """Point ``alias`` back at ``version`` (its previous one) and forget that: a second
        rollback has nothing to return to."""
        a = model_aliases.c
        self.conn.execute(
            sa.update(model_aliases)
            .where(a.tenant == tenant, a.name == name, a.alias == alias)
            .values(version=version, previous_version=None, updated_by=by, updated_at=now)
        )
