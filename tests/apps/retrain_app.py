"""A retraining app for the tests: banking77 slices as labelled data, a recipe that waits
for the test, and a worker entry point (``python -m tests.apps.retrain_app``).

``BankingLabels`` is a :class:`~aevos.retraining.TrainingData` over a slice of
data/banking77/train.csv: a few intents, a few dozen queries each, labelled at shuffled
times (so the newest fraction held out has every intent). ``gated-tfidf`` trains like
``tfidf-logreg`` once the file ``RETRAIN_GATE`` exists, and first writes a file into
``RETRAIN_STARTED`` (one per attempt): the crash test kills a worker while it waits.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.apps.crash_app import _exit_with_parent

from aevos import Aevos
from aevos.evolution import Dataset, TfidfLogregParams, Trained
from aevos.public_data import data_file

POLICIES = Path(__file__).resolve().parents[2] / "examples" / "policies"
#: Fast parameters for tests: character 2-3 grams train in well under a second.
FAST = {"char_ngrams": [2, 3]}
#: A configuration that certifies on these slices: a reserve of 30% of the (unbiased) rows,
#: precision >= 0.9 at risk 0.2 from 30 cases on.
CERTIFY = {"target": 0.9, "delta": 0.2, "min_count": 30, "holdout": 0.3, "reserve": 0.3}
CERTIFY_FAST = {"params": FAST, **CERTIFY}


def banking(intents: int = 6, per: int = 40, *, seed: int = 0, unbiased: bool = True) -> Dataset:
    """``per`` queries of each of the first ``intents`` intents, labelled at shuffled times;
    ``unbiased``: as if every query had been put to a person (no model chose them)."""
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    with data_file("banking77", "train.csv").open(newline="", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            intent = record["category"]
            if intent not in seen and len(seen) >= intents:
                continue
            if seen.setdefault(intent, 0) < per:
                seen[intent] += 1
                rows.append((record["text"], intent))
    times = list(range(len(rows)))
    random.Random(seed).shuffle(times)
    data = Dataset.from_rows(
        (text, label, float(t)) for (text, label), t in zip(rows, times, strict=True)
    )
    return Dataset(data.texts, data.labels, data.times, (unbiased,) * len(data))


@dataclass(frozen=True)
class Snapshot:
    digest: str
    rows: int

    def __len__(self) -> int:
        return self.rows


@dataclass
class BankingLabels:
    """Labelled data kept outside aevos (a slice of banking77) as a retraining's source."""

    data: Dataset = field(default_factory=banking)
    labels: int | None = None  # what label_count reports (default: the rows)

    def snapshot(self, model: str, *, tenant: str, actor: str) -> Snapshot:
        digest = hashlib.sha256(repr((self.data.texts, self.data.labels)).encode()).hexdigest()
        return Snapshot(digest, len(self.data))

    def training_data(self, digest: str, *, tenant: str) -> Dataset:
        return self.data

    def label_count(self, model: str, *, tenant: str) -> int:
        return len(self.data) if self.labels is None else self.labels


def build(url: str, *, lease_seconds: float = 2.0) -> Aevos:
    app = Aevos(url, lease_seconds=lease_seconds, poll_interval=0.02, policies=POLICIES)
    app.retraining.data = BankingLabels()
    gate = os.environ.get("RETRAIN_GATE")
    started = os.environ.get("RETRAIN_STARTED")

    @app.recipes.recipe("gated-tfidf", version=1, params=TfidfLogregParams)
    def gated(dataset: Dataset, params: TfidfLogregParams) -> Trained:
        if started is not None:
            Path(started, f"attempt-{os.getpid()}-{time.time_ns()}").touch()
        if gate is not None:
            deadline = time.monotonic() + 120
            while not Path(gate).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never opened the gate")
                time.sleep(0.05)
        return app.recipes.get("tfidf-logreg").train(dataset, params)

    return app


def main() -> None:
    _exit_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    app = build(os.environ["AEVOS_DATABASE_URL"])
    try:
        app.worker(concurrency=2).run()
    finally:
        app.close()


if __name__ == "__main__":
    main()
