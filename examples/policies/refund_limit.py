"""A policy in Python: refund limits by customer tier, a table rather than a list of rules.

It lives with the YAML policies, so ``PolicySet.load`` finds it and ``aevos policy test``
runs ``refund-limit.test.yaml`` against it like any other policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from aevos.policy import Verdict, python_policy

# Refunds up to these amounts are paid without a person; gold customers get more room.
LIMITS = {"gold": 500.0, "silver": 200.0, "standard": 50.0}


@dataclass(frozen=True)
class Refund:
    amount: float
    reason_code: str


@dataclass(frozen=True)
class Customer:
    tier: str
    chargebacks: int


@dataclass(frozen=True)
class RefundInput:
    refund: Refund
    customer: Customer
    requested_by_llm: bool | None = None  # set when an LLM step proposed the refund


@python_policy("refund-limit", version=1, kind="action", input=RefundInput)
def refund_limit(input: RefundInput) -> Verdict:
    """Pay small refunds automatically, by customer tier; a person reviews the rest."""
    if input.customer.chargebacks > 0:
        return Verdict("deny", "customers with chargebacks are refunded by a person", "chargebacks")
    if input.requested_by_llm and input.refund.amount > LIMITS["standard"]:
        # A prompt can talk a model into proposing a refund; it cannot raise the limit.
        return Verdict("review", "an LLM proposed a refund above the standard limit", "llm")
    limit = LIMITS.get(input.customer.tier, LIMITS["standard"])
    if input.refund.amount <= limit:
        return Verdict("allow", f"within the {input.customer.tier} tier's limit", "tier-limit")
    return Verdict("review", "above the tier's refund limit", "over-limit")
