"""API tokens: the identity repository.

Only a token's id, tenant, role, name and the SHA-256 of its secret are stored; checking a
secret and deciding what a role may do is :mod:`aevos.identity`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .repository import Repository
from .schema import tokens


@dataclass(frozen=True)
class TokenRow:
    """A token as stored (its secret only as a digest)."""

    token_id: str
    tenant: str
    name: str
    role: str
    secret_hash: str
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class TokenRepository(Repository):
    """Tokens of every tenant, in the unit of work it is bound to."""

    def insert(self, token: TokenRow) -> None:
        self.conn.execute(
            tokens.insert(),
            {
                "token_id": token.token_id,
                "tenant": token.tenant,
                "name": token.name,
                "role": token.role,
                "secret_hash": token.secret_hash,
                "created_by": token.created_by,
                "created_at": token.created_at,
                "expires_at": token.expires_at,
                "revoked_at": token.revoked_at,
                "last_used_at": token.last_used_at,
            },
        )

    def get(self, token_id: str) -> TokenRow | None:
        row = self.conn.execute(sa.select(tokens).where(tokens.c.token_id == token_id)).first()
        return None if row is None else TokenRow(**row._mapping)

    def find(self, tenant: str) -> list[TokenRow]:
        """The tenant's tokens, oldest first (revoked and expired ones too)."""
        rows = self.conn.execute(
            sa.select(tokens).where(tokens.c.tenant == tenant).order_by(tokens.c.created_at)
        )
        return [TokenRow(**row._mapping) for row in rows]

    def mark_used(self, token_id: str, now: float) -> None:
        self.conn.execute(
            sa.update(tokens).where(tokens.c.token_id == token_id).values(last_used_at=now)
        )

    def revoke(self, token_id: str, tenant: str, now: float) -> bool:
        """Revoke an active token of ``tenant``; False if there is none by that id."""
        result = self.conn.execute(
            sa.update(tokens)
            .where(
                tokens.c.token_id == token_id,
                tokens.c.tenant == tenant,
                tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        return result.rowcount == 1
