"""A worker SIGKILLed in the middle of training: the retraining resumes on another worker and
registers exactly one version, on SQLite and PostgreSQL.

The recipe ``gated-tfidf`` (``tests/apps/retrain_app.py``) marks each training attempt with a
file and then waits for the test's gate file, so the kill lands mid-training by construction,
not by timing. After the kill the gate opens and a fresh worker takes the run over once the
dead worker's lease lapses.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.apps.retrain_app import CERTIFY_FAST, build
from tests.apps.workers import WorkerPool

from aevos.records.retraining import RetrainingStatus
from aevos.retraining import RUN_TAG, WORKFLOW

pytestmark = pytest.mark.slow

DEADLINE = 120.0


def wait_for(condition: object, what: str, pool: WorkerPool) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        pool.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {DEADLINE}s\n{pool.log_tail()}")
        time.sleep(0.05)


def test_a_retraining_survives_a_worker_killed_mid_training(
    database_url: str, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    app = build(database_url)
    pool: WorkerPool | None = None
    try:
        app.retraining.configure("intents", recipe="gated-tfidf", **CERTIFY_FAST)
        run_id = app.retraining.start("intents").run_id
        pool = WorkerPool(
            "tests.apps.retrain_app",
            database_url,
            tmp_path,
            1,
            env={"RETRAIN_GATE": str(gate), "RETRAIN_STARTED": str(started)},
        )
        wait_for(lambda: len(list(started.iterdir())) == 1, "the first training attempt", pool)
        assert app.retraining.run(run_id).status is RetrainingStatus.RUNNING
        pool.kill(0, restart=True)
        gate.touch()
        result = app.handle(run_id).result(timeout=DEADLINE)
    finally:
        if pool is not None:
            pool.close()
    try:
        assert result["status"] == "succeeded" and result["candidate"] == 1
        assert len(list(started.iterdir())) == 2  # the killed attempt and the one that finished
        [version] = app.models.versions("intents")
        assert version.tags[RUN_TAG] == run_id
        record = app.retraining.run(run_id)
        assert record.status is RetrainingStatus.SUCCEEDED and record.candidate == 1
        info = app.get_run(run_id)
        assert info.workflow == WORKFLOW and info.executions >= 2
        steps = [s.name.rsplit(".", 1)[-1] for s in app.list_steps(run_id)]
        assert steps == ["plan", "snapshot", "train", "evaluate", "certify", "promote", "finish"]
        actions = [r.action for r in app.audit.query("default")]
        assert actions.count("model.registered") == 1 and actions.count("model.certified") == 1
    finally:
        app.close()
