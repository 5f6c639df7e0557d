"""The support-triage app: tickets routed to one of banking77's 77 intents.

Public API only (``from aevos import ...``, ``app.*`` services). See the package docstring
and README.md for the flow; this module holds the pieces:

* :func:`make_app` builds the app: the ``support.triage`` workflow on the ``support``
  queue, its data policy, its policies (``policies/``), the ticket table;
* :func:`train_first_version` trains version 1 on a few labelled tickets per intent and
  makes it the champion; :func:`import_labels` records those tickets as labels, so that
  retrainings learn from them too;
* :func:`configure_retraining` says how the model is retrained (recipe, every N labels);
* :class:`TicketTable` is the company's ticket table (SQLAlchemy, its own database).
"""

from __future__ import annotations

import csv
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from aevos import Aevos, Field, RunHandle, StepContext, WorkflowContext
from aevos.evolution import Dataset, EmbeddingLogregParams, EnsembleParams, params_to_json
from aevos.pii import DataPolicy, Vault
from aevos.public_data import data_file

MODEL = "support-intent"
WORKFLOW = "support.triage"
QUEUE = "support"
REVIEW_QUEUE = "support-review"
QA_QUEUE = "support-qa"
ROUTING_POLICY = "support-routing"
PROMOTION_POLICY = "support-promotion"
POLICIES = Path(__file__).resolve().parent / "policies"
TICKETS_URL_ENV = "SUPPORT_TICKETS_URL"
DEFAULT_TICKETS_URL = "sqlite:///./support_tickets.db"

#: The audit coin: the share of arriving tickets a person checks whatever the model says,
#: while the champion has no certified threshold (the evidence that can certify one), and
#: after (QA of automated tickets, and fresh evidence for the next certification).
AUDIT_SHARE_UNCERTIFIED = 0.6
AUDIT_SHARE = 0.05
#: ... and of the tickets a candidate answers on a canary step: the step's analysis judges
#: its precision on unbiased labels, and at a 5% share the usual 5% would bring two or three
#: by the step's deadline (an inconclusive step, paused for an operator).
AUDIT_SHARE_CANARY = 0.3

#: The recipe the benchmark measured best on banking77 (TF-IDF weighted 0.3, MiniLM head C=30).
ENSEMBLE_PARAMS: dict[str, Any] = params_to_json(
    EnsembleParams(tfidf_weight=0.3, embedding=EmbeddingLogregParams(C=30.0))
)

# What is done to a ticket before it is stored, shown to a model or kept as a case:
# personal data (the customer's e-mail, phone numbers, card numbers in the text) is
# tokenised (a vault key is set) or redacted. The ticket id is the company's own reference.
TICKET_POLICY = DataPolicy(action="auto", ignore=["ticket.ticket_id"], classification="internal")


def intents() -> list[str]:
    """The 77 intents, in the data set's order (``data/banking77/categories.json``)."""
    import json

    with data_file("banking77", "categories.json").open(encoding="utf-8") as handle:
        names: list[str] = json.load(handle)
    return names


def intent_form(choices: Sequence[str]) -> list[Field]:
    """The reviewer's form: one choice among the intents (the console's choice list is
    searchable and ordered by the model's suggestions), and an optional note."""
    return [
        Field.choice("intent", choices, label="Intent", help="Type to search the intents"),
        Field.text("note", required=False, max_length=500, label="Note"),
    ]


# -- the company's ticket table ---------------------------------------------------------------

_metadata = sa.MetaData()
tickets_table = sa.Table(
    "support_tickets",
    _metadata,
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("ticket_id", sa.String(100), nullable=False, unique=True),
    sa.Column("customer", sa.String(500), nullable=True),  # tokenised, never raw
    sa.Column("text", sa.Text, nullable=False),  # tokenised, as the model saw it
    sa.Column("intent", sa.String(100), nullable=False),
    sa.Column("routed_by", sa.String(20), nullable=False),  # model | reviewer
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("audited", sa.Boolean, nullable=False),
    sa.Column("task_id", sa.String(200), nullable=True),
    sa.Column("routed_at", sa.Float, nullable=False),
)


class TicketTable:
    """The ticket system routed tickets are written to: a table in the company's own
    database (any SQLAlchemy URL; by default a SQLite file beside nothing of aevos's).

    Writes are keyed by the step's idempotency key, so a retried or replayed write lands
    once; a ticket id is unique too.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        if url.get_backend_name() in ("postgresql", "postgres") and url.drivername in (
            "postgresql",
            "postgres",
        ):
            url = url.set(drivername="postgresql+psycopg")
        self._url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                sqlite_file = self._url.get_backend_name() == "sqlite"
                engine = sa.create_engine(
                    self._url,
                    poolclass=NullPool,
                    connect_args={"timeout": 30} if sqlite_file else {},
                )
                _metadata.create_all(engine, checkfirst=True)
                self._engine = engine
            return self._engine

    def write(self, key: str, record: Mapping[str, Any]) -> bool:
        """Write ``record`` under ``key``; False if it was written before."""
        engine = self.engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(tickets_table)
            .on_conflict_do_nothing()
            .returning(tickets_table.c.idempotency_key)
        )
        with engine.begin() as conn:
            written = conn.execute(
                stmt, {**record, "idempotency_key": key, "routed_at": time.time()}
            ).first()
        return written is not None

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(tickets_table).order_by(tickets_table.c.routed_at))
            return [dict(row._mapping) for row in result]

    def clear(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(tickets_table.delete())


# -- the application --------------------------------------------------------------------------


@dataclass
class Settings:
    """What an operator may tune while the app runs (read by each new run)."""

    audit_share_uncertified: float = AUDIT_SHARE_UNCERTIFIED
    audit_share: float = AUDIT_SHARE
    audit_share_canary: float = AUDIT_SHARE_CANARY

    @classmethod
    def from_env(cls) -> Settings:
        """``SUPPORT_AUDIT_SHARE_UNCERTIFIED``, ``SUPPORT_AUDIT_SHARE`` and
        ``SUPPORT_AUDIT_SHARE_CANARY`` if set (worker processes started with
        ``aevos worker --app examples.support_triage.serve:app``)."""
        return cls(
            float(os.environ.get("SUPPORT_AUDIT_SHARE_UNCERTIFIED", AUDIT_SHARE_UNCERTIFIED)),
            float(os.environ.get("SUPPORT_AUDIT_SHARE", AUDIT_SHARE)),
            float(os.environ.get("SUPPORT_AUDIT_SHARE_CANARY", AUDIT_SHARE_CANARY)),
        )


def make_app(
    database_url: str | None = None,
    *,
    tickets_url: str | None = None,
    vault_key: str | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Aevos:
    """The support-triage app on ``database_url`` (``options`` go to :class:`Aevos`).

    ``tickets_url`` is the ticket system's database (default: ``$SUPPORT_TICKETS_URL``, else
    ``support_tickets.db`` in the working directory; read it with ``TicketTable(tickets_url)``). ``settings`` (kept
    by the caller) may be changed while the app runs. ``vault_key`` keys the PII vault (default: ``AEVOS_VAULT_KEY``);
    without a key nothing is kept to learn from (kept cases are never stored in plain text).
    """
    options.setdefault("policies", POLICIES)
    app = Aevos(database_url, **options)
    if vault_key is not None:
        app.vault = Vault(app.store, Vault.decode_key(vault_key))
    app.queue(QUEUE, concurrency=32)
    table = TicketTable(tickets_url or os.environ.get(TICKETS_URL_ENV) or DEFAULT_TICKETS_URL)
    tuning = settings or Settings.from_env()
    choices = intents()
    form = intent_form(choices)
    app.retraining  # noqa: B018 - builds the retraining workflow, so this app's workers run it

    @app.step(name="support.write_ticket", retries=3)
    def write_ticket(ctx: StepContext, record: dict[str, Any]) -> dict[str, Any]:
        first = table.write(ctx.idempotency_key, record)
        return {"receipt": ctx.idempotency_key, "first_write": first}

    @app.workflow(name=WORKFLOW, queue=QUEUE, data_policy=TICKET_POLICY)
    def triage(ctx: WorkflowContext, ticket: dict[str, Any]) -> dict[str, Any]:
        # `ticket` is already under the data policy: personal data is tokenised.
        ticket_id, text = str(ticket["ticket_id"]), str(ticket["text"])
        prediction = ctx.predict(MODEL, text)
        # The audit coin, drawn for every ticket whatever the model's confidence, so the
        # tickets it flags are an unbiased sample of traffic: the only labels certification
        # may use. Higher while nothing is certified (that sample is what certifies) and on a
        # rollout's canary (that sample is what its analysis judges the candidate on).
        if prediction.certified_threshold is None:
            share = tuning.audit_share_uncertified
        elif prediction.route == "canary":
            share = tuning.audit_share_canary
        else:
            share = tuning.audit_share
        audited = ctx.random() < share
        routing = ctx.decide(ROUTING_POLICY, prediction=prediction)
        case = {"ticket_id": ticket_id, "text": text}
        task_id: str | None
        if routing.result == "allow":
            intent, routed_by = str(prediction.label), "model"
            # An audited automated ticket is also checked by a person, without waiting.
            task_id = (
                ctx.qa_sample(
                    prediction,
                    share=1.0,
                    form=form,
                    case=case,
                    title=f"Check the routing of ticket {ticket_id}",
                    queue=QA_QUEUE,
                )
                if audited
                else None
            )
        else:
            decision = ctx.ask_human(
                f"Route ticket {ticket_id}",
                form=form,
                case=case,
                prediction=prediction,
                queue=REVIEW_QUEUE,
                sampled=audited,
            )
            intent, routed_by, task_id = str(decision["intent"]), "reviewer", decision.task_id
        receipt = write_ticket(
            ctx,
            {
                "ticket_id": ticket_id,
                "customer": ticket.get("customer"),
                "text": text,
                "intent": intent,
                "routed_by": routed_by,
                "model_version": prediction.version,
                "confidence": prediction.confidence,
                "audited": audited,
                "task_id": task_id,
            },
        )
        return {
            "ticket_id": ticket_id,
            "intent": intent,
            "routed_by": routed_by,
            "audited": audited,
            "model_version": prediction.version,
            "confidence": prediction.confidence,
            "certified": prediction.certified,
            "call_id": prediction.call_id,
            "task_id": task_id,
            **receipt,
        }

    return app


# -- training, labels, retraining -------------------------------------------------------------


def load_banking(split: str = "train") -> list[tuple[str, str]]:
    """``(text, intent)`` rows of ``data/banking77/<split>.csv``."""
    with data_file("banking77", f"{split}.csv").open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def per_intent(rows: Sequence[tuple[str, str]], n: int, *, seed: int = 0) -> list[int]:
    """Indices of ``n`` random rows of each intent (fewer when an intent has fewer)."""
    by_intent: dict[str, list[int]] = {}
    for i, (_, intent) in enumerate(rows):
        by_intent.setdefault(intent, []).append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    for intent in sorted(by_intent):
        indices = by_intent[intent]
        chosen.extend(rng.sample(indices, min(n, len(indices))))
    return sorted(chosen)


def train_first_version(
    app: Aevos,
    rows: Sequence[tuple[str, str]],
    *,
    recipe: str = "ensemble",
    params: Mapping[str, Any] | None = None,
    tenant: str = "default",
) -> int:
    """Train version 1 of the model on ``rows`` and make it the champion; its version."""
    version = register_trained(
        app,
        rows,
        recipe=recipe,
        params=params,
        tags={"support.seed": "true"},
        tenant=tenant,
        created_by="system:support-triage",
    )
    app.promotions.promote(
        MODEL, version, alias="champion", tenant=tenant, by="system:support-triage"
    )
    return version


def register_trained(
    app: Aevos,
    rows: Sequence[tuple[str, str]],
    *,
    recipe: str,
    params: Mapping[str, Any] | None,
    tags: Mapping[str, str],
    tenant: str,
    created_by: str,
) -> int:
    """Train ``recipe`` on ``rows`` and register the result as a new version of the model
    (tagged with its recipe and ``tags``), without promoting it; its version."""
    result = app.recipes.train(recipe, Dataset.from_rows(rows), params)
    artifact = result.artifact
    assert artifact is not None, f"recipe {recipe} gave no servable artifact"
    return app.models.register(
        MODEL,
        artifact.data,
        flavor=artifact.flavor,
        config=dict(artifact.config),
        parts=artifact.blobs,
        tags={"aevos.recipe": f"{recipe}@{result.recipe_version}", **tags},
        tenant=tenant,
        created_by=created_by,
    ).version


def import_labels(
    app: Aevos,
    rows: Iterable[tuple[str, str]],
    *,
    tenant: str = "default",
    actor: str = "service:helpdesk-import",
) -> int:
    """Record already-labelled tickets (the ones version 1 learned from) as labels, so that
    every retraining learns from them too: each is answered once through the gateway (its
    input is kept as a case, under the data policy) and labelled as ground truth. They are
    not an unbiased sample of traffic, so certification never uses them. Returns the count."""
    items: list[dict[str, Any]] = []
    for text, intent in rows:
        result = app.gateway.predict(MODEL, text, tenant=tenant, actor=actor)
        items.append({"case_id": result.call_id, "label": intent, "unbiased": False})
    app.gateway.flush()  # the cases are kept by the gateway's recorder: written now
    for start in range(0, len(items), 1000):
        app.labels.record_many(items[start : start + 1000], tenant=tenant, actor=actor)
    return len(items)


def configure_retraining(
    app: Aevos,
    *,
    recipe: str = "ensemble",
    params: Mapping[str, Any] | None = None,
    every_labels: int = 250,
    reserve: float = 1.0,
    tenant: str = "default",
    **settings: Any,
) -> None:
    """Retrain the model every ``every_labels`` new labels with ``recipe``; a certified
    candidate is promoted by ``policies/support-promotion.yaml``.

    ``reserve=1.0``: every audited ticket's label is kept for certification and never
    trained on, so each certification sees the whole unbiased sample (the benchmark's
    best setting; retraining's default keeps half of it for training)."""
    app.retraining.configure(
        MODEL,
        recipe=recipe,
        params=ENSEMBLE_PARAMS if params is None and recipe == "ensemble" else params,
        every_labels=every_labels,
        reserve=reserve,
        policy=PROMOTION_POLICY,
        tenant=tenant,
        actor="system:support-triage",
        **settings,
    )


def ticket(ticket_id: str, text: str, customer: str | None = None) -> dict[str, Any]:
    """A ticket as the help desk sends it (``customer``: an e-mail address, say)."""
    return {"ticket_id": ticket_id, "customer": customer, "text": text}


def start_tickets(app: Aevos, tickets: Iterable[Mapping[str, Any]]) -> list[RunHandle[Any]]:
    """One triage run per ticket, idempotent by the ticket id."""
    triage = app.workflow_named(WORKFLOW)
    return [
        triage.options(idempotency_key=f"ticket:{t['ticket_id']}").start(dict(t)) for t in tickets
    ]
