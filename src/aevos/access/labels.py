"""Labels of cases and dataset versions, behind the guard.

Everything is scoped to the principal's tenant by construction: the services are asked for
the principal's tenant only, so another tenant's case is an unknown case (``case_not_found``)
and another tenant's dataset version an unknown digest (``dataset_not_found``), naming
nothing of it. Labels are audited by the service (``label.recorded``, ``label.conflict``,
``label.rejected``) with the principal as actor; so are new versions (``dataset.created``);
an export is audited here (``dataset.exported``): it takes data out of aevos.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..identity import Permission, Principal
from ..records.label import DatasetInfo, LabelConflict, LabelRecord

if TYPE_CHECKING:
    from ..evolution.datasets import Datasets as DatasetService
    from ..evolution.datasets import DatasetVersion
    from ..evolution.labels import Labels as LabelService
    from .guard import Guard


class Services(Protocol):
    @property
    def labels(self) -> LabelService: ...

    @property
    def datasets(self) -> DatasetService: ...


class Labels:
    """Late ground truth, labels and their conflicts (``labels:read``, ``labels:write``)."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def record(
        self, principal: Principal, items: Sequence[Mapping[str, Any]]
    ) -> builtins.list[LabelRecord]:
        """Record a batch of labels in the principal's tenant, all or nothing."""
        self.guard.allow(principal, Permission.LABELS_WRITE, "record labels")
        return self.services.labels.record_many(
            items, tenant=principal.tenant, actor=principal.actor
        )

    def list(
        self,
        principal: Principal,
        *,
        case_id: str | None = None,
        model: str | None = None,
        source: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[LabelRecord]:
        self.guard.allow(principal, Permission.LABELS_READ, "read labels")
        return self.services.labels.list(
            tenant=principal.tenant,
            case_id=case_id,
            model=model,
            source=source,
            since=since,
            limit=limit,
            offset=offset,
        )

    def conflicts(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        case_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[LabelConflict]:
        self.guard.allow(principal, Permission.LABELS_READ, "read label conflicts")
        return self.services.labels.conflicts(
            tenant=principal.tenant, model=model, case_id=case_id, limit=limit, offset=offset
        )


class Datasets:
    """Dataset versions: snapshot (``datasets:write``), list, show, export
    (``datasets:read``)."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def snapshot(
        self, principal: Principal, model: str, *, until: float | None = None
    ) -> DatasetVersion:
        self.guard.allow(principal, Permission.DATASETS_WRITE, "snapshot datasets")
        return self.services.datasets.snapshot(
            model, tenant=principal.tenant, until=until, actor=principal.actor
        )

    def list(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[DatasetInfo]:
        self.guard.allow(principal, Permission.DATASETS_READ, "read datasets")
        return self.services.datasets.list(
            tenant=principal.tenant, model=model, limit=limit, offset=offset
        )

    def get(self, principal: Principal, digest: str) -> DatasetVersion:
        self.guard.allow(principal, Permission.DATASETS_READ, "read datasets")
        return self.services.datasets.get(digest, tenant=principal.tenant)

    def info(self, principal: Principal, digest: str) -> DatasetInfo:
        self.guard.allow(principal, Permission.DATASETS_READ, "read datasets")
        return self.services.datasets.info(digest, tenant=principal.tenant)

    def export(
        self,
        principal: Principal,
        digest: str,
        *,
        format: str = "csv",
        text: bool = False,
        text_field: str | None = None,
    ) -> Iterator[bytes]:
        """The version as a file, in chunks; refused (unknown version or format, no pyarrow)
        before any byte, and audited as ``dataset.exported``. With ``text`` (the kept input
        of each case) it needs ``cases:read`` too."""
        self.guard.allow(principal, Permission.DATASETS_READ, "export datasets")
        if text:
            self.guard.allow(principal, Permission.CASES_READ, "export the text of cases")
        chunks = self.services.datasets.export(
            digest, tenant=principal.tenant, format=format, text=text, text_field=text_field
        )
        self.guard.record(
            principal, "dataset.exported", subject=f"dataset:{digest}", format=format, text=text
        )
        return chunks
