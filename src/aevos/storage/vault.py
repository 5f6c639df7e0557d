"""The PII vault's rows: encrypted values addressed by (tenant, token).

Encryption, keys and tokens are :mod:`aevos.pii.vault`'s business; this repository stores
and deletes ciphertexts. Lookups and deletions go by chunks of tokens, so a long list never
makes one statement with more parameters than a backend accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .repository import Repository, StoreHandle
from .schema import pii_vault

_CHUNK = 500


@dataclass(frozen=True)
class Sealed:
    """One stored value: its token, its kind and its ciphertext."""

    token: str
    kind: str
    ciphertext: bytes


def _insert(store: StoreHandle) -> Any:
    return store.dialect.insert(pii_vault).on_conflict_do_nothing(
        index_elements=["tenant", "token"]
    )


class VaultRepository(Repository):
    """Encrypted values of every tenant, in the unit of work it is bound to."""

    def add(self, tenant: str, values: Sequence[Sealed], now: float) -> None:
        """Store values; a token the tenant already has keeps its first ciphertext."""
        if not values:
            return
        rows = [
            {
                "tenant": tenant,
                "token": sealed.token,
                "kind": sealed.kind,
                "ciphertext": sealed.ciphertext,
                "created_at": now,
            }
            for sealed in values
        ]
        self.conn.execute(self.uow.prepared(_insert), rows)

    def find(self, tenant: str, tokens: Sequence[str]) -> list[Sealed]:
        """The tenant's stored values among ``tokens`` (unknown tokens are left out)."""
        v = pii_vault.c
        found: list[Sealed] = []
        wanted = sorted(set(tokens))
        for i in range(0, len(wanted), _CHUNK):
            rows = self.conn.execute(
                sa.select(v.token, v.kind, v.ciphertext).where(
                    v.tenant == tenant, v.token.in_(wanted[i : i + _CHUNK])
                )
            )
            found.extend(Sealed(token, kind, bytes(blob)) for token, kind, blob in rows)
        return found

    def erase(self, tenant: str, tokens: Sequence[str] | None = None) -> int:
        """Delete the tenant's values (all, or those of ``tokens``); how many were."""
        v = pii_vault.c
        if tokens is None:
            return int(self.conn.execute(sa.delete(pii_vault).where(v.tenant == tenant)).rowcount)
        deleted = 0
        wanted = sorted(set(tokens))
        for i in range(0, len(wanted), _CHUNK):
            deleted += self.conn.execute(
                sa.delete(pii_vault).where(v.tenant == tenant, v.token.in_(wanted[i : i + _CHUNK]))
            ).rowcount
        return deleted
