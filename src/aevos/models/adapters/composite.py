"""The ``composite`` flavor: one version served from parts that other flavors load.

The artifact is a small JSON manifest; the parts are blobs of the registry's blob store,
named by their sha256 digest, so a composite copies no model and adds no serialisation
format (the parts stay skops files and embedding descriptors)::

    {"format": "aevos.composite/1",
     "combine": "mean", "weights": [0.5, 0.5],
     "parts": [
       {"name": "tfidf", "flavor": "sklearn", "sha256": "<digest>"},
       {"combine": "chain", "parts": [
         {"name": "embedding", "flavor": "embedding", "sha256": "<digest>",
          "config": {"batch_size": 64}},
         {"name": "head", "flavor": "sklearn", "sha256": "<digest>"}]}]}

A node is a *part* (``flavor``, ``sha256``, optional ``config`` and ``name``) or a
combination:

- ``chain``: ``[feature part, classifier]``: the feature part (the ``embedding`` flavor)
  turns each text into a vector, which the classifier (a ``sklearn`` part reading vectors,
  or a ``mean`` of such) classifies;
- ``mean``: the weighted mean (``weights``, default equal; non-negative, normalised by their
  sum) of the class probabilities of two or more classifiers that have the same classes.

A classifier is a ``sklearn`` part with ``predict_proba``, a ``chain`` or a ``mean``. The
manifest holds at most :data:`MAX_PARTS` parts, :data:`MAX_DEPTH` levels, and
:data:`MAX_MANIFEST` bytes; the same manifest always serialises to the same bytes
(:func:`manifest`), so registering the same whole twice is one version.

The registry stores the parts' blobs in the transaction that registers the version, refuses
a manifest naming a part it neither was given nor has, and checks at registration that the
parts of every ``mean`` have the same classes. Loading verifies every part's digest
(:class:`~aevos.errors.ArtifactIntegrityError` otherwise) and loads each part through its
own flavor, never trusted: a pickle part is refused, as are skops types outside the part's
``trusted_types``. Parts are cached by digest like versions, so an ensemble and the
embedding chain it contains share one loaded embedding model.

A composite is a text classifier: its input is a non-empty string (config ``signature``
may constrain it further), and it answers like the ``sklearn`` flavor —
``Prediction(label=top class, confidence=its probability, output={"probabilities":
{class: p, ...}})`` with config ``top_k`` (default 5; ``0`` or ``None`` for all).
:meth:`CompositeAdapter.batch_predict` and :meth:`CompositeAdapter.predict_proba` take many
texts in one vectorised call.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ...errors import DefinitionError, InvalidCompositeError, ModelInputError
from .. import flavors
from ..types import ModelAdapter, Prediction
from . import signature as sig
from .sklearn import DEFAULT_TOP_K, SklearnAdapter, prediction_from_proba

__all__ = [
    "FLAVOR",
    "FORMAT",
    "CompositeAdapter",
    "Part",
    "chain",
    "manifest",
    "mean",
    "part",
    "parts_of",
]

FLAVOR = "composite"
FORMAT = "aevos.composite/1"
MAX_MANIFEST = 64 * 1024
MAX_PARTS = 16
MAX_DEPTH = 4
# Flavors a part may have: those whose answers a combination knows how to pass on.
FEATURE_FLAVORS = frozenset({"embedding"})
CLASSIFIER_FLAVORS = frozenset({"sklearn"})
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_PART_KEYS = frozenset({"name", "flavor", "sha256", "config"})
_COMBINE_KEYS = frozenset({"name", "combine", "parts", "weights"})
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- building a manifest (for whoever trains the parts) --------------------------------------


@dataclass(frozen=True)
class Part:
    """A node of a manifest being built, with the blobs its parts name (digest -> bytes)."""

    node: Mapping[str, Any]
    blobs: Mapping[str, bytes] = field(default_factory=dict)


def part(
    flavor: str, data: bytes, config: Mapping[str, Any] | None = None, *, name: str | None = None
) -> Part:
    """A part: ``data`` served by ``flavor`` with ``config``, named by its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    node: dict[str, Any] = {"flavor": flavor, "sha256": digest}
    if config:
        node["config"] = dict(config)
    if name is not None:
        node["name"] = name
    return Part(node, {digest: bytes(data)})


def chain(feature: Part, classifier: Part, *, name: str | None = None) -> Part:
    """``classifier`` applied to the vectors ``feature`` makes of each text."""
    return _combine("chain", [feature, classifier], None, name)


def mean(
    parts: Sequence[Part], weights: Sequence[float] | None = None, *, name: str | None = None
) -> Part:
    """The weighted mean of the class probabilities of ``parts`` (same classes)."""
    return _combine("mean", parts, weights, name)


def _combine(
    kind: str, parts: Sequence[Part], weights: Sequence[float] | None, name: str | None
) -> Part:
    node: dict[str, Any] = {"combine": kind, "parts": [dict(p.node) for p in parts]}
    if weights is not None:
        node["weights"] = [float(w) for w in weights]
    if name is not None:
        node["name"] = name
    blobs: dict[str, bytes] = {}
    for p in parts:
        blobs.update(p.blobs)
    return Part(node, blobs)


def manifest(root: Part) -> tuple[bytes, dict[str, bytes]]:
    """The artifact of the composite ``root`` (canonical JSON) and the blobs it names.

    The manifest is validated as the registry will validate it, so a bad whole fails here,
    where it is built, rather than at registration.
    """
    data = _CANONICAL.encode({"format": FORMAT, **root.node}).encode()
    _parse(data)
    return data, dict(root.blobs)


# -- reading a manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    where: str
    flavor: str
    sha256: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class _Combination:
    where: str
    combine: str
    parts: tuple[_Leaf | _Combination, ...]
    weights: tuple[float, ...]


_Node = _Leaf | _Combination


def _parse(artifact: bytes) -> _Combination:
    if len(artifact) > MAX_MANIFEST:
        raise InvalidCompositeError(
            f"a composite manifest is at most {MAX_MANIFEST} bytes, this one {len(artifact)}"
        )
    try:
        data = json.loads(artifact)
    except (UnicodeDecodeError, ValueError):
        raise InvalidCompositeError(
            "a composite artifact is a JSON manifest; this is not JSON"
        ) from None
    if not isinstance(data, dict):
        raise InvalidCompositeError("a composite manifest is a JSON object")
    if data.get("format") != FORMAT:
        raise InvalidCompositeError(
            f'a composite manifest says "format": {FORMAT!r} (got {str(data.get("format"))[:40]!r})'
        )
    body = {k: v for k, v in data.items() if k != "format"}
    count = [0]
    root = _node(body, "manifest", 1, count)
    if not isinstance(root, _Combination):
        raise InvalidCompositeError("a composite manifest combines parts: its root needs 'combine'")
    return root


def _node(data: Any, where: str, depth: int, count: list[int]) -> _Node:
    if not isinstance(data, dict):
        raise InvalidCompositeError(f"{where} is a JSON object, not {type(data).__name__}")
    if depth > MAX_DEPTH:
        raise InvalidCompositeError(f"{where}: a manifest nests at most {MAX_DEPTH} levels")
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidCompositeError(f"{where}: 'name' must be 1-100 letters, digits, '_.-'")
        where = f"{where} ({name})"
    if "combine" in data:
        return _combination(data, where, depth, count)
    unknown = sorted(set(data) - _PART_KEYS)
    if unknown:
        raise InvalidCompositeError(f"{where}: unknown key(s) {', '.join(unknown)}")
    flavor, digest, config = data.get("flavor"), data.get("sha256"), data.get("config", {})
    if flavor not in FEATURE_FLAVORS | CLASSIFIER_FLAVORS:
        known = ", ".join(sorted(FEATURE_FLAVORS | CLASSIFIER_FLAVORS))
        raise InvalidCompositeError(
            f"{where}: flavor {str(flavor)[:50]!r} cannot be a part (parts are {known})"
        )
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidCompositeError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    if not isinstance(config, dict):
        raise InvalidCompositeError(f"{where}: 'config' must be a JSON object")
    count[0] += 1
    if count[0] > MAX_PARTS:
        raise InvalidCompositeError(f"a composite manifest names at most {MAX_PARTS} parts")
    return _Leaf(where, flavor, digest, config)


def _combination(data: dict[str, Any], where: str, depth: int, count: list[int]) -> _Combination:
    unknown = sorted(set(data) - _COMBINE_KEYS)
    if unknown:
        raise InvalidCompositeError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind, items = data["combine"], data.get("parts")
    if kind not in ("chain", "mean"):
        raise InvalidCompositeError(
            f"{where}: 'combine' is 'chain' or 'mean', not {str(kind)[:40]!r}"
        )
    if not isinstance(items, list) or len(items) < 2:
        raise InvalidCompositeError(f"{where}: a {kind} has a list of at least two 'parts'")
    parts = tuple(
        _node(item, f"{where}.parts[{i}]", depth + 1, count) for i, item in enumerate(items)
    )
    for i, p in enumerate(parts):
        if kind == "chain" and i == 0:
            if not (isinstance(p, _Leaf) and p.flavor in FEATURE_FLAVORS):
                raise InvalidCompositeError(
                    f"{p.where}: a chain starts with a feature part "
                    f"({', '.join(sorted(FEATURE_FLAVORS))})"
                )
        elif isinstance(p, _Leaf) and p.flavor not in CLASSIFIER_FLAVORS:
            raise InvalidCompositeError(
                f"{p.where}: a {p.flavor} part is not a classifier; only the first part of a "
                "chain may be one"
            )
    if kind == "chain" and len(parts) != 2:
        raise InvalidCompositeError(f"{where}: a chain is [feature part, classifier]")
    weights = data.get("weights")
    if kind == "chain" and weights is not None:
        raise InvalidCompositeError(f"{where}: a chain has no weights")
    if weights is None:
        weights = [1.0] * len(parts)
    if (
        not isinstance(weights, list)
        or len(weights) != len(parts)
        or not all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            for w in weights
        )
        or sum(weights) <= 0
    ):
        raise InvalidCompositeError(
            f"{where}: 'weights' are {len(parts)} finite non-negative numbers, not all zero"
        )
    return _Combination(where, kind, parts, tuple(float(w) for w in weights))


def _leaves(node: _Node) -> Iterable[_Leaf]:
    if isinstance(node, _Leaf):
        yield node
    else:
        for p in node.parts:
            yield from _leaves(p)


def parts_of(artifact: bytes) -> list[str]:
    """The digests a manifest names, in order, once each (the manifest validated)."""
    return list(dict.fromkeys(leaf.sha256 for leaf in _leaves(_parse(artifact))))


# -- serving -----------------------------------------------------------------------------------


class _Classifier(Protocol):
    @property
    def classes(self) -> list[Any]: ...

    def proba(self, inputs: Any) -> Any: ...


class _Head:
    """A ``sklearn`` part: probabilities for texts, or for the vectors of a chain."""

    def __init__(self, adapter: SklearnAdapter) -> None:
        self.adapter = adapter
        assert adapter.classes is not None
        self.classes: list[Any] = adapter.classes

    def proba(self, inputs: Any) -> Any:
        return self.adapter.predict_proba(inputs)


class _Chain:
    def __init__(self, feature: ModelAdapter, head: _Classifier) -> None:
        self.feature = feature
        self.head = head
        self.classes = head.classes

    def proba(self, inputs: Any) -> Any:
        answers = _batch(self.feature, list(inputs))
        # float32, as the embedding model computes them (and as the recipes train on them).
        vectors = np.asarray([a.output for a in answers], dtype=np.float32)
        return self.head.proba(vectors)


class _Mean:
    def __init__(self, parts: Sequence[_Classifier], weights: Sequence[float]) -> None:
        self.parts = list(parts)
        total = sum(weights)
        self.weights = [w / total for w in weights]
        self.classes = self.parts[0].classes

    def proba(self, inputs: Any) -> Any:
        out: Any = None
        for weight, p in zip(self.weights, self.parts, strict=True):
            if weight == 0:
                continue
            term = weight * np.asarray(p.proba(inputs), dtype=float)
            out = term if out is None else out + term
        return out


def _batch(adapter: ModelAdapter, inputs: list[Any]) -> list[Prediction]:
    batch = getattr(adapter, "batch_predict", None)
    if batch is not None:
        return list(batch(inputs))
    return [adapter.predict(x) for x in inputs]


class CompositeAdapter:
    """A composite text classifier (see the module docstring). Thread-safe as its parts are:
    the ``sklearn`` parts share fitted state read-only, the embedding part takes turns."""

    flavor = FLAVOR

    def __init__(
        self,
        root: _Classifier,
        *,
        signature: Mapping[str, Any] | None = None,
        top_k: int | None = DEFAULT_TOP_K,
    ) -> None:
        self.root = root
        self.signature = sig.normalize(signature) if signature is not None else None
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0
        ):
            raise DefinitionError("composite config 'top_k' must be a non-negative integer")
        self.top_k = top_k or None

    @property
    def classes(self) -> list[Any]:
        """The labels, in the column order of :meth:`predict_proba`."""
        return self.root.classes

    def predict(self, input: Any) -> Prediction:
        return self.batch_predict([input])[0]

    def batch_predict(self, inputs: Iterable[Any]) -> list[Prediction]:
        """Many texts in one vectorised call through every part."""
        proba = self.predict_proba(list(inputs))
        return [prediction_from_proba(self.classes, row, self.top_k) for row in proba]

    def predict_proba(self, texts: Sequence[str]) -> Any:
        """A ``(len(texts), len(classes))`` array of probabilities."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if self.signature is not None:
                sig.validate(self.signature, text)
            if not isinstance(text, str):
                raise ModelInputError(
                    f"a composite classifies texts: input {i} is a {type(text).__name__}"
                )
            if not text.strip():
                raise ModelInputError(f"input {i} is empty")
        if not texts:
            return np.zeros((0, len(self.classes)))
        return self.root.proba(texts)


def _build(node: _Node, load_part: flavors.PartLoader) -> _Classifier:
    if isinstance(node, _Leaf):
        return _head(node, load_part)
    if node.combine == "chain":
        feature, classifier = node.parts
        assert isinstance(feature, _Leaf)
        embedder = load_part(feature.flavor, feature.sha256, feature.config)
        head = _build(classifier, load_part)
        dim, wanted = getattr(embedder, "dim", None), _features_in(head)
        if dim is not None and wanted is not None and dim != wanted:
            raise InvalidCompositeError(
                f"{node.where}: {feature.where} makes {dim}-float vectors but the classifier "
                f"reads {wanted} features"
            )
        return _Chain(embedder, head)
    parts = [_build(p, load_part) for p in node.parts]
    _same_classes(node, parts)
    return _Mean(parts, node.weights)


def _head(leaf: _Leaf, load_part: flavors.PartLoader) -> _Head:
    adapter = load_part(leaf.flavor, leaf.sha256, leaf.config)
    if not isinstance(adapter, SklearnAdapter) or not adapter._proba:
        raise InvalidCompositeError(
            f"{leaf.where}: the part is not a classifier with class probabilities"
        )
    return _Head(adapter)


def _features_in(node: _Classifier) -> int | None:
    if isinstance(node, _Head):
        n = getattr(node.adapter.estimator, "n_features_in_", None)
        return None if n is None else int(n)
    if isinstance(node, _Mean):
        found = {_features_in(p) for p in node.parts} - {None}
        return found.pop() if len(found) == 1 else None
    return None


def _same_classes(node: _Combination, parts: Sequence[_Classifier]) -> None:
    first = [str(c) for c in parts[0].classes]
    for p, built in zip(node.parts[1:], parts[1:], strict=True):
        other = [str(c) for c in built.classes]
        if other != first:
            only_first = sorted(set(first) - set(other))
            only_other = sorted(set(other) - set(first))
            detail = (
                f"{len(only_first)} class(es) only in the first (e.g. {only_first[:3]}), "
                f"{len(only_other)} only in this one (e.g. {only_other[:3]})"
                if only_first or only_other
                else "the same classes in another order"
            )
            raise InvalidCompositeError(
                f"{node.where}: a mean needs parts with the same classes; {p.where} has "
                f"{len(other)} and {node.parts[0].where} {len(first)}: {detail}"
            )


def _check(artifact: bytes, load_part: flavors.PartLoader) -> None:
    """At registration: the classes of every mean agree (only classifier parts are loaded;
    the embedding model, slow to load, is checked when the version is served)."""

    def classes(node: _Node) -> _Classifier:
        if isinstance(node, _Leaf):
            return _head(node, load_part)
        if node.combine == "chain":
            return classes(node.parts[1])
        parts = [classes(p) for p in node.parts]
        _same_classes(node, parts)
        return parts[0]

    classes(_parse(artifact))


def load(artifact: bytes, config: Mapping[str, Any], load_part: flavors.PartLoader) -> ModelAdapter:
    """Flavor loader: the manifest and its (verified) parts -> :class:`CompositeAdapter`."""
    root = _build(_parse(artifact), load_part)
    return CompositeAdapter(
        root, signature=config.get("signature"), top_k=config.get("top_k", DEFAULT_TOP_K)
    )


flavors.register_composite(FLAVOR, flavors.Composite(parts=parts_of, check=_check, load=load))
