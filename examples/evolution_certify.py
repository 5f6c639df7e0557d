"""Train a recipe on a few labels, certify its automation threshold, check it on unseen data.

    python examples/evolution_certify.py [--per-intent 30] [--calibration 1000] [--seed 0]
                                         [--recipe tfidf-logreg]

On banking77: a recipe (``tfidf-logreg`` by default; ``embedding-logreg`` and ``ensemble``
need the ``embedding`` extra) learns from ``per_intent`` random examples of each of the 77
intents; ``calibration`` other training rows, drawn at random, play the labelled cases the
model did not train on; :func:`aevos.evolution.certify` picks the confidence threshold above
which precision >= 97% holds with probability >= 90%. test.csv, never looked at before, then
shows what that threshold does: the share of queries it automates and their precision.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from typing import Any

import numpy as np

from aevos.evolution import Dataset, RecipeRegistry, certify
from aevos.public_data import data_file


def load(name: str) -> Dataset:
    with data_file("banking77", name).open(newline="", encoding="utf-8") as f:
        return Dataset.from_rows((r["text"], r["category"]) for r in csv.DictReader(f))


def confidence_and_correct(model: Any, data: Dataset) -> tuple[Any, Any]:
    proba = model.predict_proba(list(data.texts))
    predicted = np.asarray(model.classes, dtype=object)[proba.argmax(axis=1)]
    return proba.max(axis=1), predicted == np.asarray(data.labels, dtype=object)


def main(
    per_intent: int = 30, calibration: int = 1000, seed: int = 0, recipe: str = "tfidf-logreg"
) -> dict[str, Any]:
    train, test = load("train.csv"), load("test.csv")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    seen: Counter[Any] = Counter()
    picked, rest = [], []
    for i in order:
        if seen[train.labels[i]] < per_intent:
            seen[train.labels[i]] += 1
            picked.append(i)
        else:
            rest.append(i)

    recipes = RecipeRegistry()
    result = recipes.train(recipe, train.subset(picked), evaluation=test)

    # Labelled cases the model did not train on: an unbiased sample of the other rows.
    confidence, correct = confidence_and_correct(result.model, train.subset(rest[:calibration]))
    certification = certify(confidence, correct, target=0.97, delta=0.1)

    # What the threshold does on queries nobody looked at.
    test_confidence, test_correct = confidence_and_correct(result.model, test)
    automated = (
        test_confidence >= certification.threshold
        if certification.threshold is not None
        else np.zeros(len(test), dtype=bool)
    )
    assert result.metrics is not None
    return {
        "trained_on": result.n_train,
        "accuracy": result.metrics.accuracy,
        "macro_f1": result.metrics.macro_f1,
        "certification": certification.to_json(),
        "auto_routed": float(automated.mean()),
        "precision": float(test_correct[automated].mean()) if automated.any() else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-intent", type=int, default=30)
    parser.add_argument("--calibration", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="tfidf-logreg")
    args = parser.parse_args()
    out = main(args.per_intent, args.calibration, args.seed, args.recipe)
    cert = out["certification"]
    print(f"trained on {out['trained_on']} labels: accuracy {out['accuracy']:.1%} on test.csv")
    if cert["certified"]:
        print(
            f"certified threshold {cert['threshold']:.3f} on {cert['n']} labelled cases "
            f"({cert['errors']} errors among {cert['n_above']} above it, p = {cert['p_value']:.3f})"
        )
        print(f"test.csv: auto-routed {out['auto_routed']:.1%} at precision {out['precision']:.1%}")
    else:
        print(f"not certified: {cert['reason']}")
