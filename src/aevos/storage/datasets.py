"""Dataset versions: the datasets repository.

A version is inserted once under its digest (the SHA-256 of its canonical rows, computed by
the caller) and never changed; inserting the same digest again is a no-op that returns the
version already stored, so the same rows are one version.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.label import DatasetInfo, DatasetRow, LabelSource
from .repository import Repository
from .schema import dataset_rows, datasets

# Rows inserted (and read back) per statement.
_BATCH = 1000


def info_of(row: Any) -> DatasetInfo:
    return DatasetInfo(
        digest=row.digest,
        tenant=row.tenant,
        model=row.model,
        rows=int(row.row_count),
        runs=int(row.runs),
        people=int(row.people),
        unbiased=int(row.unbiased),
        sources=dict(codec.decode(row.sources)),
        until=row.until,
        created_at=float(row.created_at),
        created_by=row.created_by,
    )


def row_of(row: Any) -> DatasetRow:
    return DatasetRow(
        case_id=row.case_id,
        label=codec.decode(row.label),
        source=LabelSource(row.source),
        unbiased=bool(row.unbiased),
        run_id=row.run_id,
        actor=row.actor,
        labelled_at=float(row.labelled_at),
    )


class DatasetRepository(Repository):
    """Content-addressed dataset versions and their rows."""

    def get(self, tenant: str, digest: str) -> DatasetInfo | None:
        row = self.conn.execute(
            sa.select(datasets).where(datasets.c.tenant == tenant, datasets.c.digest == digest)
        ).first()
        return None if row is None else info_of(row)

    def insert(self, info: DatasetInfo, rows: Sequence[DatasetRow]) -> tuple[DatasetInfo, bool]:
        """Store a version unless its digest is stored already. Returns the version stored
        and whether this call stored it."""
        existing = self.get(info.tenant, info.digest)
        if existing is not None:
            return existing, False
        self.conn.execute(
            datasets.insert(),
            {
                "tenant": info.tenant,
                "digest": info.digest,
                "model": info.model,
                "row_count": info.rows,
                "runs": info.runs,
                "people": info.people,
                "unbiased": info.unbiased,
                "sources": codec.encode(info.sources, "sources"),
                "until": info.until,
                "created_at": info.created_at,
                "created_by": info.created_by,
            },
        )
        for start in range(0, len(rows), _BATCH):
            self.conn.execute(
                dataset_rows.insert(),
                [
                    {
                        "tenant": info.tenant,
                        "digest": info.digest,
                        "position": start + i,
                        "case_id": r.case_id,
                        "label": codec.encode(r.label, "label"),
                        "source": r.source.value,
                        "unbiased": int(r.unbiased),
                        "run_id": r.run_id,
                        "actor": r.actor,
                        "labelled_at": r.labelled_at,
                    }
                    for i, r in enumerate(rows[start : start + _BATCH])
                ],
            )
        return info, True

    def find(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DatasetInfo]:
        """The tenant's versions, newest first."""
        query = sa.select(datasets).where(datasets.c.tenant == tenant)
        if model is not None:
            query = query.where(datasets.c.model == model)
        query = query.order_by(datasets.c.created_at.desc(), datasets.c.digest)
        return [info_of(row) for row in self.conn.execute(query.limit(limit).offset(offset))]

    def rows(
        self, tenant: str, digest: str, *, start: int = 0, limit: int | None = None
    ) -> list[DatasetRow]:
        """A version's rows in canonical order, from position ``start``."""
        c = dataset_rows.c
        query = (
            sa.select(dataset_rows)
            .where(c.tenant == tenant, c.digest == digest, c.position >= start)
            .order_by(c.position)
        )
        if limit is not None:
            query = query.limit(limit)
        return [row_of(row) for row in self.conn.execute(query)]

    def iter_rows(self, tenant: str, digest: str) -> Iterator[list[DatasetRow]]:
        """A version's rows, a page at a time (a large version is never all in memory)."""
        start = 0
        while True:
            page = self.rows(tenant, digest, start=start, limit=_BATCH)
            if not page:
                return
            yield page
            start += len(page)
