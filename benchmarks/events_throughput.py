"""Events per second from NATS JetStream to durably started runs on PostgreSQL, with 1, 2 and
4 worker processes.

    python benchmarks/events_throughput.py                    # 2000 events per round
    python benchmarks/events_throughput.py --n 200 --rounds 1 --json out.json
    python benchmarks/events_throughput.py --postgres-url postgresql://postgres@127.0.0.1:5432/aevos_events_bench

A private nats-server (``nats-server -js`` on a free port, its store in a temporary
directory) and, for each worker count, a fresh database (created and dropped by the
benchmark; the role needs ``CREATEDB``) and a fresh stream. The worker processes
(``app.worker()`` with one NATS trigger, four handler threads each, all on one durable
consumer) start and bind to the consumer; then N events are published (200 in flight at a
time, each acknowledged by the stream) and the clock runs from the first publish until the
database holds N started runs. The runs are not executed (the workers serve another queue):
what is measured is ingress, a message turned into a committed run (its row, its
``run.started`` audit record and the event's record, a fetched batch per transaction) and
then acknowledged.

Prints exactly::

    events 10000: 1 worker 2198 ev/s, 2 workers 1577 ev/s, 4 workers 1354 ev/s
    scaling: 2 workers 0.72x, 4 workers 0.62x one worker
    lost 0, doubled 0

(measured on a 2-core host shared with other work; see docs/integrations.md).

*Lost* is events without a run; *doubled* is events that started a run more than once (the
event's ACCEPTED records beyond one per idempotency key). ``--json PATH`` writes
``{"events", "runs", "lost", "doubled", "rate": {"1", "2", "4"}, "ratio": {"2", "4"}}``:
the rates are medians over ``--rounds`` rounds (default 3) in which the worker counts
alternate; events, runs, lost and doubled add up every round.
Exit status 0; 1 with ``--strict`` when a target is missed (lost 0, doubled 0, 4 workers at
least 1.5x one worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from tests.nats_support import NatsServer, _with_js  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/aevos_events_bench"
STREAM = "BENCH"
SUBJECT = "bench.events"
WORKERS = (1, 2, 4)
TARGET_RATIO = 1.5


def build_app(database_url: str, nats_url: str) -> Any:
    """The application every worker process runs."""
    from aevos import Aevos

    app = Aevos(database_url, poll_interval=0.5)
    app.queue("idle")
    app.queue("bench")

    @app.workflow(name="bench.handle", queue="bench")
    def handle(ctx: Any, n: int) -> int:
        return n

    app.nats_trigger(
        "bench",
        stream=STREAM,
        subject=SUBJECT,
        workflow="bench.handle",
        map=lambda event: {"n": event["n"]},
        servers=[nats_url],
        max_pending=int(os.environ.get("AEVOS_BENCH_PENDING", "256")),
        batch=int(os.environ.get("AEVOS_BENCH_BATCH", "64")),
        concurrency=int(os.environ.get("AEVOS_BENCH_THREADS", "4")),
    )
    return app


def serve(database_url: str, nats_url: str) -> None:
    """A worker process: start, bind to the durable consumer, say so, consume until stdin
    closes."""
    if os.environ.get("AEVOS_BENCH_DEBUG"):
        import logging

        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("aevos.events").setLevel(logging.DEBUG)
    app = build_app(database_url, nats_url)
    worker = app.worker(["idle"], concurrency=1).start()
    for companion in worker.companions:
        companion.subscribed.wait(60)  # type: ignore[attr-defined]
    print("ready", flush=True)
    sys.stdin.readline()  # closed by the parent when it has counted
    worker.stop(5)
    app.close()


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def fresh_database(url: str) -> None:
    name = sa.make_url(url).database
    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def drop_database(url: str) -> None:
    name = sa.make_url(url).database
    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def make_stream(nats_url: str) -> None:
    async def work(js: Any) -> None:
        with contextlib.suppress(Exception):  # absent the first time
            await js.delete_stream(STREAM)
        await js.add_stream(name=STREAM, subjects=[SUBJECT])

    asyncio.run(_with_js(nats_url, work))


def publish(nats_url: str, n: int) -> None:
    """Publish N events, many in flight at once, each acknowledged by the stream."""

    async def work(js: Any) -> None:
        step = 200
        for start in range(0, n, step):
            await asyncio.gather(
                *(
                    js.publish(SUBJECT, json.dumps({"n": i}).encode())
                    for i in range(start, min(start + step, n))
                )
            )

    asyncio.run(_with_js(nats_url, work))


def counts(url: str) -> tuple[int, int, int]:
    """(runs, distinct keys, ACCEPTED event records) of the trigger."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT idempotency_key) FROM aevos_runs "
                    "WHERE idempotency_key LIKE 'nats:bench:%'"
                )
            ).one()
            accepted = conn.execute(
                sa.text(
                    "SELECT count(*) FROM aevos_events WHERE channel = 'nats' "
                    "AND source = 'bench' AND status = 'ACCEPTED'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1]), int(accepted)


def started_runs(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM aevos_runs WHERE idempotency_key LIKE 'nats:bench:%'")
            ).scalar_one()
        )


def round_of(workers: int, n: int, url: str, nats_url: str, timeout: float) -> dict[str, Any]:
    fresh_database(url)
    app = build_app(url, nats_url)
    app.store  # noqa: B018  (migrate once, outside the clock)
    app.close()
    make_stream(nats_url)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", url, nats_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    engine = sa.create_engine(url)
    try:
        # Every worker is bound to the durable consumer before the first event is sent.
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        publish(nats_url, n)
        deadline = start + timeout
        while started_runs(engine) < n and time.perf_counter() < deadline:
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        # Redeliveries that arrive late would show as doubled: let the consumers settle.
        time.sleep(1.0)
    finally:
        engine.dispose()
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    run_count, distinct, accepted = counts(url)
    return {
        "workers": workers,
        "runs": run_count,
        "lost": n - distinct,
        "doubled": max(0, accepted - distinct) + (run_count - distinct),
        "rate": n / elapsed,
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="events per round")
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per worker count")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("DATABASE_URL", "NATS_URL"))
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return 0
    with tempfile.TemporaryDirectory(prefix="aevos-bench-nats-") as tmp:
        server = NatsServer(Path(tmp) / "js").start()
        rounds: dict[int, list[dict[str, Any]]] = {w: [] for w in WORKERS}
        try:
            # Worker counts alternate, so a host's drift touches each of them alike.
            for _ in range(args.rounds):
                for w in WORKERS:
                    rounds[w].append(
                        round_of(w, args.n, args.postgres_url, server.url, args.timeout)
                    )
        finally:
            server.stop()
            drop_database(args.postgres_url)
    done = [r for results in rounds.values() for r in results]
    rate = {str(w): statistics.median(r["rate"] for r in rounds[w]) for w in WORKERS}
    ratio = {str(w): rate[str(w)] / rate["1"] for w in (2, 4)}
    lost = sum(r["lost"] for r in done)
    doubled = sum(r["doubled"] for r in done)
    runs = sum(r["runs"] for r in done)
    print(
        f"events {args.n}: 1 worker {rate['1']:.0f} ev/s, 2 workers {rate['2']:.0f} ev/s, "
        f"4 workers {rate['4']:.0f} ev/s"
    )
    print(f"scaling: 2 workers {ratio['2']:.2f}x, 4 workers {ratio['4']:.2f}x one worker")
    print(f"lost {lost}, doubled {doubled}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "events": args.n * len(done),
                    "runs": runs,
                    "lost": lost,
                    "doubled": doubled,
                    "rate": rate,
                    "ratio": ratio,
                    "rounds": {str(w): results for w, results in rounds.items()},
                },
                indent=2,
            )
        )
    missed = lost or doubled or ratio["4"] < TARGET_RATIO
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
