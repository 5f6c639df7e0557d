"""Certifications: a model version's certified automation threshold, read behind the guard.

Reading needs ``models:read``, like the model itself; a model only another tenant has is
not found (404), as everywhere. Certifications are recorded by the retraining workflow
(``app.certifications``), not over the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..evolution.certifications import Certifications as CertificationService
    from ..records.certification import CertificationRecord


class Services(Protocol):
    @property
    def certifications(self) -> CertificationService: ...


class Certifications:
    """Certification records, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def latest(self, principal: Principal, name: str, version: int) -> CertificationRecord | None:
        """The certification in force for the tenant's ``name@version``; None if it was
        never certified (nothing it answers is automated)."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.certifications.latest(name, version, tenant=principal.tenant)

    def history(
        self, principal: Principal, name: str, version: int | None = None, *, limit: int = 100
    ) -> list[CertificationRecord]:
        """The certifications of the tenant's model ``name`` (of one ``version``), newest
        first."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.certifications.history(
            name, version=version, tenant=principal.tenant, limit=limit
        )

    def by_version(self, principal: Principal, name: str) -> dict[int, CertificationRecord]:
        """The certification in force of each certified version of ``name``, by version."""
        self.guard.allow(principal, Permission.MODELS_READ, "read models")
        return self.services.certifications.latest_by_version(name, tenant=principal.tenant)
