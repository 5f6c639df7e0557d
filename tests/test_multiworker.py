"""Several worker processes on one PostgreSQL queue: limits hold, and a SIGKILL loses nothing.

Four worker processes share 2,000 runs of a queue declared with a global ``concurrency`` and
a per-process ``worker_concurrency``; one worker is SIGKILLed mid-way and not restarted.
Every run must complete exactly once (each side effect applied once), and the journal of
step attempts (``tests/apps/crash_app.py``) must show that no more runs of the queue ever
executed at once than its limits allow.

Overlap is measured on run executions: from the first step a worker started of a run to the
last step it finished of it. That interval lies inside the time the worker held the run's
slot (claimed before the first step, released after the last), so its overlap can only
understate the true one; a limit exceeded here was exceeded for real. A killed worker's
interval for a run interrupted mid-step ends at the kill.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.apps import crash_app
from tests.apps.workers import WorkerPool

from aevos.storage.schema import runs, steps

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUNS = 2000
WORKERS = 4
THREADS = 4  # per worker process: more than worker_concurrency, so the queue's limit binds
LEASE_SECONDS = 1.0
KILL_AFTER = RUNS // 2  # SIGKILL one worker once this many runs succeeded
DEADLINE = 120.0


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an interval ending at t is closed at t)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    depth = best = 0
    for _, delta in events:
        depth += delta
        best = max(best, depth)
    return best


def busiest_worker(engine: sa.Engine) -> int | None:
    """The pid with the most steps started and not yet finished in the last few seconds."""
    j = crash_app.journal
    open_steps = sa.func.sum(sa.case((j.c.event == "enter", 1), else_=-1))
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(j.c.pid, open_steps)
            .where(j.c.ts > time.time() - 5)
            .group_by(j.c.pid)
            .having(open_steps > 0)
            .order_by(open_steps.desc())
            .limit(1)
        ).first()
    return None if row is None else int(row[0])


def test_queue_limits_hold_across_workers_and_a_sigkill(postgres_url: str, tmp_path: Path) -> None:
    crash_app.reset_tables(postgres_url)
    bundle = crash_app.build(postgres_url, lease_seconds=LEASE_SECONDS)
    engine = crash_app.create_engine(postgres_url)
    pool: WorkerPool | None = None
    victim = killed_at = None
    try:
        inputs = {bundle.limited_flow.start(n).run_id: n for n in range(RUNS)}
        pool = WorkerPool(
            "tests.apps.crash_app",
            postgres_url,
            tmp_path,
            WORKERS,
            env={"CRASH_LEASE_SECONDS": str(LEASE_SECONDS), "CRASH_WORKER_THREADS": str(THREADS)},
        )
        started = time.monotonic()
        while True:
            with engine.connect() as conn:
                counts = Counter(
                    dict(
                        conn.execute(
                            sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
                        ).all()
                    )
                )
            if counts["SUCCEEDED"] + counts["FAILED"] + counts["CANCELLED"] >= RUNS:
                break
            if time.monotonic() - started > DEADLINE:
                pytest.fail(
                    f"runs not finished after {DEADLINE}s: {dict(counts)}\n{pool.log_tail()}"
                )
            pool.check_alive()
            if victim is None and counts["SUCCEEDED"] >= KILL_AFTER:
                # Aim at a worker inside a step, the case that needs a takeover to finish;
                # fall back to any worker if none is caught mid-step soon.
                busy = pool.index_of(busiest_worker(engine) or -1)
                if busy is not None or counts["SUCCEEDED"] >= KILL_AFTER + RUNS // 10:
                    victim = pool.kill(
                        random.randrange(WORKERS) if busy is None else busy, restart=False
                    )
                    killed_at = pool.killed[victim]
                    continue
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        pool.check_alive()
        assert victim is not None and killed_at is not None, "the kill never happened"
        with engine.connect() as conn:
            run_rows = conn.execute(
                sa.select(runs.c.run_id, runs.c.status, runs.c.output, runs.c.error)
            ).all()
            step_rows = conn.execute(
                sa.select(steps.c.run_id, steps.c.seq, steps.c.name, steps.c.status)
            ).all()
            effect_rows = conn.execute(sa.select(crash_app.effects)).all()
            journal_rows = conn.execute(
                sa.select(crash_app.journal).order_by(crash_app.journal.c.ts)
            ).all()
    finally:
        if pool is not None:
            pool.close()
        bundle.close()
        engine.dispose()
        crash_app.drop_tables(postgres_url)

    n_steps = crash_app.LIMITED_STEPS
    expected_keys = {f"{rid}/{seq}" for rid in inputs for seq in range(n_steps)}

    # Every run completed once, with its result and its steps in order.
    assert {r.run_id for r in run_rows} == set(inputs)
    bad = [(r.run_id, r.status, r.error) for r in run_rows if r.status != "SUCCEEDED"]
    assert not bad, f"{len(bad)} runs did not succeed, e.g. {bad[:5]}"
    for r in run_rows:
        assert json.loads(r.output) == crash_app.expected_output(inputs[r.run_id], n_steps)
    history: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for s in step_rows:
        history[s.run_id].append((s.seq, s.name, s.status))
    want = [(seq, f"limited.step{seq}", "SUCCEEDED") for seq in range(n_steps)]
    assert all(sorted(history[rid]) == want for rid in inputs)

    # Each side effect exactly once.
    assert sorted(e.key for e in effect_rows) == sorted(expected_keys)
    applied = Counter(j.key for j in journal_rows if j.event == "exit" and j.applied)
    assert set(applied) == expected_keys and set(applied.values()) == {1}

    # Only the killed worker's in-flight steps ran twice.
    attempts: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for j in journal_rows:
        if j.event == "enter":
            attempts[(j.run_id, j.seq)].append(j)
    repeated = {k: [(j.pid, j.ts) for j in js] for k, js in attempts.items() if len(js) > 1}
    reexecutions = sum(len(js) - 1 for js in attempts.values())
    assert reexecutions <= crash_app.LIMITED_WORKER_CONCURRENCY, repeated
    assert all(js[0].pid == victim for js in attempts.values() if len(js) > 1), repeated
    # One interrupted step per run: nothing the killed worker had committed ran again.
    assert all(n == 1 for n in Counter(run_id for run_id, _ in repeated).values()), repeated

    # Run execution intervals per (run, worker).
    spans: dict[tuple[str, int], list[float]] = {}
    open_steps: Counter[tuple[str, int]] = Counter()
    for j in journal_rows:
        key = (j.run_id, j.pid)
        span = spans.setdefault(key, [j.ts, j.ts])
        span[0] = min(span[0], j.ts)
        span[1] = max(span[1], j.ts)
        open_steps[key] += 1 if j.event == "enter" else -1
    interrupted = [key for key, n in open_steps.items() if n]
    assert all(pid == victim for _, pid in interrupted), interrupted
    for key in interrupted:
        spans[key][1] = killed_at
    intervals = [(s, e) for s, e in spans.values()]
    overlap = max_overlap(intervals)
    per_worker: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for (_, pid), (s, e) in spans.items():
        per_worker[pid].append((s, e))
    worker_overlap = {pid: max_overlap(iv) for pid, iv in per_worker.items()}
    print(
        f"\n[multiworker] runs={RUNS} workers={WORKERS}x{THREADS} elapsed={elapsed:.1f}s "
        f"killed pid {victim} with {len(interrupted)} runs mid-step; "
        f"re-executions={reexecutions}; max overlapping runs={overlap} "
        f"(limit {crash_app.LIMITED_CONCURRENCY}); per worker={sorted(worker_overlap.values())} "
        f"(limit {crash_app.LIMITED_WORKER_CONCURRENCY})"
    )
    assert overlap <= crash_app.LIMITED_CONCURRENCY, overlap
    assert max(worker_overlap.values()) <= crash_app.LIMITED_WORKER_CONCURRENCY, worker_overlap
    assert len(per_worker) == WORKERS, "every worker should have executed runs"
