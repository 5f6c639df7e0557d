"""A worker SIGKILLed in the middle of a replay's batch: the replay resumes on another worker
from that batch, never re-deciding a finished one, on SQLite and PostgreSQL.

The candidate's flavor (``gated-sklearn``, ``tests/apps/replay_app.py``) files every decision
and holds the fifteenth until the test opens a gate, so the kill lands in the second batch of
ten by construction. The newest ten cases (the first batch, finished) and the oldest ten (the
last batch, decided after the restart) are each decided once; the second batch's cases are
decided again from its start.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.apps.replay_app import FLAVOR
from tests.apps.workers import WorkerPool
from tests.test_replay import MODEL, artifact, queries

from aevos import Aevos
from aevos.pii import Vault

pytestmark = pytest.mark.slow

DEADLINE = 120.0


def test_a_replay_survives_a_worker_killed_mid_batch(database_url: str, tmp_path: Path) -> None:
    decided, gate = tmp_path / "decided", tmp_path / "gate"
    decided.mkdir()
    key = Vault.generate_key()
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    app.vault = Vault(app.store, Vault.decode_key(key))
    pool: WorkerPool | None = None
    try:
        model = artifact(20)
        app.models.register(
            MODEL, model, flavor="sklearn", signature={"type": "string"}, aliases=["champion"]
        )
        candidate = app.models.register(MODEL, model, flavor=FLAVOR).version
        for text, _ in queries(30):
            app.gateway.predict(MODEL, text)
        app.gateway.flush()
        # Ten cases a second: three batches of ten, a durable sleep between them.
        replay_id = app.replays.start(MODEL, candidate, rate=10, criteria={"min_cases": 30})
        pool = WorkerPool(
            "tests.apps.replay_app",
            database_url,
            tmp_path,
            1,
            env={
                "AEVOS_VAULT_KEY": key,
                "REPLAY_DECIDED": str(decided),
                "REPLAY_HOLD_AFTER": "15",
                "REPLAY_GATE": str(gate),
            },
        )
        deadline = time.monotonic() + DEADLINE
        while len(list(decided.iterdir())) < 15:
            pool.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"the replay never reached its second batch\n{pool.log_tail()}")
            time.sleep(0.05)
        pool.kill(0, restart=True)
        gate.touch()
        result = app.handle(replay_id).result(timeout=DEADLINE)
    finally:
        if pool is not None:
            pool.close()
    try:
        assert result["status"] == "passed", result
        replay = app.replays.get(replay_id)
        assert replay.figures["cases"] == 30 and replay.figures["decided"] == 30
        assert replay.figures["agreement"] == 1.0 and replay.figures["expired"] == 0
        newest_first = sorted(
            app.cases.find(tenant="default", model=MODEL),
            key=lambda c: (c.created_at, c.case_id),
            reverse=True,
        )
        counts = Counter(path.name.split("-")[0] for path in decided.iterdir())

        def times(index: int) -> int:
            text = str(newest_first[index].input)
            return counts[hashlib.sha256(text.encode()).hexdigest()[:16]]

        assert [times(i) for i in range(10)] == [1] * 10  # the finished batch: not again
        assert [times(i) for i in range(20, 30)] == [1] * 10
        assert [times(i) for i in range(10, 15)] == [2] * 5  # decided, then again after
        assert [times(i) for i in range(15, 20)] == [1] * 5
        assert sum(counts.values()) == 35
        info = app.get_run(replay_id)
        assert info.executions >= 2
        steps = [s.name.rsplit(".", 1)[-1] for s in app.list_steps(replay_id)]
        assert steps.count("batch") == 3 and steps[0] == "plan" and steps[-1] == "finish"
    finally:
        app.close()
