"""Crash recovery under fire: worker processes SIGKILLed at random moments, on both backends.

Hundreds of multi-step runs go through worker subprocesses that the test kills (SIGKILL: no
handler, no cleanup, possibly mid-transaction) and restarts at random moments. Every step
applies its side effect under its idempotency key and journals each attempt
(``tests/apps/crash_app.py``). Afterwards the database must show every run SUCCEEDED with
the right result, each effect applied exactly once, every run's steps recorded in order, and
no step that had been committed ever starting again: re-execution is allowed only for a step
that a kill interrupted mid-flight, so there are at most (kills x worker threads) of them.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.apps import crash_app
from tests.apps.workers import WorkerPool

from aevos.storage.schema import runs, steps

pytestmark = pytest.mark.slow

RUNS = 500
WORKERS = 3
THREADS = 4  # per worker process
# Long enough that a live worker's heartbeat is rarely late on a loaded 2-core machine. A
# late one (SQLite's write lock granted after seconds to a heartbeat, under load 15) lets a
# live worker's run be taken over; the worker logs that lapse, naming the run, and only such
# a logged lapse excuses a re-execution in a worker that was not killed. The safety
# properties are the same at any lease; only recovery after a kill takes longer.
LEASE_SECONDS = 2.0
MAX_KILLS = 12
KILL_EVERY = (0.2, 1.0)  # seconds between kills, drawn uniformly
DEADLINE = 90.0  # seconds for the runs to finish once the workers start

# Many runs in flight in one process: their starts, step records and completions share
# commits (group commit, storage/groupcommit.py), and the kills land in shared batches.
BATCHED_RUNS = 320
BATCHED_WORKERS = 2
BATCHED_THREADS = 32
# Killed at these counts of finished runs (not on a clock), so every kill lands while most
# runs are still in flight, however fast this machine is today.
BATCHED_KILL_AT = (20, 90, 160, 230)


def status_counts(engine: sa.Engine) -> Counter[str]:
    # A plain read on the test's own engine: the kernel's store would take SQLite's write lock.
    with engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status))
        return Counter(dict(rows.all()))


def test_sigkilled_workers_lose_no_run_and_repeat_no_committed_step(
    database_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    backend = sa.make_url(database_url).get_backend_name()
    print(f"\n[crash/{backend}] seed={seed} (CRASH_SEED={seed} replays the kill schedule)")
    crash_app.reset_tables(database_url)
    engine = crash_app.create_engine(database_url)
    try:
        inputs, killed, kills, elapsed, warnings, lapsed = crash_workers(
            database_url, tmp_path, rng
        )
        print(
            f"[crash/{backend}] runs={RUNS} workers={WORKERS}x{THREADS} "
            f"elapsed={elapsed:.1f}s kills={kills} worker-log-warnings={warnings}"
        )
        report = check_history(engine, inputs, killed, kills, THREADS, lapsed)
        print(
            f"[crash/{backend}] re-executions={report['reexecutions']} "
            f"(bound {kills * THREADS} + {report['after_lapse']} after a logged lease lapse) "
            f"deduplicated-effects={report['deduplicated']}"
        )
    finally:
        engine.dispose()
        if backend != "sqlite":
            crash_app.drop_tables(database_url)


def test_sigkilled_workers_with_many_runs_in_flight_lose_and_repeat_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """32 runs in flight per worker process, so that their writes go in shared commits, and
    workers SIGKILLed among them: every run completes once, no effect is doubled, and no
    committed step of any run in a batch runs again."""
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    backend = sa.make_url(database_url).get_backend_name()
    print(f"\n[crash-batched/{backend}] seed={seed} (CRASH_SEED={seed} replays the kills)")
    crash_app.reset_tables(database_url)
    engine = crash_app.create_engine(database_url)
    try:
        inputs, killed, kills, elapsed, _, lapsed = crash_workers(
            database_url,
            tmp_path,
            rng,
            runs=BATCHED_RUNS,
            workers=BATCHED_WORKERS,
            threads=BATCHED_THREADS,
            kill_at=BATCHED_KILL_AT,
        )
        assert kills == len(BATCHED_KILL_AT)
        report = check_history(engine, inputs, killed, kills, BATCHED_THREADS, lapsed)
        print(
            f"[crash-batched/{backend}] runs={BATCHED_RUNS} "
            f"workers={BATCHED_WORKERS}x{BATCHED_THREADS} elapsed={elapsed:.1f}s kills={kills} "
            f"re-executions={report['reexecutions']} after-lease-lapse={report['after_lapse']}"
        )
    finally:
        engine.dispose()
        if backend != "sqlite":
            crash_app.drop_tables(database_url)


def crash_workers(
    database_url: str,
    log_dir: Path,
    rng: random.Random,
    *,
    runs: int = RUNS,
    workers: int = WORKERS,
    threads: int = THREADS,
    kill_at: tuple[int, ...] = (),
) -> tuple[dict[str, int], set[int], int, float, int, dict[int, set[str]]]:
    """Enqueue the runs and work them off while killing workers; returns what happened,
    with the runs whose lease each live worker logged as lapsed (see :func:`lease_lapses`).

    Workers are killed at random moments, or, given ``kill_at``, once that many runs have
    finished."""
    bundle = crash_app.build(database_url, lease_seconds=LEASE_SECONDS)
    engine = crash_app.create_engine(database_url)
    pool: WorkerPool | None = None
    try:
        inputs = {bundle.crash_flow.start(n).run_id: n for n in range(runs)}
        pool = WorkerPool(
            "tests.apps.crash_app",
            database_url,
            log_dir,
            workers,
            env={"CRASH_LEASE_SECONDS": str(LEASE_SECONDS), "CRASH_WORKER_THREADS": str(threads)},
        )
        started = time.monotonic()
        next_kill = started + rng.uniform(*KILL_EVERY)
        kills = 0
        while True:
            counts = status_counts(engine)
            finished = sum(counts[s] for s in ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"))
            if finished >= runs:
                break
            now = time.monotonic()
            if now - started > DEADLINE:
                pytest.fail(
                    f"runs not finished after {DEADLINE}s ({kills} kills): "
                    f"{dict(counts)}\n{pool.log_tail()}"
                )
            pool.check_alive()
            due = (
                kills < len(kill_at) and finished >= kill_at[kills]
                if kill_at
                else kills < MAX_KILLS and now >= next_kill
            )
            if due:
                pool.kill(rng.randrange(workers), restart=True)
                kills += 1
                next_kill = now + rng.uniform(*KILL_EVERY)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        pool.check_alive()
        lapses = pool.log_grep("heartbeat late") + pool.log_grep("after its lease lapsed")
        warnings = len(lapses) + len(pool.log_grep("interrupted"))
        return inputs, set(pool.killed), kills, elapsed, warnings, lease_lapses(lapses)
    finally:
        if pool is not None:
            pool.close()
        bundle.close()
        engine.dispose()


_LOG_PID = re.compile(r"\bpid=(\d+) ")
_TAKEN_AFTER_LAPSE = re.compile(
    r"\brun (\w+) is no longer this process's .* after its lease lapsed"
)
_HEARTBEAT_LATE = re.compile(r"heartbeat late: .*; other workers may take them over: ([\w ]+)$")


def lease_lapses(lines: list[str]) -> dict[int, set[str]]:
    """The runs whose lease each worker (by pid) logged as lapsed while it executed them:
    its heartbeat was late, or the run was taken over after its lease had run out."""
    lapsed: dict[int, set[str]] = defaultdict(set)
    for line in lines:
        pid = _LOG_PID.search(line)
        if pid is None:
            continue
        taken = _TAKEN_AFTER_LAPSE.search(line)
        late = _HEARTBEAT_LATE.search(line.rstrip())
        if taken is not None:
            lapsed[int(pid.group(1))].add(taken.group(1))
        elif late is not None:
            lapsed[int(pid.group(1))].update(late.group(1).split())
    return lapsed


def check_history(
    engine: sa.Engine,
    inputs: dict[str, int],
    killed: set[int],
    kills: int,
    threads: int,
    lapsed: dict[int, set[str]],
) -> dict[str, Any]:
    steps_per_run = crash_app.CRASH_STEPS
    with engine.connect() as conn:
        run_rows = conn.execute(
            sa.select(runs.c.run_id, runs.c.status, runs.c.output, runs.c.error)
        ).all()
        step_rows = conn.execute(
            sa.select(
                steps.c.run_id, steps.c.seq, steps.c.name, steps.c.status, steps.c.finished_at
            )
        ).all()
        effect_rows = conn.execute(sa.select(crash_app.effects)).all()
        journal_rows = conn.execute(
            sa.select(crash_app.journal).order_by(crash_app.journal.c.ts)
        ).all()

    # Every run finished, successfully, with the result its steps produce.
    assert {r.run_id for r in run_rows} == set(inputs)
    bad = [(r.run_id, r.status, r.error) for r in run_rows if r.status != "SUCCEEDED"]
    assert not bad, f"{len(bad)} runs did not succeed, e.g. {bad[:5]}"
    wrong = [
        r.run_id
        for r in run_rows
        if json.loads(r.output) != crash_app.expected_output(inputs[r.run_id], steps_per_run)
    ]
    assert not wrong, f"{len(wrong)} runs have a wrong result, e.g. {wrong[:5]}"

    # Each run's history is exactly steps 0..N-1, in order, with the right names.
    history: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    committed_at: dict[tuple[str, int], float] = {}
    for s in step_rows:
        history[s.run_id].append((s.seq, s.name, s.status))
        committed_at[(s.run_id, s.seq)] = s.finished_at
    want = [(seq, f"crash.step{seq}", "SUCCEEDED") for seq in range(steps_per_run)]
    bad_history = {rid: sorted(h) for rid, h in history.items() if sorted(h) != want}
    assert set(history) == set(inputs)
    assert not bad_history, (
        f"{len(bad_history)} runs with a wrong history: {list(bad_history.items())[:3]}"
    )

    # Each effect exists exactly once, keyed by the step's idempotency key.
    expected_keys = {f"{rid}/{seq}" for rid in inputs for seq in range(steps_per_run)}
    assert len(effect_rows) == len(expected_keys)
    assert {e.key for e in effect_rows} == expected_keys
    for e in effect_rows:
        assert e.key == f"{e.run_id}/{e.seq}" and e.step == f"crash.step{e.seq}", e
        assert e.value == inputs[e.run_id] * 10 + e.seq, e

    # The journal: every attempt, with the key it was given.
    attempts: dict[tuple[str, int], list[Any]] = defaultdict(list)
    applied = Counter[str]()
    deduplicated = 0
    for j in journal_rows:
        assert j.key == f"{j.run_id}/{j.seq}", f"idempotency key changed across attempts: {j}"
        if j.event == "enter":
            attempts[(j.run_id, j.seq)].append(j)
        elif j.applied:
            applied[j.key] += 1
        else:
            deduplicated += 1
    assert set(attempts) == {(rid, seq) for rid in inputs for seq in range(steps_per_run)}
    twice = {k: n for k, n in applied.items() if n != 1}
    assert not twice and set(applied) == expected_keys, f"effects applied more than once: {twice}"

    # A committed step never starts again: an attempt may only precede its commit.
    late = [
        (j.run_id, j.seq, j.pid, j.ts - committed_at[(j.run_id, j.seq)])
        for js in attempts.values()
        for j in js
        if j.ts > committed_at[(j.run_id, j.seq)]
    ]
    assert not late, f"{len(late)} attempts started after their step was committed: {late[:5]}"

    # Re-executions come from kills. A worker killed mid-step leaves at most one step per
    # thread unfinished, one per run: that step, and nothing it had committed, runs again.
    # The only other cause allowed is a lease that lapsed while its worker lived (its
    # heartbeat stalled past lease_seconds on a loaded host), and only where that worker
    # logged the lapse for that run: anything else (a live worker judged dead, a commit
    # that failed and was replayed) is a fault.
    reexecutions = sum(len(js) - 1 for js in attempts.values())
    interrupted: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for (run_id, seq), js in attempts.items():
        for j in js[:-1]:
            interrupted[j.pid].append((run_id, seq))
    after_lapse = sum(
        1
        for pid, keys in interrupted.items()
        if pid not in killed
        for run_id, _ in keys
        if run_id in lapsed.get(pid, ())
    )
    assert reexecutions <= kills * threads + after_lapse, (
        f"{reexecutions} step re-executions after only {kills} kills of {threads}-thread "
        f"workers and {after_lapse} logged lease lapses"
    )
    unattributed = {
        pid: unexplained
        for pid, keys in interrupted.items()
        if pid not in killed
        for unexplained in [[k for k in keys if k[0] not in lapsed.get(pid, ())]]
        if unexplained
    }
    assert not unattributed, (
        f"steps re-executed although their worker lived and logged no lease lapse: {unattributed}"
    )
    for pid, keys in interrupted.items():
        keys = [k for k in keys if k[0] not in lapsed.get(pid, ())]
        if not keys:
            continue
        per_run = Counter(run_id for run_id, _ in keys)
        assert len(keys) <= threads and max(per_run.values()) == 1, (
            f"killed worker {pid} had {threads} threads but left these steps to re-execute "
            f"(a committed step ran again): {sorted(keys)}"
        )
    return {
        "reexecutions": reexecutions,
        "deduplicated": deduplicated,
        "after_lapse": after_lapse,
    }
