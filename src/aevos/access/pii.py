"""Personal data: revealing tokenized values to those allowed to see them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..identity import Permission, Principal
from ..pii.vault import TOKEN
from .guard import Guard

if TYPE_CHECKING:
    from ..pii import Redactor, Vault


class Services(Protocol):
    @property
    def redactor(self) -> Redactor: ...

    @property
    def vault(self) -> Vault: ...


class Pii:
    """Personal data, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def reveal(self, principal: Principal, text: str) -> str:
        """``text`` with this tenant's PII tokens replaced by the original values.

        Needs ``pii:reveal`` (admins and auditors); every reveal is audited with how many
        tokens it resolved, never with what they resolved to.
        """
        self.guard.allow(principal, Permission.PII_REVEAL, "reveal personal data")
        revealed = self.services.redactor.detokenize(
            text, tenant=principal.tenant, vault=self.services.vault, allowed=True
        )
        self.guard.record(principal, "pii.revealed", tokens=len(TOKEN.findall(text)))
        return revealed
