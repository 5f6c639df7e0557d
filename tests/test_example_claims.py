"""The claims intake example (``examples/claims_intake.py``) and ``aevos demo`` over it.

The demo runs on the real data set, on both backends: every run must succeed, the decisions
must add up to the claims taken in and agree with the plain rules, each decision must be
filed in the ledger exactly once, and running the demo again must start nothing new.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from aevos import Aevos, RunStatus
from aevos.cli import cli
from aevos.cli.demo import load_example

CLAIMS = 50


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("claims_intake")


@pytest.fixture(scope="module")
def rows(example: ModuleType) -> list[dict[str, str]]:
    path = example.default_data_file()
    if not path.is_file():
        pytest.fail(f"the claims data set is missing at {path} (set AEVOS_DATA_DIR)")
    loaded: list[dict[str, str]] = example.load_claims(path, CLAIMS)
    return loaded


@pytest.fixture
def claims_app(example: ModuleType, database_url: str) -> Iterator[Aevos]:
    app: Aevos = example.make_app(database_url, lease_seconds=2.0, poll_interval=0.02)
    yield app
    app.close()


def _demo(database_url: str, *extra: str) -> Any:
    return CliRunner().invoke(
        cli, ["--database-url", database_url, "demo", "--claims", str(CLAIMS), *extra]
    )


def test_demo_takes_in_real_claims_once(
    example: ModuleType, rows: list[dict[str, str]], database_url: str, claims_app: Aevos
) -> None:
    first = _demo(database_url, "--workers", "4")
    assert first.exit_code == 0, first.output
    assert "auto-approved" in first.stdout and "steps/s" in first.stdout

    runs = claims_app.list_runs(workflow=example.WORKFLOW, limit=1000)
    assert len(runs) == CLAIMS
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert {r.idempotency_key for r in runs} == {row["policy_number"] for row in rows}

    # The decisions add up, cover every outcome, and are what the plain rules say.
    by_policy = {r.output["policy_number"]: r.output for r in runs}
    outcomes = Counter(output["outcome"] for output in by_policy.values())
    assert sum(outcomes.values()) == CLAIMS
    assert set(outcomes) == set(example.OUTCOMES)
    for row in rows:
        claim = example.normalise(row)
        expected = example.decision_for(claim, example.score(claim))
        assert by_policy[row["policy_number"]]["outcome"] == expected["outcome"]

    # Each decision was filed once, under its step's idempotency key, as decided.
    receipts = {r.output["receipt"]: r.output["outcome"] for r in runs}
    assert example.DecisionLedger(database_url).outcomes(receipts) == receipts
    assert all(r.output["first_filing"] for r in runs)

    again = _demo(database_url)
    assert again.exit_code == 0, again.output
    assert len(claims_app.list_runs(workflow=example.WORKFLOW, limit=1000)) == CLAIMS
    assert re.search(r"new runs\W+0\b", again.stdout), again.stdout
    assert re.search(r"steps executed\W+0\b", again.stdout), again.stdout


def test_demo_without_the_data_set(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVOS_DATA_DIR", str(tmp_path / "nowhere"))
    result = _demo(database_url)
    assert result.exit_code == 2
    assert "error [data_not_found]: " in result.stderr and "AEVOS_DATA_DIR" in result.stderr


def test_a_malformed_row_is_rejected_not_crashed(
    example: ModuleType, rows: list[dict[str, str]], claims_app: Aevos
) -> None:
    broken = {**rows[0], "policy_number": "X-1", "total_claim_amount": "lots"}
    intake = claims_app.workflow_named(example.WORKFLOW)
    handle = intake.options(idempotency_key="X-1").start(broken)
    worker = claims_app.worker(queues=[example.QUEUE]).start()
    try:
        result = handle.result(timeout=20)
    finally:
        worker.stop()
    assert result["outcome"] == example.REJECT
    assert "total_claim_amount is not a number" in result["reasons"][0]
    steps = [(s.name, s.status) for s in claims_app.list_steps(handle.run_id)]
    assert steps == [("claims.parse_claim", "FAILED"), ("claims.file_decision", "SUCCEEDED")]


def test_the_ledger_files_each_key_once(example: ModuleType, database_url: str) -> None:
    ledger = example.DecisionLedger(database_url)
    record = {"policy_number": "1", "outcome": example.REVIEW, "points": 4, "payout": 0.0}
    key = f"test-{json.dumps(record)}-{id(ledger)}"
    assert ledger.file(key, record) is True
    assert ledger.file(key, {**record, "outcome": example.APPROVE}) is False
    assert ledger.outcomes([key, "never-filed"]) == {key: example.REVIEW}


def test_rules_are_explained(example: ModuleType, rows: list[dict[str, str]]) -> None:
    claim = example.normalise(rows[0])
    assert claim["incident_date"] == "2015-01-25" and claim["policy_bind_date"] == "2014-10-17"
    assert claim["total_claim_amount"] == 71610.0
    assert claim["police_report_available"] is True
    risk = example.score(claim)
    assert risk["points"] == sum(s["points"] for s in risk["signals"])
    assert {s["rule"] for s in risk["signals"]} >= {"claim_to_premium", "severity"}
    small = {**claim, "total_claim_amount": 2000.0, "policy_deductible": 500.0}
    assert example.decision_for(small, {"points": 0})["outcome"] == example.APPROVE
    assert example.decision_for(small, {"points": 0})["payout"] == 1500.0
    assert example.decision_for(small, {"points": 4})["outcome"] == example.REVIEW
    assert example.decision_for(small, {"points": 5})["outcome"] == example.REJECT
    below = {**small, "total_claim_amount": 400.0}
    assert example.decision_for(below, {"points": 0})["outcome"] == example.REJECT
    early = {**small, "incident_date": "2014-01-01"}
    assert example.decision_for(early, {"points": 0})["outcome"] == example.REJECT
    with pytest.raises(example.InvalidClaimError, match="incident_date"):
        example.normalise({**rows[0], "incident_date": "yesterday"})
    with pytest.raises(example.InvalidClaimError, match="add up"):
        example.normalise({**rows[0], "injury_claim": "1"})


def test_example_runs_as_a_script(
    example: ModuleType,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AEVOS_DATABASE_URL", sqlite_url)
    example.main(["5"])
    assert "5 claims:" in capsys.readouterr().out
