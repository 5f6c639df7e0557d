"""Reviewer load on the HTTP API: 200 concurrent reviewers for 60 s, no errors, p95 reported.

    python benchmarks/review_load.py                                   # SQLite, 200 x 60 s
    python benchmarks/review_load.py --postgres-url postgresql://postgres@127.0.0.1:5432/test_e
    python benchmarks/review_load.py --reviewers 50 --duration 20 --think 0.5 --json out.json

A real server runs in a subprocess (``aevos serve --app review_app:app`` with its embedded
worker threads) on a fresh SQLite file, or on PostgreSQL with ``--postgres-url`` (every
``aevos_`` table in that database is emptied first). This process drives it over loopback
with ``httpx`` on one asyncio loop, one connection per client (``--reviewers`` connections
for the reviewers):

* feeders (``--feeders``, an operator token) keep starting runs of the ``claim_review``
  workflow (``review_app.py``), each of which asks a person, so that ``--backlog`` runs
  await a decision beyond those being worked. The backlog is started, and turned into
  open tasks, before the clock starts: at saturation the embedded workers (in the server's
  process, under its GIL) spend their capacity resuming decided runs, which they claim
  oldest first, so runs started during the window mostly wait; 3,000 keeps the inbox from
  running dry for 60 s at ~45 decisions/s. The open tasks are sampled every 2 s (``GET
  /metrics``), and the report shows the fewest seen;
* each reviewer (its own reviewer token) loops: list its inbox (``GET /v1/tasks?workable
  =true&status=OPEN&limit=20``), claim the next task (``POST /v1/tasks/next``), read it
  (``GET /v1/tasks/{id}``), and submit a decision (``POST /v1/tasks/{id}/submit``): the
  suggestion as it is, or with probability ``--override`` another verdict. Before its
  first round and after each decision it thinks for a uniform random 0..``--think``
  seconds (default 0: a closed loop, far more traffic than 200 people make); a claim that
  finds nothing waits 0.5 s.

Each request's latency is measured here, from before the call to the parsed response, so
it includes queueing in the client and the server. Errors are transport failures and
every non-2xx status except 409; 409 conflicts are counted apart (``/next`` hands each task
to one reviewer, so none are expected). After the window the script waits up to
``--drain`` seconds for every decided run to finish and counts the runs in the database.
The verdict: PASS when there were no errors and every decision completed its run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aevos import Aevos, RunStatus
from aevos.storage import open_store
from aevos.storage.dialect import redact_url

HERE = Path(__file__).resolve().parent
APP = "review_app:app"
WORKFLOW = "claim_review"  # as in review_app.py
VERDICTS = ("approve", "deny", "refer")
TENANT = "review"
IDLE = 0.5  # seconds a reviewer waits after a claim that found nothing (an inbox polling)
ENDPOINTS = {
    "inbox": "GET /v1/tasks",
    "next": "POST /v1/tasks/next",
    "read": "GET /v1/tasks/{id}",
    "submit": "POST /v1/tasks/{id}/submit",
    "start": "POST /v1/runs (feeders)",
}
REVIEWER_ENDPOINTS = ("inbox", "next", "read", "submit")


# -- measurement -----------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies per endpoint, errors and conflicts, and what the traffic achieved."""

    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    started: int = 0
    decisions: int = 0
    overrides: int = 0
    empty_claims: int = 0

    async def call(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        method: str,
        url: str,
        token: str,
        **options: Any,
    ) -> httpx.Response | None:
        """The response if it is a 2xx; None after counting an error or a conflict."""
        headers = {"Authorization": f"Bearer {token}"}
        began = time.perf_counter()
        try:
            response = await client.request(method, url, headers=headers, **options)
        except httpx.HTTPError as exc:
            self._error(endpoint, type(exc).__name__, str(exc))
            return None
        self.latencies[endpoint].append(time.perf_counter() - began)
        if response.status_code == 409:
            self.conflicts[endpoint] += 1
            return None
        if not response.is_success:
            self._error(endpoint, str(response.status_code), response.text[:300])
            return None
        return response

    def _error(self, endpoint: str, kind: str, detail: str) -> None:
        self.errors[f"{endpoint} {kind}"] += 1
        if len(self.samples) < 10:
            self.samples.append(f"{ENDPOINTS[endpoint]}: {kind} {detail}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _summary(values: list[float], elapsed: float) -> dict[str, float]:
    if not values:
        return {"requests": 0, "per_second": 0.0}
    ms = [v * 1000 for v in values]
    return {
        "requests": len(ms),
        "per_second": len(ms) / elapsed,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


# -- traffic ---------------------------------------------------------------------------------


def _decide(task: dict[str, Any], rng: random.Random, override: float) -> dict[str, Any]:
    """The suggestion as it is, or (with probability ``override``) another verdict."""
    suggestion = task.get("suggestion") or {}
    verdict = suggestion.get("verdict", "refer")
    payout = suggestion.get("payout") or 0.0
    if rng.random() >= override:
        return {"verdict": verdict, "payout": payout}
    other = rng.choice([v for v in VERDICTS if v != verdict])
    amount = float((task.get("case") or {}).get("amount", 0.0))
    return {
        "verdict": other,
        "payout": amount if other == "approve" else 0.0,
        "note": f"changed from {verdict} after reading the claim",
    }


async def reviewer(
    client: httpx.AsyncClient,
    token: str,
    rec: Recorder,
    stop_at: float,
    *,
    think: float,
    override: float,
    rng: random.Random,
) -> None:
    inbox = {"workable": "true", "status": "OPEN", "limit": 20}
    if think > 0:  # arrive spread out, as after a decision, not all at the first instant
        await asyncio.sleep(min(rng.uniform(0, think), max(0.0, stop_at - time.monotonic())))
    while time.monotonic() < stop_at:
        await rec.call(client, "inbox", "GET", "/v1/tasks", token, params=inbox)
        claimed = await rec.call(client, "next", "POST", "/v1/tasks/next", token, json={})
        task = None if claimed is None else claimed.json()["task"]
        if task is None:
            rec.empty_claims += claimed is not None
            await asyncio.sleep(min(IDLE, max(0.0, stop_at - time.monotonic())))
            continue
        url = f"/v1/tasks/{task['task_id']}"
        read = await rec.call(client, "read", "GET", url, token)
        if read is not None:
            task = read.json()
        values = _decide(task, rng, override)
        done = await rec.call(
            client, "submit", "POST", f"{url}/submit", token, json={"values": values}
        )
        if done is not None:
            rec.decisions += 1
            rec.overrides += bool(done.json()["feedback"]["overridden"])
        if think > 0:  # cut at the deadline, so the window ends on time
            await asyncio.sleep(min(rng.uniform(0, think), max(0.0, stop_at - time.monotonic())))


async def feeder(
    client: httpx.AsyncClient,
    token: str,
    rec: Recorder,
    keep_going: Callable[[], bool],
    *,
    outstanding: int,
    rng: random.Random,
) -> None:
    """Start runs while fewer than ``outstanding`` started runs await a decision."""
    while keep_going():
        if rec.started - rec.decisions >= outstanding:
            await asyncio.sleep(0.01)
            continue
        rec.started += 1  # reserved before the await, so feeders do not overshoot together
        claim = {
            "id": f"C{rng.randrange(10**9):09d}",
            "amount": round(rng.uniform(50, 2_000), 2),
            "customer": f"cust-{rng.randrange(5_000):05d}",
            "kind": rng.choice(["windscreen", "theft", "water", "fire"]),
        }
        body = {"workflow": WORKFLOW, "kwargs": {"claim": claim}}
        if await rec.call(client, "start", "POST", "/v1/runs", token, json=body) is None:
            rec.started -= 1


async def _open_tasks(client: httpx.AsyncClient, token: str) -> int:
    """Tasks waiting in the tenant's inbox, from ``GET /metrics`` (one aggregate query)."""
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in response.text.splitlines()
        if line.startswith("aevos_human_tasks_open{") and 'status="OPEN"' in line
    )


async def monitor(
    client: httpx.AsyncClient, token: str, stop_at: float, samples: list[int]
) -> None:
    """Sample the open tasks every 2 s: the inbox must never run dry."""
    while time.monotonic() < stop_at:
        samples.append(await _open_tasks(client, token))
        await asyncio.sleep(min(2.0, max(0.0, stop_at - time.monotonic())))


@dataclass(frozen=True)
class Traffic:
    base_url: str
    reviewer_tokens: list[str]
    operator_token: str
    duration: float
    think: float
    override: float
    backlog: int
    feeders: int
    seed: int


async def drive(traffic: Traffic, server_pid: int | None = None) -> dict[str, Any]:
    """Fill the inbox, then run reviewers and feeders for ``duration`` seconds."""
    outstanding = len(traffic.reviewer_tokens) + traffic.backlog
    async with AsyncExitStack() as stack:
        # One connection per reviewer and per feeder, each in its own client: a single pool
        # of 200 costs httpcore 1.0 O(connections x waiting requests) of CPU per request,
        # which made this process, not the server, the bottleneck.
        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=traffic.base_url,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=httpx.Timeout(60.0),
            )

        reviewers = [await stack.enter_async_context(client()) for _ in traffic.reviewer_tokens]
        feeders = [await stack.enter_async_context(client()) for _ in range(traffic.feeders)]
        watcher = await stack.enter_async_context(client())

        # Fill: the backlog exists (as open tasks) before the clock starts.
        fill = Recorder()
        fill_until = time.monotonic() + 120

        def filling() -> bool:
            return fill.started < outstanding and not fill.errors and time.monotonic() < fill_until

        await asyncio.gather(
            *(
                feeder(
                    feed,
                    traffic.operator_token,
                    fill,
                    filling,
                    outstanding=outstanding,
                    rng=random.Random(f"{traffic.seed}-fill-{i}"),
                )
                for i, feed in enumerate(feeders)
            )
        )
        if fill.errors:
            raise RuntimeError(f"filling the inbox failed: {fill.samples}")
        while await _open_tasks(feeders[0], traffic.operator_token) < outstanding:
            if time.monotonic() > fill_until:
                raise RuntimeError("the workers did not turn the started runs into tasks")
            await asyncio.sleep(0.1)

        rec = Recorder(started=fill.started)
        load_before = os.getloadavg()
        server_cpu_before = _process_cpu(server_pid)
        client_cpu_before = time.process_time()
        began = time.monotonic()
        stop_at = began + traffic.duration
        open_tasks: list[int] = []
        await asyncio.gather(
            monitor(watcher, traffic.operator_token, stop_at, open_tasks),
            *(
                reviewer(
                    session,
                    token,
                    rec,
                    stop_at,
                    think=traffic.think,
                    override=traffic.override,
                    rng=random.Random(f"{traffic.seed}-reviewer-{i}"),
                )
                for i, (session, token) in enumerate(
                    zip(reviewers, traffic.reviewer_tokens, strict=True)
                )
            ),
            *(
                feeder(
                    feed,
                    traffic.operator_token,
                    rec,
                    lambda: time.monotonic() < stop_at,
                    outstanding=outstanding,
                    rng=random.Random(f"{traffic.seed}-feeder-{i}"),
                )
                for i, feed in enumerate(feeders)
            ),
        )
        elapsed = time.monotonic() - began
        server_cpu = _process_cpu(server_pid) - server_cpu_before
        client_cpu = time.process_time() - client_cpu_before
        load_after = os.getloadavg()

    reviewer_latencies = [v for e in REVIEWER_ENDPOINTS for v in rec.latencies[e]]
    return {
        "elapsed_s": elapsed,
        "endpoints": {e: _summary(rec.latencies[e], elapsed) for e in ENDPOINTS},
        "reviewer_requests": _summary(reviewer_latencies, elapsed),
        "errors": sum(rec.errors.values()),
        "errors_by_kind": dict(rec.errors),
        "error_samples": rec.samples,
        "conflicts": sum(rec.conflicts.values()),
        "conflicts_by_endpoint": dict(rec.conflicts),
        "decisions": rec.decisions,
        "decisions_per_s": rec.decisions / elapsed,
        "overrides": rec.overrides,
        "empty_claims": rec.empty_claims,
        "open_tasks_min": min(open_tasks),
        "open_tasks_samples": open_tasks,
        "runs_started": rec.started,
        "prefilled_runs": fill.started,
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
    }


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a process, from /proc (0 where there is none)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(database_url: str, *, workers: int, log: Path) -> Iterator[Server]:
    """``aevos serve --app review_app:app`` in a subprocess, until the block ends."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "aevos",
        "--database-url",
        database_url,
        "serve",
        "--app",
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=HERE, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited ({server.process.returncode}):\n{_tail(server)}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /healthz in {timeout:.0f} s:\n{_tail(server)}")


def _tail(server: Server, lines: int = 30) -> str:
    return "\n".join(server.log.read_text(errors="replace").splitlines()[-lines:])


# -- one benchmark run -----------------------------------------------------------------------


def prepare(database_url: str, reviewers: int) -> tuple[list[str], str]:
    """Empty the database (after migrating it) and issue the tokens: one per reviewer, and
    an operator's for the feeders."""
    app = Aevos(database_url)
    try:
        app.store.truncate_all()
        issue = app.identity.create_token
        tokens = [
            issue(tenant=TENANT, role="reviewer", name=f"reviewer-{i:03d}", created_by="bench")
            for i in range(reviewers)
        ]
        operator = issue(tenant=TENANT, role="operator", name="feeder", created_by="bench")
    finally:
        app.close()
    return [t.token for t in tokens], operator.token


def _count_runs(database_url: str) -> dict[RunStatus, int]:
    store = open_store(database_url)
    try:
        return store.count_runs()
    finally:
        store.close()


def run(
    database_url: str,
    *,
    duration: float = 60.0,
    reviewers: int = 200,
    workers: int = 8,
    think: float = 0.0,
    override: float = 0.2,
    backlog: int = 100,
    feeders: int = 4,
    drain: float = 30.0,
    seed: int = 0,
    log: Path | None = None,
) -> dict[str, Any]:
    """Serve, drive, drain; the figures as a dict (see ``main`` for how they print)."""
    tokens, operator = prepare(database_url, reviewers)
    log = log or Path(tempfile.mkdtemp(prefix="aevos-review-")) / "server.log"
    with serve(database_url, workers=workers, log=log) as server:
        traffic = Traffic(
            server.base_url, tokens, operator, duration, think, override, backlog, feeders, seed
        )
        result = asyncio.run(drive(traffic, server.process.pid))
        # Each submission wakes its run; wait until every decided run has finished.
        deadline = time.monotonic() + drain
        counts = _count_runs(database_url)
        while counts.get(RunStatus.SUCCEEDED, 0) < result["decisions"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            counts = _count_runs(database_url)
        unhandled = _tail(server, 10**6).count("unhandled")
    result.update(
        database=redact_url(database_url),
        reviewers=reviewers,
        duration_s=duration,
        server_workers=workers,
        think_s=think,
        override=override,
        backlog=backlog,
        feeders=feeders,
        runs={status.value: n for status, n in counts.items()},
        runs_completed=counts.get(RunStatus.SUCCEEDED, 0),
        server_unhandled_errors=unhandled,
        server_log=str(log),
    )
    result["no_errors"] = result["errors"] == 0
    result["decisions_completed_runs"] = 0 < result["decisions"] <= result["runs_completed"]
    result["passed"] = result["no_errors"] and result["decisions_completed_runs"]
    return result


# -- the report ------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    lines = [
        f"review_load: {result['reviewers']} reviewers for {result['duration_s']:.0f} s "
        f"(measured {result['elapsed_s']:.1f} s), think 0..{result['think_s']:g} s, "
        f"override {result['override']:.0%}, {result['server_workers']} worker threads, "
        f"{result['database']}",
        "load average before "
        + " ".join(f"{x:.2f}" for x in result["load_average_before"])
        + ", after "
        + " ".join(f"{x:.2f}" for x in result["load_average_after"])
        + f" ({os.cpu_count()} CPUs); server CPU {result['server_cpu_s']:.1f} s, "
        f"this process {result['client_cpu_s']:.1f} s",
        "",
        f"{'endpoint':<28} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}",
    ]
    rows = [(ENDPOINTS[e], result["endpoints"][e]) for e in REVIEWER_ENDPOINTS]
    rows.append(("all reviewer requests", result["reviewer_requests"]))
    rows.append((ENDPOINTS["start"], result["endpoints"]["start"]))
    for name, s in rows:
        if not s["requests"]:
            lines.append(f"{name:<28} {0:>9}")
            continue
        lines.append(
            f"{name:<28} {s['requests']:>9,} {s['per_second']:>8.1f} {s['p50_ms']:>8.1f} "
            f"{s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}"
        )
    decisions = result["decisions"]
    lines += [
        "",
        f"decisions {decisions:,} ({result['decisions_per_s']:.1f}/s), "
        f"{result['overrides']:,} overriding the suggestion; "
        f"{result['empty_claims']:,} claims found nothing waiting; open tasks sampled every "
        f"2 s: min {result['open_tasks_min']:,}, last {result['open_tasks_samples'][-1]:,}",
        f"runs started {result['runs_started']:,} ({result['prefilled_runs']} before the clock); "
        f"in the database: "
        + ", ".join(f"{status} {n:,}" for status, n in sorted(result["runs"].items())),
        f"errors {result['errors']} {result['errors_by_kind'] or ''}; "
        f"409 conflicts {result['conflicts']} {result['conflicts_by_endpoint'] or ''}; "
        f"server log: {result['server_unhandled_errors']} unhandled",
    ]
    lines += [f"  {sample}" for sample in result["error_samples"]]
    lines += [
        "",
        f"no errors: {'PASS' if result['no_errors'] else 'FAIL'}",
        f"every decision completed its run: "
        f"{'PASS' if result['decisions_completed_runs'] else 'FAIL'} "
        f"({result['runs_completed']:,} completed, {decisions:,} decided)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--reviewers", type=int, default=200, help="concurrent reviewers (200)")
    parser.add_argument(
        "--postgres-url",
        help="run on this PostgreSQL database (its aevos_ tables are emptied first)",
    )
    parser.add_argument("--sqlite-dir", help="directory for the fresh SQLite file (a temp dir)")
    parser.add_argument("--workers", type=int, default=8, help="server worker threads (8)")
    parser.add_argument(
        "--think", type=float, default=0.0, help="max think time per decision, seconds (0)"
    )
    parser.add_argument(
        "--override", type=float, default=0.2, help="share of decisions changed (0.2)"
    )
    parser.add_argument(
        "--backlog", type=int, default=3000, help="tasks waiting beyond those worked (3000)"
    )
    parser.add_argument(
        "--feeders", type=int, help="concurrent run starters (default: reviewers / 8, >= 4)"
    )
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to let runs finish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)

    if args.postgres_url:
        database_url = args.postgres_url
    else:
        directory = Path(args.sqlite_dir or tempfile.mkdtemp(prefix="aevos-review-"))
        directory.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{directory / f'review-{os.getpid()}.db'}"
    result = run(
        database_url,
        duration=args.duration,
        reviewers=args.reviewers,
        workers=args.workers,
        think=args.think,
        override=args.override,
        backlog=args.backlog,
        feeders=args.feeders or max(4, args.reviewers // 8),
        drain=args.drain,
        seed=args.seed,
    )
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
