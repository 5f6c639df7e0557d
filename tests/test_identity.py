"""Identity: tokens stored hashed, roles, tenants, and every refusal recorded."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from aevos import Aevos
from aevos.errors import (
    AuthenticationError,
    AuthorizationError,
    DefinitionError,
    TokenNotFoundError,
)
from aevos.identity import ROLE_PERMISSIONS, Identity, Permission, Role
from aevos.storage import open_store
from aevos.storage.schema import tokens


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str, dict[str, Any]]] = []

    def __call__(
        self,
        action: str,
        actor: str,
        tenant: str,
        reason: str,
        data: dict[str, Any],
        *,
        uow: object = None,
    ) -> None:
        self.events.append((action, actor, tenant, reason, data))


@pytest.fixture
def identity(database_url: str) -> Any:
    store = open_store(database_url)
    recorder = Recorder()
    yield Identity(store, recorder), recorder
    store.close()


def test_a_token_authenticates_and_only_its_hash_is_stored(identity: Any) -> None:
    ident, recorder = identity
    issued = ident.create_token(tenant="acme", role="operator", name="ci", created_by="bootstrap")
    assert issued.token.startswith("aevos_")
    principal = ident.authenticate(issued.token)
    assert (principal.tenant, principal.role, principal.name) == ("acme", Role.OPERATOR, "ci")
    # aevos_<id>_<secret>: the secret is urlsafe base64 and may itself hold "_", so split
    # after the id: a short tail of the secret can occur in another stored value by chance
    # (a failure on PostgreSQL in a full run).
    secret = issued.token.split("_", 2)[2]
    assert len(secret) == 43
    with ident.store.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(tokens)).all()]
    assert all(secret not in str(value) for row in stored for value in row)
    assert recorder.events[0][0] == "token.created"
    assert all(secret not in str(event) for event in recorder.events)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer abc", "malformed"),
        ("aevos_000000000000_" + "x" * 43, "unknown"),
    ],
)
def test_bad_tokens_get_401_and_are_audited(identity: Any, token: str | None, reason: str) -> None:
    ident, recorder = identity
    with pytest.raises(AuthenticationError, match=reason) as caught:
        ident.authenticate(token, tenant_hint="acme")
    assert caught.value.code == "unauthenticated"
    action, _actor, tenant, why, _ = recorder.events[-1]
    assert action == "auth.denied" and reason in why and tenant == "acme"


def test_a_wrong_secret_for_a_real_token_id_is_refused(identity: Any) -> None:
    ident, _ = identity
    issued = ident.create_token(tenant="acme", role="admin", name="root", created_by="b")
    forged = issued.token[:-4] + ("AAAA" if not issued.token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationError, match="unknown token"):
        ident.authenticate(forged)


def test_expired_and_revoked_tokens(identity: Any) -> None:
    ident, recorder = identity
    short = ident.create_token(
        tenant="acme", role="service", name="batch", created_by="b", expires_in=0.05
    )
    time.sleep(0.1)
    with pytest.raises(AuthenticationError, match="expired"):
        ident.authenticate(short.token)
    admin = ident.create_token(tenant="acme", role="admin", name="root", created_by="b")
    victim = ident.create_token(tenant="acme", role="reviewer", name="ann", created_by="b")
    ident.revoke(victim.principal.token_id, by=admin.principal)
    with pytest.raises(AuthenticationError, match="revoked"):
        ident.authenticate(victim.token)
    assert recorder.events[-1][0] == "auth.denied"
    with pytest.raises(TokenNotFoundError):
        ident.revoke(victim.principal.token_id, by=admin.principal)


def test_roles_grant_exactly_their_permissions(identity: Any) -> None:
    ident, recorder = identity
    reviewer = ident.create_token(tenant="acme", role="reviewer", name="ann", created_by="b")
    ident.authorize(reviewer.principal, Permission.TASKS_WORK, action="submit a task")
    with pytest.raises(AuthorizationError, match="may not promote a model") as caught:
        ident.authorize(reviewer.principal, Permission.MODELS_PROMOTE, action="promote a model")
    assert caught.value.code == "forbidden"
    assert recorder.events[-1][0] == "authz.denied"
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert Permission.PII_REVEAL in ROLE_PERMISSIONS[Role.AUDITOR]
    assert Permission.PII_REVEAL not in ROLE_PERMISSIONS[Role.OPERATOR]
    assert Permission.TOKENS_MANAGE not in ROLE_PERMISSIONS[Role.SERVICE]


def test_an_admin_manages_only_its_own_tenant(identity: Any) -> None:
    ident, _ = identity
    admin_a = ident.create_token(tenant="tenant-a", role="admin", name="a", created_by="b")
    other = ident.create_token(tenant="tenant-b", role="service", name="x", created_by="b")
    with pytest.raises(TokenNotFoundError):
        ident.revoke(other.principal.token_id, by=admin_a.principal)
    assert ident.authenticate(other.token).tenant == "tenant-b"
    assert [t.name for t in ident.list_tokens("tenant-a")] == ["a"]


def test_token_definitions_are_validated(identity: Any) -> None:
    ident, _ = identity
    with pytest.raises(DefinitionError, match="unknown role 'root'"):
        ident.create_token(tenant="acme", role="root", name="x", created_by="b")
    with pytest.raises(DefinitionError, match="tenant"):
        ident.create_token(tenant="Acme Corp", role="admin", name="x", created_by="b")
    with pytest.raises(DefinitionError, match="expires_in"):
        ident.create_token(tenant="acme", role="admin", name="x", created_by="b", expires_in=-1)


def test_last_used_is_recorded_at_most_once_a_minute(tmp_path: Any) -> None:
    from aevos import Aevos

    app = Aevos(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        issued = app.identity.create_token(tenant="t", role="reviewer", name="r", created_by="x")
        app.identity.authenticate(issued.token)
        (first,) = [t.last_used_at for t in app.identity.list_tokens("t")]
        assert first is not None
        app.identity.authenticate(issued.token)  # within the resolution: no write
        assert [t.last_used_at for t in app.identity.list_tokens("t")] == [first]
    finally:
        app.close()


def test_a_flood_of_failed_sign_ins_is_counted_not_audited_one_by_one(identity: Any) -> None:
    import math

    ident, recorder = identity
    for _ in range(65):
        with pytest.raises(AuthenticationError):
            ident.authenticate("aevos_000000000000_" + "x" * 43, tenant_hint="acme")
    with pytest.raises(AuthenticationError):
        ident.authenticate(None, tenant_hint="acme")
    issued = ident.create_token(tenant="acme", role="operator", name="ops", created_by="b")
    assert ident.authenticate(issued.token).name == "ops"  # a real token is never held back
    ident.flush_refusals(math.inf)
    actions = [event[0] for event in recorder.events]
    assert actions.count("auth.denied") == 60
    (summary,) = [event for event in recorder.events if event[0] == "auth.denied_counted"]
    assert summary[2] == "acme" and summary[4]["count"] == 6
    assert summary[4]["reasons"] == {"unknown token": 5, "missing token": 1}
    ident.flush_refusals(math.inf)  # nothing is counted twice
    assert [event[0] for event in recorder.events].count("auth.denied_counted") == 1
    # A real token's refusal names it, flood or not: it is never only counted.
    admin = ident.create_token(tenant="acme", role="admin", name="root", created_by="b")
    ident.revoke(issued.principal.token_id, by=admin.principal)
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="revoked"):
            ident.authenticate(issued.token)
    revoked = [e for e in recorder.events if e[0] == "auth.denied" and e[3] == "revoked token"]
    assert len(revoked) == 3 and revoked[0][1] == f"token#{issued.principal.token_id}"


def test_a_token_change_commits_with_its_audit_record_or_not_at_all(app: Aevos) -> None:
    from aevos import AuditChainError
    from aevos.storage.schema import audit_heads

    admin = app.identity.create_token(tenant="acme", role="admin", name="root", created_by="t")
    kept = app.identity.create_token(tenant="acme", role="service", name="ci", created_by="t")
    assert [r.action for r in app.audit.query("acme")] == ["token.created", "token.created"]
    with app.store._tx() as conn:  # the chain's head row lost: no record can be appended
        conn.execute(audit_heads.delete())
    with pytest.raises(AuditChainError):
        app.identity.create_token(tenant="acme", role="service", name="new", created_by="t")
    with pytest.raises(AuditChainError):
        app.identity.revoke(kept.principal.token_id, by=admin.principal)
    # Neither change happened without its record.
    assert [t.name for t in app.identity.list_tokens("acme")] == ["root", "ci"]
    assert app.identity.authenticate(kept.token).name == "ci"
