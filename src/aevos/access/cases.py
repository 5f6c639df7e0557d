"""Kept cases behind the guard: list, read (revealing only with ``pii:reveal``), forget.

A case is addressed within the principal's tenant: another tenant's case id is simply not
found (404), as nothing of another tenant is named. Inputs are returned as kept, that is
tokenised by the data policy; ``reveal=True`` replaces the tokens by the originals for a
principal that may also reveal PII (audited as ``pii.revealed``). Forgetting is audited
as ``case.forgotten`` (who, which run or subject, how many), in the deletion's transaction.
"""

from __future__ import annotations

import builtins
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from ..cases import DEFAULT_LIMIT, KeptCase
from ..errors import CaseInputError
from ..identity import Permission, Principal
from ..pii.datapolicy import reveal_value
from .guard import Guard

if TYPE_CHECKING:
    from ..cases import KeptCases
    from ..pii import Vault


class Services(Protocol):
    @property
    def cases(self) -> KeptCases: ...

    @property
    def vault(self) -> Vault: ...


class Cases:
    """Kept cases, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def list(
        self,
        principal: Principal,
        *,
        model: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> builtins.list[KeptCase]:
        """The tenant's cases, oldest first (``cases:read``)."""
        self.guard.allow(principal, Permission.CASES_READ, "read kept cases")
        return self.services.cases.find(
            tenant=principal.tenant,
            model=model,
            run_id=run_id,
            since=since,
            until=until,
            limit=limit,
        )

    def get(self, principal: Principal, case_id: str, *, reveal: bool = False) -> KeptCase:
        """One case with its input as kept (``cases:read``); ``reveal=True`` also needs
        ``pii:reveal`` and is audited with the number of tokens resolved."""
        self.guard.allow(principal, Permission.CASES_READ, "read kept cases")
        if reveal:
            # Checked before the case is read: a refusal says nothing about whether it exists.
            self.guard.allow(principal, Permission.PII_REVEAL, "reveal personal data")
        case = self.services.cases.get(case_id, tenant=principal.tenant)
        if not reveal:
            return case
        services = self.services
        value, tokens = reveal_value(
            case.input, tenant=principal.tenant, vault=lambda: services.vault, allowed=True
        )
        self.guard.record(
            principal,
            "pii.revealed",
            subject=f"case:{case.case_id}",
            run_id=case.run_id,
            tokens=tokens,
        )
        return replace(case, input=value)

    def forget(
        self, principal: Principal, *, run_id: str | None = None, subject: str | None = None
    ) -> int:
        """Delete the tenant's cases of one run, or of one data subject (a vault token);
        how many (``cases:delete``; audited ``case.forgotten``)."""
        self.guard.allow(principal, Permission.CASES_DELETE, "forget kept cases")
        if (run_id is None) == (subject is None):
            raise CaseInputError("forget cases by run_id or by subject (a vault token): one")
        cases = self.services.cases
        if run_id is not None:
            return cases.forget_run(run_id, tenant=principal.tenant, actor=principal.actor)
        assert subject is not None
        return cases.forget_subject(subject, tenant=principal.tenant, actor=principal.actor)
