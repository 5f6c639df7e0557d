"""Support triage: every ticket routed to an intent, by a person until the model has earned it.

A ticket arrives (id, customer, text) as a run of ``support.triage`` on the ``support`` queue:

1. its personal data is tokenised by the workflow's data policy before anything stores,
   shows or keeps it (``TICKET_POLICY``; redacted when no vault key is set);
2. ``ctx.predict("support-intent", text)`` asks the champion through the gateway; the
   answer says whether it reaches its version's certified threshold;
3. the audit coin (``ctx.random()``) flags a share of *all* tickets, whatever the model
   says: an unbiased sample of traffic, the only labels certification may use;
4. ``ctx.decide("support-routing", prediction=...)``: a certified answer routes the ticket
   by itself (an audited one also goes to a person, ``ctx.qa_sample``, without waiting);
   otherwise a reviewer routes it (``ctx.ask_human`` with the 77-choice form, ordered by the
   model's suggestions; ``sampled=`` says whether the coin or the model sent it);
5. the routed ticket is written to the company's ticket table (SQLAlchemy), once;
6. the reviewer's decision is a label of the model call (automatic: the feedback record);
   every ``every_labels`` labels a worker retrains the model (``app.retraining``), certifies
   the candidate and the promotion policy makes it the champion.

``benchmarks/evolution_banking77.py`` streams banking77 through it; README.md shows how to
run it by hand.
"""

from __future__ import annotations

from .app import (
    AUDIT_SHARE,
    AUDIT_SHARE_UNCERTIFIED,
    ENSEMBLE_PARAMS,
    MODEL,
    POLICIES,
    QA_QUEUE,
    QUEUE,
    REVIEW_QUEUE,
    TICKET_POLICY,
    WORKFLOW,
    Settings,
    TicketTable,
    configure_retraining,
    import_labels,
    intent_form,
    intents,
    load_banking,
    make_app,
    per_intent,
    register_trained,
    start_tickets,
    ticket,
    train_first_version,
)

__all__ = [
    "AUDIT_SHARE",
    "AUDIT_SHARE_UNCERTIFIED",
    "ENSEMBLE_PARAMS",
    "MODEL",
    "POLICIES",
    "QA_QUEUE",
    "QUEUE",
    "REVIEW_QUEUE",
    "TICKET_POLICY",
    "WORKFLOW",
    "Settings",
    "TicketTable",
    "configure_retraining",
    "import_labels",
    "intent_form",
    "intents",
    "load_banking",
    "make_app",
    "per_intent",
    "register_trained",
    "start_tickets",
    "ticket",
    "train_first_version",
]
