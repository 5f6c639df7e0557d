"""/metrics scrapes as the audit log grows: the incremental model-call totals against a full
recount (what a stateless exporter does on every scrape), side by side.

    python benchmarks/metrics_scrape.py                     # SQLite, 100,000 calls
    python benchmarks/metrics_scrape.py --calls 300000 --repeats 7
    python benchmarks/metrics_scrape.py --postgres-url postgresql://postgres@127.0.0.1:5432/test

The calls go through the real gateway (a rules model, buffered audit records). Then, for
``--repeats`` rounds, 100 more calls are made and the tenant is scraped twice: by the app
that has scraped before (it adds up only the records appended since) and by a fresh
``CallTotalsCache`` (it adds up the whole log). Both expositions must agree; the medians and
their ratio are printed (the sums agree up to float rounding: they are added in another
order).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from aevos import Aevos
from aevos.telemetry.metrics import CallTotalsCache, exposition

TABLE = {
    "input": {"amount": "number"},
    "table": [{"id": "small", "when": {"amount": {"lt": 1000}}, "label": "auto"}],
    "default": {"label": "review", "confidence": 0.5},
}


def _agree(a: bytes, b: bytes) -> bool:
    """The same samples, sums equal but for float rounding (added in another order)."""
    from prometheus_client.parser import text_string_to_metric_families

    def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }

    x, y = samples(a), samples(b)
    return x.keys() == y.keys() and all(math.isclose(x[k], y[k], rel_tol=1e-9) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.postgres_url or f"sqlite:///{Path(tmp) / 'metrics.db'}"
        app = Aevos(url)
        try:
            if args.postgres_url:
                app.store.truncate_all()
            measure(app, args.calls, args.repeats)
        finally:
            app.close()


def measure(app: Aevos, calls: int, repeats: int) -> None:
    app.models.register(
        "risk", json.dumps(TABLE).encode(), flavor="rules", tenant="acme", aliases=["champion"]
    )

    def call(n: int) -> None:
        for i in range(n):
            app.gateway.predict("risk", {"amount": i % 2000}, tenant="acme")
        app.gateway.flush()

    started = time.perf_counter()
    call(calls)
    print(f"{calls:,} model calls recorded in {time.perf_counter() - started:.1f} s")
    first = time.perf_counter()
    exposition(app.store, app.call_totals, "acme")
    print(f"first scrape (adds up the whole log): {(time.perf_counter() - first) * 1000:.1f} ms")
    incremental, recount = [], []
    for _ in range(repeats):
        call(100)
        t = time.perf_counter()
        ours = exposition(app.store, app.call_totals, "acme")
        incremental.append(time.perf_counter() - t)
        kept, app.call_totals = app.call_totals, CallTotalsCache()
        t = time.perf_counter()
        full = exposition(app.store, app.call_totals, "acme")
        recount.append(time.perf_counter() - t)
        app.call_totals = kept
        assert _agree(ours, full), "the incremental totals disagree with a recount"
    a, b = statistics.median(incremental) * 1000, statistics.median(recount) * 1000
    print(f"scrape after 100 more calls, median of {repeats}:")
    print(f"  incremental {a:8.1f} ms")
    print(f"  full recount {b:7.1f} ms")
    print(f"  ratio recount/incremental: {b / a:.0f}x")


if __name__ == "__main__":
    main()
