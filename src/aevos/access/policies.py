"""Policies: the loaded policies, read and explained (nothing enforced here)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DefinitionError
from ..identity import Permission, Principal
from ..policy import PolicySet
from .guard import Guard

if TYPE_CHECKING:
    from ..policy import Explanation, Policy, PolicySet


class Services(Protocol):
    @property
    def policies(self) -> PolicySet: ...


class Policies:
    """Policies, behind the guard."""

    def __init__(self, guard: Guard, services: Services) -> None:
        self.guard = guard
        self.services = services

    def _policy_set(self) -> PolicySet:
        try:
            return self.services.policies
        except DefinitionError:
            return PolicySet()  # no policy directory configured: there are none

    def list(self, principal: Principal) -> builtins.list[Policy]:
        """Every loaded policy, by name then version. Policies are the application's code,
        the same for every tenant."""
        self.guard.allow(principal, Permission.POLICIES_READ, "read policies")
        return builtins.list(self._policy_set())

    def get(self, principal: Principal, name: str, version: int | None = None) -> Policy:
        """The policy ``name`` at ``version`` (default: its newest); 404 if not loaded."""
        self.guard.allow(principal, Permission.POLICIES_READ, "read policies")
        return self._policy_set().get(name, version)

    def explain(
        self,
        principal: Principal,
        name: str,
        input: Mapping[str, Any],
        *,
        version: int | None = None,
    ) -> Explanation:
        """Evaluate a policy on ``input`` and say why, rule by rule (``aevos policy
        explain``). Nothing is enforced, so nothing is recorded: the explanation holds the
        input's values and goes back only to the caller."""
        self.guard.allow(principal, Permission.POLICIES_READ, "read policies")
        return self._policy_set().explain(name, input, version=version)
