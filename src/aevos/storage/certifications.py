"""Certifications: a model version's certified automation thresholds, appended, never updated.

The latest row of a version (the highest id) is the certification in force; the older rows
are its history. The gateway asks for the latest threshold of the version that answered a
call (:meth:`CertificationRepository.threshold`, one indexed lookup, cached by the gateway
for a few seconds); the console asks for the latest of every version of a model at once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.certification import CertificationRecord
from .repository import Repository
from .schema import certifications


def certification_of(row: Any) -> CertificationRecord:
    return CertificationRecord(
        id=int(row.id),
        tenant=row.tenant,
        model=row.model,
        version=int(row.version),
        target=float(row.target),
        delta=float(row.delta),
        method=row.method,
        n=int(row.n),
        errors=int(row.errors),
        threshold=None if row.threshold is None else float(row.threshold),
        p_value=None if row.p_value is None else float(row.p_value),
        dataset=row.dataset,
        created_by=row.created_by,
        created_at=float(row.created_at),
        evidence=codec.decode(row.evidence),
    )


class CertificationRepository(Repository):
    """Certification records, in the unit of work it is bound to."""

    def insert(self, record: CertificationRecord) -> CertificationRecord:
        """Append ``record`` (its ``id`` is ignored: the database numbers it); returns it as
        stored."""
        values = record.to_json()
        for key in ("id", "certified"):
            values.pop(key)
        values["evidence"] = codec.encode(dict(record.evidence), "the certification's evidence")
        new_id = self.conn.execute(
            certifications.insert().returning(certifications.c.id), values
        ).scalar_one()
        row = self.conn.execute(
            sa.select(certifications).where(certifications.c.id == new_id)
        ).one()
        return certification_of(row)

    def latest(self, tenant: str, model: str, version: int) -> CertificationRecord | None:
        """The certification in force for ``model@version``; None if it has none."""
        c = certifications.c
        row = self.conn.execute(
            sa.select(certifications)
            .where(c.tenant == tenant, c.model == model, c.version == version)
            .order_by(c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else certification_of(row)

    def threshold(self, tenant: str, model: str, version: int) -> tuple[bool, float | None]:
        """``(found, threshold)`` of the latest certification of ``model@version``: what
        the gateway serves, in one indexed lookup of one column."""
        c = certifications.c
        row = self.conn.execute(
            sa.select(c.threshold)
            .where(c.tenant == tenant, c.model == model, c.version == version)
            .order_by(c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return False, None
        return True, None if row.threshold is None else float(row.threshold)

    def latest_by_version(self, tenant: str, model: str) -> dict[int, CertificationRecord]:
        """The certification in force of every certified version of ``model``, by version."""
        c = certifications.c
        newest = (
            sa.select(sa.func.max(c.id))
            .where(c.tenant == tenant, c.model == model)
            .group_by(c.version)
            .scalar_subquery()
        )
        rows = self.conn.execute(
            sa.select(certifications).where(c.tenant == tenant, c.model == model, c.id.in_(newest))
        )
        return {int(row.version): certification_of(row) for row in rows}

    def history(
        self, tenant: str, model: str, *, version: int | None = None, limit: int = 100
    ) -> list[CertificationRecord]:
        """Certifications of ``model`` (of one ``version``, or all), newest first."""
        c = certifications.c
        query = sa.select(certifications).where(c.tenant == tenant, c.model == model)
        if version is not None:
            query = query.where(c.version == version)
        rows = self.conn.execute(query.order_by(c.id.desc()).limit(limit))
        return [certification_of(row) for row in rows]
