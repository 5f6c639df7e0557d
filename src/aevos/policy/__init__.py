"""Policy as code: decisions at the enforcement points, from files in the application's repo.

Policies are YAML files (see :mod:`aevos.policy.document`) or Python functions
(:func:`python_policy`) with a declared input, loaded from a directory into a
:class:`PolicySet`, evaluated into :class:`Decision` records, explained rule by rule, and
unit-tested by ``*.test.yaml`` files (:func:`run_policy_tests`, ``aevos policy test``)::

    policies = PolicySet.load("policies")
    decision = policies.evaluate("claims-auto-approve", {"claim": {"amount": 1200}, ...})
    if decision.allowed: ...
    audit_payload = decision.to_record()   # digests only, never the input

Three enforcement points (``kind``): ``model_call`` (allow | deny, plus fields to redact),
``action`` (allow | review | deny) and ``promotion`` (allow | approve | deny).
"""

from __future__ import annotations

from .engine import KINDS, CaseRetention, Decision, Explanation, Policy, Verdict
from .inputs import input_digest
from .policyset import PolicySet
from .python import python_policy
from .testing import CaseResult, PolicyTestReport, run_policy_tests

__all__ = [
    "KINDS",
    "CaseResult",
    "CaseRetention",
    "Decision",
    "Explanation",
    "Policy",
    "PolicySet",
    "PolicyTestReport",
    "Verdict",
    "input_digest",
    "python_policy",
    "run_policy_tests",
]
