"""The one guard every governed operation passes: allow, own tenant, audit.

- **allow**: the principal's role has the permission (a refusal is audited by identity);
- **own tenant**: an object of another tenant is refused like any request the token may
  not make (403), the attempt is audited, and nothing of the other tenant's object is
  returned or named;
- **audit**: what the principal did is appended to the audit log with the principal as actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..audit import AuditEvent
from ..errors import AuthorizationError
from ..identity import Permission, Principal

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..identity import Identity
    from ..storage import UnitOfWork


class Services(Protocol):
    @property
    def identity(self) -> Identity: ...

    @property
    def audit(self) -> AuditLog: ...


class Guard:
    """Checks and records on behalf of every area of :class:`~aevos.access.Access`."""

    def __init__(self, services: Services) -> None:
        self.services = services  # identity and audit, built on first use

    def authenticate(self, token: str | None, *, tenant_hint: str = "default") -> Principal:
        """The principal behind a bearer token; AuthenticationError (401) otherwise."""
        return self.services.identity.authenticate(token, tenant_hint=tenant_hint)

    def allow(self, principal: Principal, permission: Permission, action: str) -> None:
        """AuthorizationError (audited) unless the principal's role may ``action``."""
        self.services.identity.authorize(principal, permission, action=action)

    def own(self, principal: Principal, kind: str, object_id: str, tenant: str) -> None:
        """Refuse (audited) an object of another tenant than the principal's."""
        if tenant != principal.tenant:
            self.services.identity.deny_cross_tenant(principal, kind, object_id)
            # 403, as for any request a token may not make; the message names nothing of
            # the other tenant.
            raise AuthorizationError(f"{kind} {object_id!r} is not accessible with this token")

    def record(
        self,
        principal: Principal,
        action: str,
        *,
        subject: str | None = None,
        run_id: str | None = None,
        uow: UnitOfWork | None = None,
        **data: Any,
    ) -> None:
        """Append what the principal did to the tenant's audit log; with ``uow``, in the
        unit of work of the change it records, so that both commit or neither does."""
        self.services.audit.append(
            AuditEvent(
                action=action,
                actor=principal.actor,
                tenant=principal.tenant,
                subject=subject,
                run_id=run_id,
                data=data,
            ),
            uow=uow,
        )

    def refuse(self, principal: Principal, attempted: str, reason: str) -> AuthorizationError:
        """The refusal of something no role may do this way, audited like a role's."""
        self.record(principal, "authz.denied", reason=reason, attempted=attempted)
        return AuthorizationError(f"{principal.role.value} {principal.name!r} may not {reason}")
