"""Dataset versions (``app.datasets``): immutable, content-addressed snapshots of labels.

``snapshot(model, tenant=...)`` takes, for every labelled case of ``model``, the label it has
(:func:`aevos.records.label.effective`: ground truth first, then the latest), with its
lineage — the run the case came from and the person (or system) who gave the label — and
stores them as a version whose ``digest`` is the SHA-256 of the model's name and its rows in
canonical order (by labelling time, then case id). The same rows are the same version,
stored once; a new label makes a new version and leaves the old ones as they were. Versions
are listed, shown and exported (CSV always; Parquet when pyarrow is installed, the
``parquet`` extra) by Python, ``aevos datasets ...`` and ``/v1/datasets``.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import codec
from ..audit import AuditEvent
from ..errors import DatasetError, DatasetNotFoundError, ExportFormatError
from ..records.label import DatasetInfo, DatasetRow
from .dataset import Dataset

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..cases import KeptCase, KeptCases
    from ..storage import Store

MAX_LIMIT = 1000
EXPORT_FORMATS = ("csv", "parquet")
#: The columns of an export, in order (``text`` last, when asked for).
COLUMNS = ("case_id", "label", "source", "unbiased", "run_id", "actor", "labelled_at")
_DIGEST_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class DatasetVersion:
    """A dataset version and its rows (see :class:`~aevos.records.label.DatasetInfo`)."""

    info: DatasetInfo
    rows: tuple[DatasetRow, ...]

    @property
    def digest(self) -> str:
        return self.info.digest

    @property
    def model(self) -> str:
        return self.info.model

    @property
    def tenant(self) -> str:
        return self.info.tenant

    def __len__(self) -> int:
        return len(self.rows)

    def case_ids(self) -> builtins.list[str]:
        return [row.case_id for row in self.rows]

    def to_training(
        self, cases: Mapping[str, KeptCase], *, text_field: str | None = None
    ) -> Dataset:
        """The rows as a recipe trains on them: (text, label, time), in the version's order.

        ``cases`` maps case ids to kept cases (``app.cases.open_many(tenant, ids)``). The text
        is the case's input as kept (tokenised by the data policy): the input itself when
        it is a string, else its ``text_field``. The time is when the case happened (the
        model call), so a split by time holds out the most recent traffic; ``unbiased``
        says which rows may certify (their cases were put to a person at random). Rows whose case
        is no longer kept (expired, forgotten) are left out; ``len`` tells how many remain.
        """
        texts: builtins.list[str] = []
        labels: builtins.list[Any] = []
        times: builtins.list[float] = []
        unbiased: builtins.list[bool] = []
        for row in self.rows:
            case = cases.get(row.case_id)
            if case is None:
                continue
            texts.append(case_text(case.input, text_field, row.case_id))
            labels.append(row.label)
            times.append(case.created_at)
            unbiased.append(bool(row.unbiased))
        if not texts:
            raise DatasetError(
                f"none of the {len(self.rows)} cases of dataset {self.digest[:12]} is kept"
            )
        return Dataset(tuple(texts), tuple(labels), tuple(times), tuple(unbiased))


def case_text(value: Any, text_field: str | None, case_id: str) -> str:
    """The text of a kept case's input: the string itself, or its ``text_field``."""
    if text_field is not None:
        if not isinstance(value, Mapping) or not isinstance(value.get(text_field), str):
            raise DatasetError(f"case {case_id}: the input has no text field {text_field!r}")
        return str(value[text_field])
    if isinstance(value, str):
        return value
    raise DatasetError(
        f"case {case_id}: the input is a {type(value).__name__}; name its text_field"
    )


def digest_of(model: str, rows: builtins.list[DatasetRow]) -> str:
    """The content address of a version: its model and its canonical rows."""
    return codec.digest({"model": model, "rows": [row.canonical() for row in rows]})


class Datasets:
    """Dataset versions of a tenant's models (``app.datasets``); ungoverned, like
    ``app.tasks`` (requests with a token go through :class:`~aevos.access.Access`)."""

    def __init__(self, store: Store, audit: AuditLog, cases: Callable[[], KeptCases]) -> None:
        self.store = store
        self.audit = audit
        self._cases = cases

    def training_data(
        self, digest: str, *, tenant: str = "default", text_field: str | None = None
    ) -> Dataset:
        """The version as training data (:meth:`DatasetVersion.to_training`): the kept
        input of each case (decrypted), its label, and when it happened."""
        version = self.get(digest, tenant=tenant)
        cases = self._cases().open_many(tenant, version.case_ids())
        return version.to_training(cases, text_field=text_field)

    def snapshot(
        self,
        model: str,
        *,
        tenant: str = "default",
        until: float | None = None,
        actor: str = "system:datasets",
    ) -> DatasetVersion:
        """The current labels of ``model``'s cases (labelled at or before ``until``) as a
        version: the one already stored if the rows are the same, else a new one, audited
        as ``dataset.created``. A model with no labelled case is a DatasetError."""
        if not isinstance(model, str) or not 0 < len(model) <= 200:
            raise DatasetError("a dataset's model is a name of 1 to 200 characters")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int | float)):
            raise DatasetError("until must be epoch seconds")
        with self.store.transaction() as uow:
            rows = uow.labels.effective_rows(tenant, model, until)
            if not rows:
                raise DatasetError(f"model {model!r} has no labelled cases to snapshot")
            info = DatasetInfo(
                digest=digest_of(model, rows),
                tenant=tenant,
                model=model,
                rows=len(rows),
                runs=len({r.run_id for r in rows if r.run_id is not None}),
                people=len({r.actor for r in rows}),
                unbiased=sum(r.unbiased for r in rows),
                sources=dict(sorted(Counter(r.source.value for r in rows).items())),
                until=until,
                created_at=time.time(),
                created_by=actor,
            )
            stored, created = uow.datasets.insert(info, rows)
            if created:
                self.audit.append(
                    AuditEvent(
                        action="dataset.created",
                        actor=actor,
                        tenant=tenant,
                        subject=f"dataset:{info.digest}",
                        data={
                            "model": model,
                            "rows": info.rows,
                            "runs": info.runs,
                            "people": info.people,
                            "unbiased": info.unbiased,
                            "sources": info.sources,
                            "until": until,
                        },
                    ),
                    uow=uow,
                )
        return DatasetVersion(stored, tuple(rows))

    def info(self, digest: str, *, tenant: str = "default") -> DatasetInfo:
        """A version without its rows (DatasetNotFoundError if the tenant has none)."""
        _check_digest(digest)
        with self.store.reading() as uow:
            found = uow.datasets.get(tenant, digest)
        if found is None:
            raise DatasetNotFoundError(f"no dataset version {digest!r}")
        return found

    def get(self, digest: str, *, tenant: str = "default") -> DatasetVersion:
        """A version with its rows."""
        _check_digest(digest)
        with self.store.reading() as uow:
            found = uow.datasets.get(tenant, digest)
            if found is None:
                raise DatasetNotFoundError(f"no dataset version {digest!r}")
            return DatasetVersion(found, tuple(uow.datasets.rows(tenant, digest)))

    def list(
        self,
        *,
        tenant: str = "default",
        model: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[DatasetInfo]:
        """The tenant's versions (of ``model``), newest first."""
        with self.store.reading() as uow:
            return uow.datasets.find(
                tenant, model=model, limit=min(limit, MAX_LIMIT), offset=offset
            )

    def export(
        self,
        digest: str,
        *,
        tenant: str = "default",
        format: str = "csv",
        text: bool = False,
        text_field: str | None = None,
    ) -> Iterator[bytes]:
        """A version's rows as a file, in chunks: ``csv`` (UTF-8, a header row, a page of
        rows per chunk) or ``parquet`` (one chunk; needs pyarrow). With ``text`` a last
        column holds each case's kept input (as kept: tokenised; its ``text_field`` if
        given, else the input as text or JSON; empty when the case is no longer kept). The
        format is checked and the version found before the first chunk, so errors come
        before any bytes."""
        if format not in EXPORT_FORMATS:
            raise ExportFormatError(
                f"unknown export format {format!r}; known: {', '.join(EXPORT_FORMATS)}"
            )
        if format == "parquet":
            pa, pq = _pyarrow()
        self.info(digest, tenant=tenant)
        texts = self._texts(tenant, text_field) if text else None
        if format == "parquet":
            version = self.get(digest, tenant=tenant)
            column = None if texts is None else texts(list(version.rows))
            return iter([_parquet(version.rows, column, pa, pq)])
        return self._csv(digest, tenant, texts)

    def _texts(
        self, tenant: str, text_field: str | None
    ) -> Callable[[builtins.list[DatasetRow]], builtins.list[str]]:
        def texts(rows: builtins.list[DatasetRow]) -> builtins.list[str]:
            kept = self._cases().open_many(tenant, [r.case_id for r in rows])
            return [_export_text(kept.get(r.case_id), text_field) for r in rows]

        return texts

    def _csv(
        self,
        digest: str,
        tenant: str,
        texts: Callable[[builtins.list[DatasetRow]], builtins.list[str]] | None,
    ) -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS if texts is None else (*COLUMNS, "text"))
        with self.store.reading() as uow:
            # One snapshot for the whole file; a page of rows in memory at a time.
            for page in uow.datasets.iter_rows(tenant, digest):
                column = None if texts is None else texts(page)
                for i, row in enumerate(page):
                    cells = _csv_row(row)
                    writer.writerow(cells if column is None else [*cells, column[i]])
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()


def _export_text(case: KeptCase | None, text_field: str | None) -> str:
    if case is None:
        return ""
    value = case.input
    if text_field is not None:
        value = value.get(text_field) if isinstance(value, Mapping) else None
        return value if isinstance(value, str) else ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _csv_row(row: DatasetRow) -> list[str]:
    # Text labels as they are; other labels (numbers, booleans) as JSON, so they read back.
    label = row.label if isinstance(row.label, str) else json.dumps(row.label)
    return [
        row.case_id,
        label,
        row.source.value,
        "true" if row.unbiased else "false",
        row.run_id or "",
        row.actor,
        repr(row.labelled_at),
    ]


def _check_digest(digest: str) -> None:
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _DIGEST_CHARS:
        raise DatasetNotFoundError("a dataset digest is 64 lowercase hexadecimal characters")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportFormatError(
            "Parquet export needs pyarrow: install the 'parquet' extra "
            "(pip install 'aevos[parquet]'), or export as csv"
        ) from None
    return pa, pq


def _parquet(
    rows: tuple[DatasetRow, ...], texts: builtins.list[str] | None, pa: Any, pq: Any
) -> bytes:
    columns: dict[str, Any] = {
        "case_id": [r.case_id for r in rows],
        "label": [r.label if isinstance(r.label, str) else json.dumps(r.label) for r in rows],
        "source": [r.source.value for r in rows],
        "unbiased": [r.unbiased for r in rows],
        "run_id": [r.run_id for r in rows],
        "actor": [r.actor for r in rows],
        "labelled_at": [r.labelled_at for r in rows],
    }
    if texts is not None:
        columns["text"] = texts
    table = pa.table(columns)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return bytes(sink.getvalue())
