"""The README's example runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_matches_the_file() -> None:
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "examples" / "quickstart.py").read_text()
    for line in ("@app.step(retries=3, timeout=10)", "@app.workflow()", "triage.start("):
        assert line in readme and line in source


def test_quickstart_runs(tmp_path: Path) -> None:
    env = {**os.environ, "AEVOS_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("{'queue': 'billing', 'ticket': 'billing/")
    assert lines[1].startswith("{'queue': 'general', 'ticket': 'general/")
