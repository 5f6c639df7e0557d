"""Training recipes: named, versioned Python callables that turn a dataset into a model.

A recipe is registered under a name with a version and a parameter type — one frozen
dataclass per recipe, validated when it is built and serialisable to JSON — so a trained
model can say exactly how it was made (``recipe@version`` and its parameters) and be
retrained the same way. Calling :meth:`RecipeRegistry.train` runs the recipe on a
:class:`~aevos.evolution.dataset.Dataset` and measures the result on an evaluation set the
caller passes (or none): accuracy, macro-F1, per-class support and log loss.

The recipe returns a :class:`Trained`: the fitted model (for measuring and certifying in
this process) and its artifact in one of the registry's safe formats (skops for
scikit-learn, a ``composite`` manifest naming such parts by digest; never a pickle), with
the flavor that serves it, ready for ``app.models.register(name, a.data, flavor=a.flavor,
config=a.config, parts=a.blobs)``.

Nothing here imports scikit-learn, scipy or torch until a recipe runs, and nothing here
knows the app, the kernel or storage: the retraining workflow calls it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..errors import DatasetError, RecipeParameterError
from .dataset import Dataset, Label

__all__ = [
    "ArtifactPart",
    "Metrics",
    "Recipe",
    "TextClassifier",
    "Trained",
    "TrainingResult",
    "evaluate",
    "params_from_json",
    "params_to_json",
]

P = TypeVar("P")


class TextClassifier(Protocol):
    """What a recipe's fitted model offers in memory: class probabilities for texts."""

    @property
    def classes(self) -> list[Label]:
        """The labels, in the column order of :meth:`predict_proba`."""
        ...

    def predict_proba(self, texts: Sequence[str]) -> Any:
        """A ``(len(texts), len(classes))`` array of probabilities (rows sum to 1)."""
        ...


@dataclass(frozen=True)
class ArtifactPart:
    """Bytes the model registry can store and a flavor can serve, as
    ``app.models.register(name, data, flavor=flavor, config=config, parts=blobs)``.

    ``blobs`` are the parts a ``composite`` manifest names (sha256 -> bytes); empty for
    every other flavor.
    """

    flavor: str
    data: bytes
    config: Mapping[str, Any] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Trained:
    """What a recipe returns.

    ``artifact`` is the whole model as one registry version (None only for a recipe whose
    model no flavor can serve). ``parts`` are the pieces it is made of, each registrable on
    its own.
    """

    model: TextClassifier
    artifact: ArtifactPart | None
    parts: Mapping[str, ArtifactPart] = field(default_factory=dict)


@dataclass(frozen=True)
class Metrics:
    """A model measured on a labelled evaluation set.

    ``log_loss`` is natural-log cross-entropy with probabilities clipped at 1e-15, so a label
    the model never saw (probability 0) costs ``-log(1e-15)`` instead of infinity.
    """

    n: int
    accuracy: float
    macro_f1: float
    log_loss: float
    support: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "log_loss": self.log_loss,
            "support": dict(self.support),
        }


@dataclass(frozen=True)
class Recipe(Generic[P]):
    """A registered recipe: ``train(dataset, params)`` with parameters of ``params_type``."""

    name: str
    version: int
    params_type: type[P]
    train: Callable[[Dataset, P], Trained]
    description: str = ""

    @property
    def ref(self) -> str:
        """``name@version``, as a model's lineage records it."""
        return f"{self.name}@{self.version}"

    def params(self, value: P | Mapping[str, Any] | None = None) -> P:
        """``value`` as this recipe's parameters: the defaults, a JSON mapping, or an instance."""
        if value is None:
            return self.params_type()
        if isinstance(value, self.params_type):
            return value
        if isinstance(value, Mapping):
            return params_from_json(self.params_type, value)
        raise RecipeParameterError(
            f"recipe {self.name!r} takes {self.params_type.__name__} or a mapping, "
            f"not {type(value).__name__}"
        )


@dataclass(frozen=True)
class TrainingResult:
    """A recipe's run: the trained model, its artifact, and how it was made."""

    recipe: str
    recipe_version: int
    params: Mapping[str, Any]
    trained: Trained
    n_train: int
    metrics: Metrics | None

    @property
    def model(self) -> TextClassifier:
        return self.trained.model

    @property
    def artifact(self) -> ArtifactPart | None:
        return self.trained.artifact

    def lineage(self) -> dict[str, Any]:
        """JSON that records how the model was made (to keep with its registry version)."""
        return {
            "recipe": self.recipe,
            "recipe_version": self.recipe_version,
            "params": dict(self.params),
            "n_train": self.n_train,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
        }


def evaluate(model: TextClassifier, dataset: Dataset) -> Metrics:
    """Accuracy, macro-F1 (over the labels present in ``dataset`` or predicted), support per
    label and log loss of ``model`` on ``dataset``."""
    import numpy as np
    from sklearn.metrics import f1_score

    if len(dataset) == 0:
        raise DatasetError("the evaluation set is empty")
    proba = np.asarray(model.predict_proba(list(dataset.texts)), dtype=float)
    classes = [str(c) for c in model.classes]
    column = {c: i for i, c in enumerate(classes)}
    truth = [str(y) for y in dataset.labels]
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    p_true = np.array(
        [proba[r, column[y]] if y in column else 0.0 for r, y in enumerate(truth)], dtype=float
    )
    log_loss = float(-np.mean(np.log(np.clip(p_true, 1e-15, 1.0))))
    accuracy = float(np.mean([p == y for p, y in zip(predicted, truth, strict=True)]))
    macro_f1 = float(f1_score(truth, predicted, average="macro", zero_division=0))
    return Metrics(
        n=len(dataset),
        accuracy=accuracy,
        macro_f1=macro_f1,
        log_loss=log_loss,
        support=dataset.counts(),
    )


# -- parameters as JSON ---------------------------------------------------------------------


def params_to_json(params: Any) -> dict[str, Any]:
    """A parameter dataclass as JSON (tuples become lists, nested dataclasses mappings)."""
    if not dataclasses.is_dataclass(params) or isinstance(params, type):
        raise RecipeParameterError(f"parameters are a dataclass, not {type(params).__name__}")
    out = dataclasses.asdict(params)
    json.dumps(out, allow_nan=False)  # fails here rather than when the version is stored
    return out


def params_from_json(cls: type[P], data: Mapping[str, Any], *, _path: str = "") -> P:
    """``cls`` built from a JSON mapping: unknown keys are refused, lists become tuples where
    the field is a tuple, mappings become the nested parameter dataclass; the dataclass's own
    validation then runs."""
    if not isinstance(data, Mapping):
        raise RecipeParameterError(
            f"parameters{' ' + _path if _path else ''} are a mapping, not {type(data).__name__}",
            _path or None,
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        where = _path + "." if _path else ""
        raise RecipeParameterError(
            f"unknown parameter {where}{unknown[0]!r} for {cls.__name__} "
            f"(known: {', '.join(sorted(names))})",
            where + unknown[0],
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        nested = _dataclass_in(hint)
        if nested is not None and isinstance(value, Mapping):
            values[key] = params_from_json(nested, value, _path=f"{_path}.{key}".lstrip("."))
        elif _is_tuple(hint) and isinstance(value, list):
            values[key] = tuple(value)
        else:
            values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise RecipeParameterError(f"{cls.__name__}: {exc}") from None


def _dataclass_in(hint: Any) -> type[Any] | None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    return None


def _is_tuple(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(hint))
    return False


# -- validation helpers for parameter dataclasses -------------------------------------------


def check_number(
    owner: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """Refuse ``value`` unless it is a finite number (an integer if asked) within the range."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise RecipeParameterError(
            f"{owner}.{name} must be {kind}, not {type(value).__name__}", name
        )
    number = float(typing.cast(float, value))
    if not math.isfinite(number):
        raise RecipeParameterError(f"{owner}.{name} must be finite", name)
    if low is not None and (number <= low if low_open else number < low):
        raise RecipeParameterError(
            f"{owner}.{name} must be {'>' if low_open else '>='} {low}, got {value}", name
        )
    if high is not None and number > high:
        raise RecipeParameterError(f"{owner}.{name} must be <= {high}, got {value}", name)


def check_range(owner: str, name: str, value: object, *, low: int, high: int) -> None:
    """Refuse ``value`` unless it is a pair ``(a, b)`` of integers with ``low <= a <= b <= high``."""
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not low <= value[0] <= value[1] <= high
    ):
        raise RecipeParameterError(
            f"{owner}.{name} must be a pair (a, b) of integers with {low} <= a <= b <= {high}",
            name,
        )
