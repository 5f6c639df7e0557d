"""Insurance claims intake: parse, score, decide and file each claim as one durable run.

Every row of ``insurance_claims.csv`` becomes a run of ``claims.intake_claim`` on the
``claims`` queue, started with the claim's policy number as its idempotency key, so feeding
the same file twice starts nothing new. A run is four steps:

1. ``parse_claim``    validate the raw CSV row and normalise it (numbers, ISO dates);
2. ``score_claim``    a transparent rules score: points per named risk signal, no ML;
3. ``decide``         auto-approve, send to human review, or reject, by thresholds;
4. ``file_decision``  write the decision into the claims ledger (the "connector"), keyed by
                      the step's idempotency key so a retried or replayed write lands once.

The business rules are plain functions (:func:`normalise`, :func:`score`, :func:`decision_for`)
so they can be read and tested without a database; the steps only make them durable.

Run it with ``aevos demo`` or ``python -m examples.claims_intake [N]``.
"""

from __future__ import annotations

import csv
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from aevos import Aevos, RunHandle, StepContext, StepFailedError, WorkflowContext
from aevos.public_data import data_file

WORKFLOW = "claims.intake_claim"
QUEUE = "claims"
QUEUE_CONCURRENCY = 8  # claims in flight at once across every worker on every host

APPROVE = "auto_approve"
REVIEW = "human_review"
REJECT = "reject"
OUTCOMES = (APPROVE, REVIEW, REJECT)

# Decision thresholds on the risk score (see `score`). A small, low-risk claim is paid
# without a person looking at it; a claim with many risk signals is refused outright.
APPROVE_MAX_POINTS = 3
APPROVE_MAX_AMOUNT = 10_000.0
REJECT_MIN_POINTS = 5
NEW_POLICY_DAYS = 180  # a claim soon after the policy was bound is a classic fraud signal

SEVERITY_POINTS = {"Trivial Damage": 0, "Minor Damage": 1, "Major Damage": 2, "Total Loss": 2}

DATA_FILE = Path("insurance_claims") / "insurance_claims.csv"
# An empty trailing column the data set's Spark export left behind.
_EXPORT_ARTIFACTS = frozenset({"_c39"})


class InvalidClaimError(ValueError):
    """A CSV row that cannot be a claim; the message names the field."""


# -- the rules -------------------------------------------------------------------------------


def normalise(row: dict[str, str]) -> dict[str, Any]:
    """A validated claim from a raw CSV row: amounts as numbers, dates as ISO strings.

    The data set writes "?" for unknown values; they become ``None``.
    """

    def text(name: str) -> str:
        value = (row.get(name) or "").strip()
        if not value:
            raise InvalidClaimError(f"{name} is missing")
        return value

    def number(name: str) -> float:
        try:
            value = float(text(name))
        except ValueError:
            raise InvalidClaimError(f"{name} is not a number: {row.get(name)!r}") from None
        if value < 0:
            raise InvalidClaimError(f"{name} is negative: {value}")
        return value

    def day(name: str) -> date:
        try:
            return datetime.strptime(text(name), "%m/%d/%Y").date()  # noqa: DTZ007 - a calendar date
        except ValueError:
            raise InvalidClaimError(f"{name} is not a M/D/YYYY date: {row.get(name)!r}") from None

    def yes_no(name: str) -> bool | None:
        value = (row.get(name) or "?").strip().upper()
        return {"YES": True, "NO": False}.get(value)

    total = number("total_claim_amount")
    parts = number("injury_claim") + number("property_claim") + number("vehicle_claim")
    if abs(parts - total) > 0.5:
        raise InvalidClaimError(
            f"injury, property and vehicle claims add up to {parts:.2f}, not the total {total:.2f}"
        )
    premium = number("policy_annual_premium")
    if premium == 0:
        raise InvalidClaimError("policy_annual_premium is zero")
    return {
        "policy_number": text("policy_number"),
        "policy_state": text("policy_state"),
        "policy_bind_date": day("policy_bind_date").isoformat(),
        "policy_annual_premium": premium,
        "policy_deductible": number("policy_deductable"),  # sic in the data set
        "incident_date": day("incident_date").isoformat(),
        "incident_type": text("incident_type"),
        "incident_severity": text("incident_severity"),
        "authorities_contacted": text("authorities_contacted"),
        "police_report_available": yes_no("police_report_available"),
        "property_damage": yes_no("property_damage"),
        "bodily_injuries": int(number("bodily_injuries")),
        "witnesses": int(number("witnesses")),
        "total_claim_amount": total,
        "injury_claim": number("injury_claim"),
        "property_claim": number("property_claim"),
        "vehicle_claim": number("vehicle_claim"),
    }


def score(claim: dict[str, Any]) -> dict[str, Any]:
    """Risk points, one entry per signal that fired, so every decision can be explained."""
    signals: list[dict[str, Any]] = []

    def signal(rule: str, points: int, detail: str) -> None:
        if points:
            signals.append({"rule": rule, "points": points, "detail": detail})

    ratio = claim["total_claim_amount"] / claim["policy_annual_premium"]
    signal(
        "claim_to_premium",
        2 if ratio >= 60 else 1 if ratio >= 30 else 0,
        f"claim is {ratio:.0f}x the annual premium",
    )
    severity = claim["incident_severity"]
    signal("severity", SEVERITY_POINTS.get(severity, 2), severity)
    if claim["police_report_available"] is not True:
        signal("no_police_report", 1, "no police report on file")
    if claim["authorities_contacted"] == "None":
        signal("no_authorities", 1, "no authorities were contacted")
    age = date.fromisoformat(claim["incident_date"]) - date.fromisoformat(claim["policy_bind_date"])
    if 0 <= age.days < NEW_POLICY_DAYS:
        signal("new_policy", 2, f"incident {age.days} days after the policy was bound")
    return {"points": sum(s["points"] for s in signals), "signals": signals}


def decision_for(claim: dict[str, Any], risk: dict[str, Any]) -> dict[str, Any]:
    """Approve, review or reject by the thresholds above; ``reasons`` say which one fired."""
    amount = claim["total_claim_amount"]
    deductible = claim["policy_deductible"]
    points = risk["points"]
    if claim["incident_date"] < claim["policy_bind_date"]:
        outcome, reasons = REJECT, ["incident happened before the policy was bound"]
    elif amount <= deductible:
        outcome, reasons = REJECT, [f"claim {amount:.2f} does not exceed the deductible"]
    elif points >= REJECT_MIN_POINTS:
        outcome, reasons = REJECT, [f"risk score {points} >= {REJECT_MIN_POINTS}"]
    elif points <= APPROVE_MAX_POINTS and amount <= APPROVE_MAX_AMOUNT:
        outcome = APPROVE
        reasons = [
            f"risk score {points} <= {APPROVE_MAX_POINTS}, amount <= {APPROVE_MAX_AMOUNT:.0f}"
        ]
    else:
        outcome = REVIEW
        reasons = [f"risk score {points}, amount {amount:.2f}: needs an adjuster"]
    payout = round(amount - deductible, 2) if outcome == APPROVE else 0.0
    return {"outcome": outcome, "points": points, "reasons": reasons, "payout": payout}


# -- the connector ---------------------------------------------------------------------------

_metadata = sa.MetaData()
decisions_table = sa.Table(
    "claims_decisions",
    _metadata,
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("policy_number", sa.String(40), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Column("payout", sa.Float, nullable=False),
    sa.Column("filed_at", sa.Float, nullable=False),
)


class DecisionLedger:
    """The system of record decisions are filed into: a table beside aevos's own.

    It stands in for an external claims system. Writes are keyed by the step's idempotency
    key: if an attempt commits the row and then dies before aevos records the step, the
    retry (or the replay on another worker) finds the row and files nothing twice.
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
                # No pool: the ledger is touched once per claim, and a pool would hold
                # connections open after the app that owns this ledger is closed.
                engine = sa.create_engine(
                    self._url,
                    poolclass=NullPool,
                    connect_args={"timeout": 30} if sqlite_file else {},
                )
                _metadata.create_all(engine, checkfirst=True)
                self._engine = engine
            return self._engine

    def file(self, key: str, record: dict[str, Any]) -> bool:
        """File ``record`` under ``key``; False if that key was filed already."""
        engine = self.engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        # RETURNING rather than rowcount: SQLAlchemy 2.1 reports -1 for this INSERT on psycopg.
        stmt = (
            dialect.insert(decisions_table)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(decisions_table.c.idempotency_key)
        )
        with engine.begin() as conn:
            filed = conn.execute(
                stmt, {**record, "idempotency_key": key, "filed_at": time.time()}
            ).first()
        return filed is not None

    def outcomes(self, keys: Iterable[str]) -> dict[str, str]:
        """The filed outcome of each of ``keys`` that was filed."""
        wanted = list(keys)
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(
                    sa.select(decisions_table.c.idempotency_key, decisions_table.c.outcome).where(
                        decisions_table.c.idempotency_key.in_(wanted[start : start + 500])
                    )
                )
                found.update((key, outcome) for key, outcome in rows)
        return found


# -- the application -------------------------------------------------------------------------


def make_app(database_url: str | None = None, **options: Any) -> Aevos:
    """The claims intake app on ``database_url`` (``options`` go to :class:`Aevos`)."""
    app = Aevos(database_url, **options)
    app.queue(QUEUE, concurrency=QUEUE_CONCURRENCY)
    ledger = DecisionLedger(app.database_url)

    @app.step(name="claims.parse_claim")
    def parse_claim(ctx: StepContext, row: dict[str, str]) -> dict[str, Any]:
        return normalise(row)

    @app.step(name="claims.score_claim")
    def score_claim(ctx: StepContext, claim: dict[str, Any]) -> dict[str, Any]:
        return score(claim)

    @app.step(name="claims.decide")
    def decide(ctx: StepContext, claim: dict[str, Any], risk: dict[str, Any]) -> dict[str, Any]:
        return decision_for(claim, risk)

    # Retried: the ledger is the one step that talks to another system.
    @app.step(name="claims.file_decision", retries=3)
    def file_decision(
        ctx: StepContext, claim: dict[str, Any], decision: dict[str, Any]
    ) -> dict[str, Any]:
        record = {
            "policy_number": claim["policy_number"],
            "outcome": decision["outcome"],
            "points": decision["points"],
            "payout": decision["payout"],
        }
        new = ledger.file(ctx.idempotency_key, record)
        return {"receipt": ctx.idempotency_key, "first_filing": new}

    @app.workflow(name=WORKFLOW, queue=QUEUE)
    def intake_claim(ctx: WorkflowContext, row: dict[str, str]) -> dict[str, Any]:
        try:
            claim = parse_claim(ctx, row)
        except StepFailedError as exc:
            # A malformed row is a business outcome, not a crash: record why and move on.
            policy = (row.get("policy_number") or "?").strip()
            invalid = {"policy_number": policy, "total_claim_amount": 0.0}
            decision = {
                "outcome": REJECT,
                "points": 0,
                "reasons": [f"invalid claim: {exc.error_message}"],
                "payout": 0.0,
            }
            receipt = file_decision(ctx, invalid, decision)
            return {"policy_number": policy, **decision, **receipt}
        risk = score_claim(ctx, claim)
        decision = decide(ctx, claim, risk)
        receipt = file_decision(ctx, claim, decision)
        return {"policy_number": claim["policy_number"], **decision, **receipt}

    return app


# -- feeding it the data set -----------------------------------------------------------------


def default_data_file() -> Path:
    """The claims CSV of the data sets aevos ships (``data/``, or ``$AEVOS_DATA_DIR``)."""
    return data_file(*DATA_FILE.parts)


def load_claims(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """Rows of the claims CSV (read-only), at most ``limit`` of them."""
    rows: list[dict[str, str]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if limit is not None and len(rows) >= limit:
                break
            rows.append({k: v for k, v in row.items() if k and k not in _EXPORT_ARTIFACTS})
    return rows


def claim_key(row: dict[str, str]) -> str | None:
    """The idempotency key of a claim's run: its policy number (one claim per policy)."""
    return (row.get("policy_number") or "").strip() or None


def start_claims(app: Aevos, rows: Iterable[dict[str, str]]) -> list[RunHandle[Any]]:
    """Enqueue one intake run per row; rows already started return their existing run."""
    intake = app.workflow_named(WORKFLOW)
    return [intake.options(idempotency_key=claim_key(row)).start(row) for row in rows]


@dataclass
class IntakeSummary:
    """How a batch of intake runs ended."""

    runs: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    created_since: int = 0  # runs created after the ``since`` given to `summarize`
    steps_since: int = 0  # steps that finished after it


def summarize(app: Aevos, run_ids: Sequence[str], since: float = 0.0) -> IntakeSummary:
    summary = IntakeSummary(runs=len(run_ids))
    for run_id in run_ids:
        info = app.get_run(run_id)
        summary.by_status[info.status.value] += 1
        summary.created_since += info.created_at >= since
        if isinstance(info.output, dict) and "outcome" in info.output:
            summary.outcomes[info.output["outcome"]] += 1
        summary.steps_since += sum(1 for s in app.list_steps(run_id) if s.finished_at >= since)
    return summary


def main(argv: Sequence[str] = ()) -> None:
    """Intake the first N claims (default 20) with an embedded worker; print the outcome."""
    limit = int(argv[0]) if argv else 20
    with make_app() as app:
        started = time.time()
        handles = start_claims(app, load_claims(default_data_file(), limit))
        worker = app.worker(queues=[QUEUE]).start()
        try:
            for handle in handles:
                handle.result(timeout=120)
        finally:
            worker.stop()
        summary = summarize(app, [h.run_id for h in handles], since=started)
    print(f"{summary.runs} claims: {dict(summary.outcomes)}; runs {dict(summary.by_status)}")


if __name__ == "__main__":
    main(sys.argv[1:])
