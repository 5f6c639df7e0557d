"""The audit log: the tenant's records, read, verified and exported."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, Protocol

from ..identity import Permission, Principal
from .guard import Guard

if TYPE_CHECKING:
    from ..audit import AuditLog, AuditRecord, VerifyReport


class Services(Protocol):
    @property
    def audit(self) -> AuditLog: ...


class AuditTrail:
    """The audit log, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def query(self, principal: Principal, **filters: Any) -> list[AuditRecord]:
        self.guard.allow(principal, Permission.AUDIT_READ, "read the audit log")
        return self.services.audit.query(principal.tenant, **filters)

    def verify(self, principal: Principal) -> VerifyReport:
        self.guard.allow(principal, Permission.AUDIT_READ, "verify the audit log")
        report = self.services.audit.verify(principal.tenant)
        self.guard.record(principal, "audit.verified", ok=report.ok, checked=report.checked)
        return report

    def export(self, principal: Principal, out: IO[str], *, after_seq: int = 0) -> int:
        self.guard.allow(principal, Permission.AUDIT_EXPORT, "export the audit log")
        self.guard.record(principal, "audit.exported", after_seq=after_seq)
        return self.services.audit.export_jsonl(principal.tenant, out, after_seq=after_seq)
