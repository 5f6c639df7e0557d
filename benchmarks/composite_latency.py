"""The ``ensemble`` recipe served as one composite version vs ``tfidf-logreg`` alone.

    python benchmarks/composite_latency.py                  # SQLite, 300 calls each
    python benchmarks/composite_latency.py --calls 500 --batch 256 --json out.json

Both recipes learn banking77 from 10 examples per intent (770 rows, 77 intents) and are
registered in one app. Measured:

* per-call latency through the gateway (``app.gateway.predict``, one text per call, the
  test queries in turn), median and p95 of ``--calls`` calls after 20 warm-up calls;
* batch throughput of the loaded adapter's ``batch_predict`` on ``--batch`` texts (texts
  per second, median of 5 runs).

It prints the ratio ensemble / tfidf-logreg for each. Needs the ``embedding`` extra.

On a shared 2-core machine under load (load average ~9), torch's default of one thread per
core made a single MiniLM call take ~0.6 s instead of ~35 ms (threads spinning against
other processes): run with ``OMP_NUM_THREADS=1`` there. Measured so (SQLite, 300 calls):
tfidf-logreg 1.8 ms median per gateway call, ensemble 48 ms (x26, the MiniLM forward pass
is ~35-45 ms of it; the composite itself adds no measurable time over the recipe's
in-memory model); batch_predict of 256 texts 2,720 vs 41 texts/s.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aevos import Aevos
from aevos.evolution import Dataset, RecipeRegistry
from aevos.public_data import data_file


def load(name: str) -> Dataset:
    with data_file("banking77", name).open(newline="", encoding="utf-8") as f:
        return Dataset.from_rows((r["text"], r["category"]) for r in csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    train, test = load("train.csv").per_label(10), load("test.csv")
    texts = list(test.texts)
    recipes = RecipeRegistry()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, Aevos(f"sqlite:///{tmp}/bench.db") as app:
        for recipe in ("tfidf-logreg", "ensemble"):
            trained = recipes.train(recipe, train)
            a = trained.artifact
            assert a is not None
            app.models.register(
                recipe,
                a.data,
                flavor=a.flavor,
                config=dict(a.config),
                parts=a.blobs,
                aliases=["champion"],
            )
            for text in texts[:20]:  # load the version, warm caches
                app.gateway.predict(recipe, text)
            latencies = []
            for i in range(args.calls):
                text = texts[i % len(texts)]
                start = time.perf_counter()
                app.gateway.predict(recipe, text)
                latencies.append((time.perf_counter() - start) * 1000)
            adapter: Any = app.models.load(app.models.get(recipe))
            batch = texts[: args.batch]
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                adapter.batch_predict(batch)
                runs.append(len(batch) / (time.perf_counter() - start))
            latencies.sort()
            results[recipe] = {
                "median_ms": statistics.median(latencies),
                "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
                "batch_texts_per_s": statistics.median(runs),
                "manifest_bytes": len(a.data),
            }
            r = results[recipe]
            print(
                f"{recipe:>13}: gateway call median {r['median_ms']:.2f} ms, "
                f"p95 {r['p95_ms']:.2f} ms; batch_predict({len(batch)}) "
                f"{r['batch_texts_per_s']:.0f} texts/s"
            )
    t, e = results["tfidf-logreg"], results["ensemble"]
    print(
        f"ensemble / tfidf-logreg: latency x{e['median_ms'] / t['median_ms']:.1f}, "
        f"batch throughput x{e['batch_texts_per_s'] / t['batch_texts_per_s']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
