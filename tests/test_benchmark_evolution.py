"""``benchmarks/evolution_banking77.py --quick`` end to end: the real kernel (worker
processes on SQLite), simulated reviewers, retraining by the system's own triggers, the
measurements on test.csv and the passive learner; the JSON it writes has the issue's keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_the_curve_and_the_final_line(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "benchmarks/evolution_banking77.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    for key in ("auto_routed", "precision", "reviews", "accuracy", "passive_auto_routed", "curve"):
        assert key in result, key
    assert 0.0 <= result["auto_routed"] <= 1.0 and 0.0 <= result["passive_auto_routed"] <= 1.0
    assert 0.5 <= result["accuracy"] <= 1.0
    assert result["precision"] is None or 0.0 <= result["precision"] <= 1.0
    # Every ticket before the first certificate is reviewed; none is reviewed twice but an
    # audited automated one (its QA answer), so reviews are at most the tickets.
    tickets = result["settings"]["tickets"]
    assert tickets == 240 and 0 < result["reviews"] <= tickets
    assert result["reviews"] == result["routed"].get("reviewer", 0) + result["qa_reviews"]
    assert sum(result["routed"].values()) == tickets
    curve = result["curve"]
    assert [p["cases"] for p in curve] == [60, 120, 180, 240]
    assert [p["reviews"] for p in curve] == sorted(p["reviews"] for p in curve)
    for point in curve:
        assert 0.0 <= point["auto_routed"] <= 1.0 and 0.0 <= point["accuracy"] <= 1.0
        if point["threshold"] is None:  # an uncertified champion automates nothing
            assert point["auto_routed"] == 0.0 and point["precision"] is None
    assert curve[0]["champion"] == 1 and curve[0]["auto_routed"] == 0.0  # nothing certified yet
    assert curve[-1]["auto_routed"] == result["auto_routed"]
    assert result["retrainings"]["total"] >= 1
    # The final line, as the issue prints it.
    final = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"final: auto-routed \d+\.\d% at precision (\d+\.\d%|—) on test\.csv, "
        r"reviews [\d,]+ \(passive \d+\.\d%\)",
        final,
    ), final
