"""Identity: API tokens, roles, tenants, and the authorisation check every entry point makes.

A token is ``aevos_<token_id>_<secret>``. Only a SHA-256 of the secret is stored (the
secret has 256 bits of entropy, so a slow password hash would add nothing), it is shown
once when created, and comparisons are constant-time. Every principal belongs to exactly
one tenant; nothing in aevos crosses tenants, so a cross-tenant request is answered as if
the object did not exist. Every refusal is audited with its reason (never the secret).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from .audit.rejections import RejectionBudget
from .errors import (
    AevosError,
    AuthenticationError,
    AuthorizationError,
    DefinitionError,
    TokenNotFoundError,
)
from .storage import Store
from .storage.identity import TokenRow

if TYPE_CHECKING:
    from .storage import UnitOfWork

log = logging.getLogger("aevos.identity")

TOKEN_PREFIX = "aevos"
_TOKEN = re.compile(r"^aevos_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Role(StrEnum):
    ADMIN = "admin"  # everything within its tenant, including tokens and configuration
    OPERATOR = "operator"  # runs, workers, models, rollouts; reads audit
    REVIEWER = "reviewer"  # works human tasks; reads the runs they belong to
    AUDITOR = "auditor"  # reads everything, verifies and exports audit, may reveal PII
    SERVICE = "service"  # machines: start runs, call models, read their results


class Permission(StrEnum):
    RUNS_READ = "runs:read"
    RUNS_START = "runs:start"
    RUNS_CONTROL = "runs:control"  # cancel, resume, fork
    TASKS_READ = "tasks:read"
    TASKS_WORK = "tasks:work"  # claim, release one's own, submit
    TASKS_ASSIGN = "tasks:assign"  # reassign, release anyone's
    MODELS_READ = "models:read"
    MODELS_CALL = "models:call"
    MODELS_WRITE = "models:write"  # register versions, move aliases
    MODELS_PROMOTE = "models:promote"
    POLICIES_READ = "policies:read"
    AUDIT_READ = "audit:read"
    AUDIT_EXPORT = "audit:export"
    PII_REVEAL = "pii:reveal"
    CASES_READ = "cases:read"  # kept cases: lineage and the input as kept (tokenised)
    CASES_DELETE = "cases:delete"  # forget cases by run or by data subject
    TOKENS_MANAGE = "tokens:manage"
    CONFIG_WRITE = "config:write"
    LABELS_READ = "labels:read"  # labels of cases and their conflicts
    LABELS_WRITE = "labels:write"  # report late ground truth
    DATASETS_READ = "datasets:read"  # list, show and export dataset versions
    DATASETS_WRITE = "datasets:write"  # snapshot a dataset version


_P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            _P.RUNS_READ,
            _P.RUNS_START,
            _P.RUNS_CONTROL,
            _P.TASKS_READ,
            _P.TASKS_ASSIGN,
            _P.MODELS_READ,
            _P.MODELS_CALL,
            _P.MODELS_WRITE,
            _P.MODELS_PROMOTE,
            _P.POLICIES_READ,
            _P.AUDIT_READ,
            _P.LABELS_READ,
            _P.LABELS_WRITE,
            _P.DATASETS_READ,
            _P.DATASETS_WRITE,
            _P.CASES_READ,
        }
    ),
    Role.REVIEWER: frozenset(
        {_P.RUNS_READ, _P.TASKS_READ, _P.TASKS_WORK, _P.MODELS_READ, _P.POLICIES_READ}
    ),
    Role.AUDITOR: frozenset(
        {
            _P.RUNS_READ,
            _P.TASKS_READ,
            _P.MODELS_READ,
            _P.POLICIES_READ,
            _P.AUDIT_READ,
            _P.AUDIT_EXPORT,
            _P.PII_REVEAL,
            _P.LABELS_READ,
            _P.DATASETS_READ,
            _P.CASES_READ,
        }
    ),
    # A service reports late ground truth (a claims system's final outcomes).
    Role.SERVICE: frozenset(
        {_P.RUNS_READ, _P.RUNS_START, _P.MODELS_READ, _P.MODELS_CALL, _P.LABELS_WRITE}
    ),
}


# Refusals of a token that exists: always audited, never counted in a flood summary.
_REAL_TOKEN_REASONS = frozenset({"revoked token", "expired token"})
# A token's name: its actor ("operator:<name>#<token id>") must fit the 200-character actor
# columns of the audit log and the registry.
MAX_NAME = 100
# How fresh a token's last_used_at is kept: it is rewritten at most this often (seconds).
LAST_USED_RESOLUTION = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is asking: resolved from a token, scoped to one tenant."""

    token_id: str
    tenant: str
    role: Role
    name: str

    @property
    def actor(self) -> str:
        """How audit records name this principal (no secret, stable across requests)."""
        return f"{self.role.value}:{self.name}#{self.token_id}"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True)
class IssuedToken:
    """A newly created token. ``secret`` is the only copy: it is never stored or shown again."""

    token: str
    principal: Principal
    expires_at: float | None


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    tenant: str
    name: str
    role: Role
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class AuditHook(Protocol):
    """Called for every refusal and token change; the app wires it to the audit log. A
    token change passes ``uow``, the unit of work that makes it: the record must commit
    with the change, or neither does."""

    def __call__(
        self,
        action: str,
        actor: str,
        tenant: str,
        reason: str,
        data: dict[str, Any],
        *,
        uow: UnitOfWork | None = None,
    ) -> None: ...


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise DefinitionError(
            f"tenant {tenant[:70]!r} must be 1-64 characters of lowercase letters, digits, "
            "'_', '.', '-'"
        )
    return tenant


class Identity:
    """Creates, checks and revokes tokens; authorises principals."""

    def __init__(self, store: Store, audit: AuditHook | None = None) -> None:
        self.store = store
        self._audit = audit
        # Failed authentications per tenant recorded one by one; a flood is counted.
        self.refusals = RejectionBudget()

    def _record(
        self,
        action: str,
        actor: str,
        tenant: str,
        reason: str,
        *,
        uow: UnitOfWork | None = None,
        **data: Any,
    ) -> None:
        if self._audit is not None:
            self._audit(action, actor, tenant, reason, data, uow=uow)

    def create_token(
        self,
        *,
        tenant: str,
        role: Role | str,
        name: str,
        created_by: str,
        expires_in: float | None = None,
    ) -> IssuedToken:
        check_tenant(tenant)
        try:
            role = Role(role)
        except ValueError:
            raise DefinitionError(
                f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}"
            ) from None
        if not name or len(name) > MAX_NAME:
            raise DefinitionError(f"a token needs a name of 1-{MAX_NAME} characters")
        if expires_in is not None and expires_in <= 0:
            raise DefinitionError("expires_in must be > 0 seconds")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        expires_at = None if expires_in is None else now + expires_in
        row = TokenRow(
            token_id=token_id,
            tenant=tenant,
            name=name,
            role=role.value,
            secret_hash=_digest(secret),
            created_by=created_by,
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        with self.store.transaction() as uow:
            uow.tokens.insert(row)
            self._record(
                "token.created",
                created_by,
                tenant,
                "created",
                uow=uow,
                token_id=token_id,
                role=role.value,
            )
        principal = Principal(token_id, tenant, role, name)
        return IssuedToken(f"{TOKEN_PREFIX}_{token_id}_{secret}", principal, expires_at)

    def _denied(self, actor: str, tenant: str, reason: str) -> None:
        """Audit a failed authentication. Those anyone can produce (no token, a malformed or
        unknown one) are counted past a budget; a real token's refusal is always audited."""
        now = time.time()
        try:
            self.flush_refusals(now)
        except AevosError as exc:  # kept for the next try; the refusal itself goes on
            log.error("counted refusals could not be recorded: %s", exc.code)
        if reason in _REAL_TOKEN_REASONS or self.refusals.admit(tenant, reason, now):
            self._record("auth.denied", actor, tenant, reason)

    def flush_refusals(self, now: float | None = None) -> None:
        """Audit the counts of failed authentications whose window ended (``math.inf``:
        every window, at shutdown) as one ``auth.denied_counted`` record per tenant."""
        moment = time.time() if now is None else now
        pending = self.refusals.due(moment)
        while pending:
            counted = pending[0]
            try:
                self._record(
                    "auth.denied_counted",
                    "system",
                    str(counted.key),
                    counted.describe(),
                    count=counted.count,
                    reasons=dict(counted.reasons),
                    window_start=counted.start,
                    window_end=counted.end,
                )
            except BaseException:
                self.refusals.put_back(pending)
                raise
            pending.pop(0)

    def authenticate(self, token: str | None, *, tenant_hint: str = "default") -> Principal:
        """The principal a bearer token stands for, or AuthenticationError (HTTP 401).

        ``tenant_hint`` names where a refusal of an unparseable token is audited (the
        tenant the request was addressed to), since such a token names no tenant itself.
        """
        if not token:
            self._denied("anonymous", tenant_hint, "missing token")
            raise AuthenticationError("missing API token")
        match = _TOKEN.match(token.strip())
        if match is None:
            self._denied("anonymous", tenant_hint, "malformed token")
            raise AuthenticationError("malformed API token")
        token_id, secret = match.groups()
        with self.store.reading() as uow:
            row = uow.tokens.get(token_id)
        now = time.time()
        reason = None
        if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
            reason = "unknown token"
        elif row.revoked_at is not None:
            reason = "revoked token"
        elif row.expires_at is not None and row.expires_at <= now:
            reason = "expired token"
        elif row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            # Coarse on purpose: a write (a durable commit) per request would make every
            # read of the API a write transaction.
            with self.store.transaction() as uow:
                uow.tokens.mark_used(token_id, now)
        if reason is not None:
            tenant = row.tenant if row is not None and reason != "unknown token" else tenant_hint
            self._denied(f"token#{token_id}", tenant, reason)
            raise AuthenticationError(f"{reason} ({token_id})")
        assert row is not None
        return Principal(row.token_id, row.tenant, Role(row.role), row.name)

    def authorize(self, principal: Principal, permission: Permission, *, action: str) -> None:
        """Raise AuthorizationError (HTTP 403) unless the principal's role grants it."""
        if not principal.can(permission):
            self._record(
                "authz.denied",
                principal.actor,
                principal.tenant,
                f"role {principal.role.value} lacks {permission.value}",
                attempted=action,
            )
            raise AuthorizationError(
                f"{principal.role.value} {principal.name!r} may not {action} "
                f"(needs {permission.value})"
            )

    def deny_cross_tenant(self, principal: Principal, kind: str, object_id: str) -> None:
        """Audit a request for another tenant's object (the caller answers 'not found')."""
        self._record(
            "authz.denied",
            principal.actor,
            principal.tenant,
            f"{kind} belongs to another tenant",
            object=f"{kind}:{object_id}",
        )

    def revoke(self, token_id: str, *, by: Principal) -> None:
        self.authorize(by, Permission.TOKENS_MANAGE, action="revoke tokens")
        with self.store.transaction() as uow:
            if not uow.tokens.revoke(token_id, by.tenant, time.time()):
                raise TokenNotFoundError(f"no active token {token_id!r} in tenant {by.tenant!r}")
            self._record(
                "token.revoked", by.actor, by.tenant, "revoked", uow=uow, token_id=token_id
            )

    def list_tokens(self, tenant: str) -> list[TokenInfo]:
        with self.store.reading() as uow:
            rows = uow.tokens.find(tenant)
        return [
            TokenInfo(
                r.token_id,
                r.tenant,
                r.name,
                Role(r.role),
                r.created_by,
                r.created_at,
                r.expires_at,
                r.revoked_at,
                r.last_used_at,
            )
            for r in rows
        ]
