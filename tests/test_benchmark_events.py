"""``benchmarks/events_throughput.py`` with a small N: a private nats-server, 1, 2 and 4
worker processes on PostgreSQL; it prints the three lines it promises and loses or doubles
no event (the rates themselves are not asserted: tests are timing-free)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.conftest import IN_CI, require_postgres
from tests.nats_support import NATS_SERVER

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.postgres
def test_events_throughput_benchmark_with_a_small_n(tmp_path: Path) -> None:
    if not os.access(NATS_SERVER, os.X_OK):
        if IN_CI:
            pytest.fail(f"nats-server not found at {NATS_SERVER} (CI must run this benchmark)")
        pytest.skip(f"nats-server not found at {NATS_SERVER}")
    base = sa.make_url(require_postgres())
    url = base.set(database=f"{base.database}_events_bench").render_as_string(hide_password=False)
    out = tmp_path / "events.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/events_throughput.py",
            "--n",
            "60",
            "--rounds",
            "1",
            "--postgres-url",
            url,
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert re.fullmatch(
        r"events 60: 1 worker \d+ ev/s, 2 workers \d+ ev/s, 4 workers \d+ ev/s", lines[0]
    )
    assert re.fullmatch(r"scaling: 2 workers \d+\.\d\dx, 4 workers \d+\.\d\dx one worker", lines[1])
    assert lines[2] == "lost 0, doubled 0"
    figures = json.loads(out.read_text())
    assert figures["events"] == 180 and figures["runs"] == 180
    assert figures["lost"] == 0 and figures["doubled"] == 0
    assert set(figures["rate"]) == {"1", "2", "4"} and all(r > 0 for r in figures["rate"].values())
