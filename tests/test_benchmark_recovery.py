"""``benchmarks/recovery.py --quick`` end to end: a private PostgreSQL restarted twice under
two worker processes, and SQLite filled up under an embedded worker; it prints exactly the
two lines the benchmark promises, with no run failed and no effect doubled."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.apps.faults import postgres_bin

ROOT = Path(__file__).resolve().parents[1]


def test_quick_recovery_benchmark(tmp_path: Path) -> None:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    out = tmp_path / "recovery.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/recovery.py", "--quick", "--strict", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert re.fullmatch(
        r"database restart \(PostgreSQL\): 40 runs, failed 0, doubled 0, "
        r"extra delay max \d+\.\d s over the outage",
        lines[0],
    )
    assert re.fullmatch(
        r"disk full \(SQLite\): 20 runs, failed 0, doubled 0, "
        r"all completed \d+\.\d s after space returned",
        lines[1],
    )
    figures = json.loads(out.read_text())
    restart, full = figures["database_restart"], figures["disk_full"]
    assert restart["succeeded"] == 40 and full["succeeded"] == 20
    assert restart["interrupted_runs"] > 0, "no run was in flight during a restart"
    assert full["unfinished_while_full"] > 0, "no run was caught by the full disk"
    assert restart["tracebacks"] == 0
