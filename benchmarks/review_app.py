"""The application ``review_load.py`` serves: one claim-review workflow that asks a person.

    aevos --database-url sqlite:///review.db serve --app review_app:app   # from benchmarks/

Each run assesses the claim (a step: a rule that suggests a verdict and a payout), asks a
reviewer in the ``claims`` queue with the suggestion pre-filled, and settles the decision
(a second step). While it waits the run is parked in the database, so the worker threads
serve other runs; a submission wakes it.
"""

from __future__ import annotations

from typing import Any

from aevos import Aevos, Field, StepContext, WorkflowContext

WORKFLOW = "claim_review"
QUEUE = "claims"
VERDICTS = ("approve", "deny", "refer")
FORM = [
    Field.choice("verdict", VERDICTS),
    Field.number("payout", minimum=0, required=False),
    Field.text("note", required=False, max_length=500),
]

# The database comes from `aevos --database-url` (or AEVOS_DATABASE_URL).
app = Aevos()


@app.step()
def assess(ctx: StepContext, claim: dict[str, Any]) -> dict[str, Any]:
    """The suggestion a model would make: small claims approved in full, large ones referred."""
    amount = float(claim["amount"])
    verdict = "approve" if amount < 1_000 else "refer"
    return {"verdict": verdict, "payout": amount if verdict == "approve" else 0.0}


@app.step()
def settle(ctx: StepContext, claim_id: str, verdict: str, payout: float) -> str:
    # A real connector forwards the idempotency key to the payments system.
    return f"{claim_id}:{verdict}:{payout:.2f}:{ctx.idempotency_key}"


@app.workflow(name=WORKFLOW)
def claim_review(ctx: WorkflowContext, claim: dict[str, Any]) -> dict[str, Any]:
    suggestion = assess(ctx, claim)
    decision = ctx.ask_human(
        f"Claim {claim['id']}: {claim['amount']:.2f}",
        form=FORM,
        case=claim,
        suggestion=suggestion,
        queue=QUEUE,
    )
    payout = float(decision.get("payout") or 0.0)
    receipt = settle(ctx, str(claim["id"]), decision["verdict"], payout)
    return {"verdict": decision["verdict"], "receipt": receipt, "reviewer": decision.reviewer}
