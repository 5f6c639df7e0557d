"""Rollout transitions under SIGKILL, on both backends: two operator processes pause and
resume one rollout as fast as they can while the test kills them at random moments. Every
transition is one transaction (the revision-fenced update and its audit record), so
afterwards the rollout's revision counts exactly its audited transitions, pauses and
resumes alternate (never two pauses in a row: no double transition), the audit chain
verifies, and the rollout still moves."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aevos import Aevos

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 4


@pytest.fixture
def app(database_url: str) -> Iterator[Aevos]:
    app = Aevos(database_url)
    for label in ("a", "b"):
        table = {"input": {"x": "number"}, "table": [], "default": {"label": label}}
        app.models.register("m", str(table).replace("'", '"').encode(), flavor="rules")
    app.models.promote("m", 1, alias="champion")
    yield app
    app.close()


def _spawn(database_url: str, rollout_id: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AEVOS_DATABASE_URL": database_url}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "tests.apps.rollout_churn", rollout_id],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )


def test_sigkilled_operators_leave_a_consistent_rollout(database_url: str, app: Aevos) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", time.time_ns() % 2**32)))
    rollout = app.rollouts.start("m", 2)
    for _ in range(ROUNDS):
        procs = [_spawn(database_url, rollout.rollout_id) for _ in range(2)]
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.05, 0.5))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGKILL)
            for proc in procs:
                proc.wait(timeout=30)
                if proc.stdout is not None:
                    proc.stdout.close()
    current = app.rollouts.get(rollout.rollout_id)
    history = app.rollouts.history(rollout.rollout_id)
    assert current.revision == len(history) - 1 > ROUNDS
    moves = [t.action for t in history[1:]]
    expected = ["rollout.paused", "rollout.resumed"] * len(moves)
    assert moves == expected[: len(moves)]
    assert current.state == ("paused" if moves[-1] == "rollout.paused" else "progressing")
    assert app.rollouts.active("m") == current
    assert app.audit.verify("default").ok
    # Still movable, by anyone holding its current revision.
    ended = app.rollouts.abort(rollout.rollout_id, actor="operator:last#t")
    assert ended.state == "aborted" and app.rollouts.active("m") is None
