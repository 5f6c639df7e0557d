"""A short run of ``benchmarks/review_load.py``: a served app, ten reviewers for three
seconds, no errors, and every decision completes its run (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import review_load


def test_ten_reviewers_for_three_seconds(database_url: str, tmp_path: Path) -> None:
    result = review_load.run(
        database_url,
        duration=3.0,
        reviewers=10,
        backlog=20,
        feeders=2,
        workers=4,
        log=tmp_path / "server.log",
    )
    assert result["errors"] == 0, result["error_samples"]
    assert result["conflicts"] == 0 and result["server_unhandled_errors"] == 0
    assert result["decisions"] > 0
    # Every submission woke its run, which settled the decision and finished.
    assert result["runs_completed"] >= result["decisions"]
    assert result["runs"].get("FAILED", 0) == 0
    report = review_load.render(result)
    assert "no errors: PASS" in report and "every decision completed its run: PASS" in report
    for endpoint in review_load.REVIEWER_ENDPOINTS:
        assert result["endpoints"][endpoint]["requests"] > 0
