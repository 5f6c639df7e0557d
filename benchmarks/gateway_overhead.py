"""Overhead of a governed model call, beside LiteLLM's router, in one run.

    python benchmarks/gateway_overhead.py                          # SQLite (durable), 3 rounds
    python benchmarks/gateway_overhead.py --peer-python /tmp/litellm/bin/python
    python benchmarks/gateway_overhead.py --n 5000 --rounds 5 --json out.json --strict

aevos: a real scikit-learn model (TF-IDF + logistic regression, trained on ``--train-rows``
rows of banking77) is called on banking77 test texts two ways, alternately, on the same
text: directly (``predict_proba`` and the arg-max, as one would without aevos) and through
``Gateway.predict`` with everything on: the model registered (skops) and resolved by alias,
a keyed 10% canary between two versions, three budgets reserved before each call (tenant
calls + cost, tenant rate limit, workflow calls) in the SQLite database
(``synchronous=FULL``), the breaker, and a ``model.called`` audit record per call, written
by the background flusher during the measurement (``gc.freeze()`` after set-up keeps the
model's large vocabulary out of garbage collections). The overhead of a call is the gateway
time minus the direct time for the same text; p50/p99 of those pairs are reported, and the
gateway's own share (minus the sklearn adapter's ``predict``) beside it. The same pairs are
also timed in thread CPU time, which leaves out time spent waiting for a core or the GIL:
on a shared machine it moves far less with other load than the wall-clock figures.

LiteLLM: ``Router.completion`` with ``mock_response`` (no network; the shape of
the team's LiteLLM baseline script, ``baselines/litellm_router.py``), in a subprocess under ``--peer-python`` (default:
``/tmp/litellm/bin/python`` if it exists, else this interpreter if it imports litellm). All
of its time is routing overhead, so the ratio is LiteLLM's p50 over aevos's p50 overhead.

Target (issue 3): p50 overhead of a governed call <= 100 microseconds on SQLite.
Exit status 0 unless ``--strict`` and the target is missed (1); 2 if aevos could not run.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aevos.public_data import data_file

REPO = Path(__file__).resolve().parent.parent
DATA = data_file("banking77")
TARGET_US = 100.0
DEFAULT_PEER = "/tmp/litellm/bin/python"
INSTALL_HINT = (
    "install LiteLLM into its own environment: python -m venv /tmp/litellm && "
    "/tmp/litellm/bin/pip install litellm   (then pass --peer-python /tmp/litellm/bin/python)"
)

LITELLM_CHILD = r"""
import json, os, sys, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import litellm
from litellm import Router
litellm.telemetry = False
n = int(sys.argv[1])
r = Router(model_list=[
    {"model_name": "cheap", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "x",
     "mock_response": "ok"}},
    {"model_name": "big", "litellm_params": {"model": "openai/gpt-4o", "api_key": "x",
     "mock_response": "ok"}}],
    fallbacks=[{"cheap": ["big"]}], num_retries=0)
msgs = [{"role": "user", "content": "hello"}]
for _ in range(50):
    r.completion(model="cheap", messages=msgs)
lat = []
for _ in range(n):
    t = time.perf_counter(); r.completion(model="cheap", messages=msgs)
    lat.append(time.perf_counter() - t)
print(json.dumps({"version": getattr(litellm, "__version__", None) or
                  __import__("importlib.metadata").metadata.version("litellm"),
                  "latencies_us": [x * 1e6 for x in lat]}))
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rows(path: Path, limit: int | None = None) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [(row["text"], row["category"]) for row in reader]
    return rows if limit is None else rows[:limit]


def _train(rows: list[tuple[str, str]]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    # Every 3rd row of the (label-sorted) file, so all 77 intents are represented.
    sample = rows[:: max(1, len(rows) // 3000)] if len(rows) > 3000 else rows
    pipe = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("lr", LogisticRegression(max_iter=1000)),
        ]
    )
    pipe.fit([t for t, _ in sample], [c for _, c in sample])
    return pipe, len(sample)


class AevosBench:
    """The model, the direct call and the governed call, set up once."""

    def __init__(self, sqlite_dir: str | None, train_rows: int) -> None:
        from aevos import Aevos
        from aevos.models.adapters import sklearn as sk
        from aevos.models.gateway import Gateway
        from aevos.models.registry import ModelRegistry
        from aevos.models.routing import Canary

        self.tmp = tempfile.TemporaryDirectory(dir=sqlite_dir, prefix="aevos-gw-bench-")
        self.path = Path(self.tmp.name) / "bench.db"
        self.app = Aevos(f"sqlite:///{self.path}")
        train = _rows(DATA / "train.csv", train_rows * 3 if train_rows else None)
        self.pipe, self.trained_on = _train(train)
        self.texts = [t for t, _ in _rows(DATA / "test.csv")]
        artifact = sk.dumps(self.pipe)
        registry = ModelRegistry(self.app.store, self.app.audit)
        registry.register("intent", artifact, flavor="sklearn", aliases=["champion"])
        registry.register(
            "intent", artifact, flavor="sklearn", config={"top_k": 3}, aliases=["challenger"]
        )
        self.gateway = Gateway(self.app.store, registry, self.app.audit)
        self.gateway.route("intent", canary=Canary("challenger", percent=10), max_cost=0.0001)
        self.gateway.set_budget(tenant="bench", calls=100_000_000, cost=1_000_000.0)
        self.gateway.set_rate_limit(tenant="bench", calls=1_000_000, per=1.0)
        self.gateway.set_budget(tenant="bench", workflow="triage", calls=100_000_000)
        registry.register(
            "intent", artifact, flavor="sklearn", tenant="bench", aliases=["champion"]
        )
        registry.register(
            "intent",
            artifact,
            flavor="sklearn",
            config={"top_k": 3},
            tenant="bench",
            aliases=["challenger"],
        )
        self.adapter = registry.load(registry.get("intent", "champion", tenant="bench"))
        self.classes = list(self.pipe.classes_)
        self.calls = 0
        cursor = self.app.store.engine.raw_connection().cursor()
        self.synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
            cursor.execute("PRAGMA synchronous").fetchone()[0], "?"
        )
        self.journal = cursor.execute("PRAGMA journal_mode").fetchone()[0]

    def direct(self, text: str) -> tuple[str, float]:
        proba = self.pipe.predict_proba([text])[0]
        best = int(proba.argmax())
        return self.classes[best], float(proba[best])

    def governed(self, text: str, key: int) -> Any:
        self.calls += 1
        return self.gateway.predict(
            "intent", text, key=key, tenant="bench", workflow="triage", actor="bench"
        )

    def measure(self, n: int, warmup: int) -> dict[str, Any]:
        texts = self.texts
        for i in range(warmup):
            self.direct(texts[i % len(texts)])
            self.governed(texts[i % len(texts)], i)
            self.adapter.predict(texts[i % len(texts)])
        direct: list[float] = []
        gateway: list[float] = []
        adapter: list[float] = []
        cpu_over: list[float] = []
        perf, cpu = time.perf_counter, time.thread_time_ns
        for i in range(n):
            text = texts[i % len(texts)]
            # Alternate the order, so neither side always runs with warm caches.
            if i % 2:
                c0, t0 = cpu(), perf()
                self.direct(text)
                c1, t1 = cpu(), perf()
                self.governed(text, i)
                c2, t2 = cpu(), perf()
                direct.append(t1 - t0)
                gateway.append(t2 - t1)
                cpu_over.append(((c2 - c1) - (c1 - c0)) / 1000)
            else:
                c0, t0 = cpu(), perf()
                self.governed(text, i)
                c1, t1 = cpu(), perf()
                self.direct(text)
                c2, t2 = cpu(), perf()
                gateway.append(t1 - t0)
                direct.append(t2 - t1)
                cpu_over.append(((c1 - c0) - (c2 - c1)) / 1000)
            t0 = perf()
            self.adapter.predict(text)
            adapter.append(perf() - t0)
        over = [(g - d) * 1e6 for g, d in zip(gateway, direct, strict=True)]
        own = [(g - a) * 1e6 for g, a in zip(gateway, adapter, strict=True)]
        return {
            "n": n,
            "direct_p50_us": _pct(direct, 0.5) * 1e6,
            "gateway_p50_us": _pct(gateway, 0.5) * 1e6,
            "adapter_p50_us": _pct(adapter, 0.5) * 1e6,
            "overhead_p50_us": _pct(over, 0.5),
            "overhead_p99_us": _pct(over, 0.99),
            "own_p50_us": _pct(own, 0.5),
            "own_p99_us": _pct(own, 0.99),
            "cpu_overhead_p50_us": _pct(cpu_over, 0.5),
        }

    def verify(self) -> dict[str, Any]:
        """Every governed call left its audit record; the budgets counted every call."""
        self.gateway.flush()
        records = 0
        after = 0
        while True:
            page = self.app.audit.query(
                "bench", action="model.called", after_seq=after, limit=10_000
            )
            records += len(page)
            if len(page) < 10_000:
                break
            after = page[-1].seq
        self.gateway.close()
        usage = self.gateway.usage("workflow:bench/triage")
        return {
            "calls": self.calls,
            "records": records,
            "budget_calls_used": None if usage is None else usage.calls_used,
        }

    def close(self) -> None:
        self.gateway.close()
        self.app.close()
        self.tmp.cleanup()


def _litellm(python: str, n: int, timeout: float) -> dict[str, Any] | str:
    try:
        done = subprocess.run(
            [python, "-c", LITELLM_CHILD, str(n)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {python}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} could not run LiteLLM ({last})"
    data = json.loads(done.stdout.strip().splitlines()[-1])
    lat = data["latencies_us"]
    return {"version": data["version"], "p50_us": _pct(lat, 0.5), "p99_us": _pct(lat, 0.99)}


def _peer(explicit: str | None) -> str:
    if explicit:
        return explicit
    if Path(DEFAULT_PEER).exists():
        return DEFAULT_PEER
    return sys.executable


def _filesystem(path: str) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", path], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        return out[-1].split()[1] if len(out) > 1 else "?"
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="timed calls per round (default 3000)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--litellm-n", type=int, default=1000, help="timed LiteLLM calls")
    parser.add_argument("--train-rows", type=int, default=3000)
    parser.add_argument("--peer-python", help=f"interpreter with litellm (default {DEFAULT_PEER})")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--sqlite-dir", help="where the SQLite file goes (default: the temp dir)")
    parser.add_argument("--json", help="write every round's figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for LiteLLM's run")
    args = parser.parse_args(argv)

    try:
        import sklearn
    except ImportError:
        print("scikit-learn is needed: pip install scikit-learn skops", file=sys.stderr)
        return 2
    try:
        bench = AevosBench(args.sqlite_dir, args.train_rows)
    except Exception as exc:
        print(f"aevos could not be set up: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    # The model's vocabulary is a large heap of long-lived objects: without this, the first
    # full garbage collection pauses whichever call it lands in (direct or governed) for
    # a few hundred milliseconds.
    gc.collect()
    gc.freeze()
    peer = _peer(args.peer_python)
    print(
        f"gateway overhead: python {platform.python_version()}, scikit-learn "
        f"{sklearn.__version__}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}; SQLite {bench.path.parent} ({_filesystem(str(bench.path.parent))}, "
        f"journal_mode={bench.journal} synchronous={bench.synchronous}); model trained on "
        f"{bench.trained_on} banking77 rows"
    )
    rounds: list[dict[str, Any]] = []
    litellm_note: str | None = None
    try:
        for index in range(args.rounds):
            entry: dict[str, Any] = {"round": index + 1}
            order = ("aevos", "litellm") if index % 2 == 0 else ("litellm", "aevos")
            for system in order:
                if system == "aevos":
                    entry["aevos"] = bench.measure(args.n, args.warmup if index == 0 else 50)
                elif not args.skip_litellm and litellm_note is None:
                    result = _litellm(peer, args.litellm_n, args.timeout)
                    if isinstance(result, str):
                        litellm_note = result
                    else:
                        entry["litellm"] = result
            a = entry["aevos"]
            line = (
                f"round {index + 1}: direct p50 {a['direct_p50_us']:.0f} us, governed p50 "
                f"{a['gateway_p50_us']:.0f} us -> overhead p50 {a['overhead_p50_us']:.1f} us, "
                f"p99 {a['overhead_p99_us']:.1f} us (gateway's own p50 {a['own_p50_us']:.1f} us; "
                f"CPU overhead p50 {a['cpu_overhead_p50_us']:.1f} us)"
            )
            if "litellm" in entry:
                line += f"; LiteLLM p50 {entry['litellm']['p50_us']:.0f} us"
            print(line, flush=True)
            rounds.append(entry)
        checks = bench.verify()
    finally:
        bench.close()

    med = {
        key: statistics.median(r["aevos"][key] for r in rounds)
        for key in rounds[0]["aevos"]
        if key != "n"
    }
    print()
    print(
        f"aevos governed call, medians of {len(rounds)} rounds x {args.n} calls: overhead p50 "
        f"{med['overhead_p50_us']:.1f} us, p99 {med['overhead_p99_us']:.1f} us over a direct "
        f"predict_proba of p50 {med['direct_p50_us']:.0f} us; the gateway's own share "
        f"(over the sklearn adapter) p50 {med['own_p50_us']:.1f} us, p99 {med['own_p99_us']:.1f} us; "
        f"thread CPU time overhead p50 {med['cpu_overhead_p50_us']:.1f} us"
    )
    print(
        f"  checked: {checks['calls']} governed calls, {checks['records']} model.called audit "
        f"records, workflow budget counted {checks['budget_calls_used']} calls"
    )
    peers = [r["litellm"] for r in rounds if "litellm" in r]
    if peers:
        p50 = statistics.median(p["p50_us"] for p in peers)
        p99 = statistics.median(p["p99_us"] for p in peers)
        print(
            f"LiteLLM {peers[0]['version']} Router.completion (mock_response), medians of "
            f"{len(peers)} rounds x {args.litellm_n} calls: p50 {p50:.0f} us, p99 {p99:.0f} us"
        )
        print(
            f"ratio: LiteLLM p50 / aevos p50 overhead = {p50 / med['overhead_p50_us']:.1f}x "
            f"(p99 {p99 / med['overhead_p99_us']:.1f}x)"
        )
    elif args.skip_litellm:
        print("LiteLLM: skipped (--skip-litellm)")
    else:
        print(f"LiteLLM: not measured: {litellm_note}; {INSTALL_HINT}")
    ok = med["overhead_p50_us"] <= TARGET_US
    verdict = "PASS" if ok else "FAIL"
    print(
        f"target p50 overhead <= {TARGET_US:.0f} us on SQLite: {verdict} ({med['overhead_p50_us']:.1f} us)"
    )
    if checks["records"] != checks["calls"]:
        print("FAIL: not every governed call left an audit record", file=sys.stderr)
        ok = False
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rounds": rounds, "medians": med, "checks": checks}, indent=2)
        )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
