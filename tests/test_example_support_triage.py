"""The support-triage example (``examples/support_triage``) end to end, on both backends.

Real banking77 tickets (6 intents), a real tfidf-logreg model, a real worker, a reviewer
working the inbox through ``app.tasks``: tickets flow, reviews become labels, every N labels
a worker's sweep retrains, a candidate is certified on the audited (unbiased) labels and
promoted, and later tickets are routed without a person above the certified threshold.
The ticket table gets each ticket once, and personal data is never stored in the clear.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from examples.support_triage import (
    MODEL,
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
    start_tickets,
    ticket,
    train_first_version,
)
from tests.review_support import Reviewer

from aevos import Aevos, TaskStatus
from aevos.pii import Vault

FAST = {"char_ngrams": [2, 3]}
INTENTS = 6
EMAIL = "jane.doe@example.com"
# Precision >= 0.9 at risk 0.2 from 30 audited labels: what a few dozen tickets can show.
CERTIFY = {"target": 0.9, "delta": 0.2, "min_count": 30}


def slice_of_banking() -> list[tuple[str, str]]:
    rows = load_banking("train")
    kept = set(sorted({intent for _, intent in rows})[:INTENTS])
    return [r for r in rows if r[1] in kept]


@pytest.fixture
def support(database_url: str, tmp_path: Path) -> Iterator[tuple[Aevos, TicketTable]]:
    tickets_url = f"sqlite:///{tmp_path / 'tickets.db'}"
    app = make_app(
        database_url,
        tickets_url=tickets_url,
        vault_key=Vault.generate_key(),
        settings=Settings(audit_share_uncertified=0.6, audit_share=0.3),
        lease_seconds=5.0,
        park_after=0.5,
        poll_interval=0.02,
    )
    yield app, TicketTable(tickets_url)
    app.close()


def champion_threshold(app: Aevos) -> float | None:
    version = app.models.aliases(MODEL)["champion"]
    record = app.certifications.latest(MODEL, version)
    return None if record is None else record.threshold


def test_tickets_are_routed_by_people_until_the_model_is_certified_then_by_the_model(
    support: tuple[Aevos, TicketTable],
) -> None:
    app, table = support
    rows = slice_of_banking()
    seeds = per_intent(rows, 5, seed=0)
    assert (
        train_first_version(app, [rows[i] for i in seeds], recipe="tfidf-logreg", params=FAST) == 1
    )
    assert import_labels(app, [rows[i] for i in seeds]) == 30
    assert app.labels.count(model=MODEL) == 30
    configure_retraining(app, recipe="tfidf-logreg", params=FAST, every_labels=50, **CERTIFY)

    stream = [i for i in range(len(rows)) if i not in set(seeds)][::3]
    truth = {f"T{i}": rows[i][1] for i in stream}
    tickets = [
        # Every fifth customer writes their e-mail address into the ticket.
        ticket(f"T{i}", rows[i][0] + (f" Reach me at {EMAIL}" if n % 5 == 0 else ""), EMAIL)
        for n, i in enumerate(stream)
    ]
    outputs: list[dict[str, Any]] = []
    worker = app.worker(concurrency=8).start()
    try:
        with Reviewer(app, lambda task: {"intent": truth[task.case["ticket_id"]]}) as reviewer:
            # Batches until a certified champion routes tickets by itself (a few hundred
            # tickets at most), then one more batch.
            batches = [tickets[k : k + 30] for k in range(0, len(tickets), 30)]
            certified_at: int | None = None
            for n, batch in enumerate(batches):
                outputs += [h.result(timeout=60) for h in start_tickets(app, batch)]
                if certified_at is None:
                    deadline = time.monotonic() + 30
                    # Let the retraining the labels triggered finish before the next batch.
                    while (runs := app.retraining.runs(MODEL)) and runs[0].finished_at is None:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
                    if champion_threshold(app) is not None:
                        certified_at = n
                elif n > certified_at + 1:
                    break
            assert certified_at is not None, "no candidate was ever certified"
            deadline = time.monotonic() + 30
            while app.tasks.list(status=[TaskStatus.OPEN, TaskStatus.CLAIMED]):
                assert time.monotonic() < deadline, "the QA tasks were never answered"
                time.sleep(0.05)
    finally:
        worker.stop()

    # Retrainings were started by the label count, and one was certified and promoted.
    runs = app.retraining.runs(MODEL)
    assert runs and all(r.trigger.value == "labels" for r in runs)
    promoted = [r for r in runs if r.promotion == "allow"]
    assert promoted and all(r.certified for r in promoted)
    champion = app.models.aliases(MODEL)["champion"]
    assert champion > 1 and champion in {r.candidate for r in promoted}

    # Before certification everything went to a person; after it, certified answers were
    # routed by the model, each at or above its version's certified threshold.
    automated = [o for o in outputs if o["routed_by"] == "model"]
    assert automated, "no ticket was routed automatically after certification"
    for output in automated:
        record = app.certifications.latest(MODEL, output["model_version"])
        assert output["certified"] and record is not None and record.threshold is not None
        assert output["confidence"] >= record.threshold
    assert all(o["routed_by"] == "reviewer" for o in outputs if o["model_version"] == 1)
    # An audited automated ticket was also checked by a person (a QA task, answered).
    for output in automated:
        assert (output["task_id"] is not None) == output["audited"]
    assert reviewer.answered.count("qa") == sum(o["audited"] for o in automated)

    # Every answer is a label: 30 imported, one per review or QA answer.
    assert app.labels.count(model=MODEL) == 30 + len(reviewer.answered)
    sources = {label.source for label in app.labels.list(model=MODEL, limit=1000)}
    assert sources >= {"ground_truth", "review"}
    assert ("qa" in sources) == ("qa" in reviewer.answered)

    # The ticket table has each ticket once, as routed; running the tickets again starts
    # nothing new and writes nothing.
    written = table.rows()
    assert len(written) == len(outputs) == len({r["ticket_id"] for r in written})
    by_ticket = {r["ticket_id"]: r for r in written}
    for output in outputs:
        row = by_ticket[output["ticket_id"]]
        assert row["intent"] == output["intent"] and row["routed_by"] == output["routed_by"]
        assert row["idempotency_key"] == output["receipt"] and output["first_write"]
        if output["routed_by"] == "reviewer":
            assert row["intent"] == truth[output["ticket_id"]]
    again = start_tickets(app, tickets[: len(outputs)])
    assert {h.run_id for h in again} <= {
        r.run_id for r in app.list_runs(workflow=WORKFLOW, limit=2000)
    }
    assert len(app.list_runs(workflow=WORKFLOW, limit=2000)) == len(outputs)
    assert len(table.rows()) == len(written)

    # Personal data: tokenised in the ticket table and in every kept case, never raw.
    assert all(EMAIL not in str(r["customer"]) and EMAIL not in r["text"] for r in written)
    assert all(str(r["customer"]).startswith("<EMAIL:tok_") for r in written)
    assert any("<EMAIL:tok_" in r["text"] for r in written)
    cases = app.cases.find(tenant="default", model=MODEL, limit=1000)
    assert len(cases) >= len(outputs)
    assert not any(EMAIL in str(case.input) for case in cases)


def test_the_reviewer_form_offers_every_intent_searchably() -> None:
    choices = intents()
    assert len(choices) == 77 and len(set(choices)) == 77
    [intent, note] = intent_form(choices)
    assert intent.kind == "choice" and intent.choices == tuple(choices)
    assert note.required is False
