"""``benchmarks/recovery.py --quick`` end to end: a private PostgreSQL restarted twice under
two worker processes, SQLite filled up under an embedded worker, and three workers killed
with SIGKILL inside a step on each backend; it prints exactly the four lines the benchmark
promises, with no run failed and no effect doubled."""

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
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
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
    for line, backend in zip(lines[2:], ("SQLite", "PostgreSQL"), strict=True):
        assert re.fullmatch(
            rf"recovery after SIGKILL \({backend}\): p50 \d+\.\d s, max \d+\.\d s, doubled 0",
            line,
        ), line
    figures = json.loads(out.read_text())
    restart, full = figures["database_restart"], figures["disk_full"]
    assert restart["succeeded"] == 40 and full["succeeded"] == 20
    assert restart["interrupted_runs"] > 0, "no run was in flight during a restart"
    assert full["unfinished_while_full"] > 0, "no run was caught by the full disk"
    assert restart["tracebacks"] == 0
    for killed in figures["sigkill"].values():
        assert killed["kills"] == 3 and len(killed["recovery_seconds"]) == 3
        assert killed["succeeded"] == 3 and killed["committed_steps_repeated"] == 0
        assert killed["tracebacks"] == 0
