"""Evolution: models that learn from the people who review their work.

Today this package holds:

- training recipes (:class:`RecipeRegistry`): named, versioned callables with typed
  parameters that turn a :class:`Dataset` into a registrable artifact and its metrics;
- certified automation thresholds (:func:`certify`): the confidence above which decisions may
  run without a person, with precision >= a target at risk delta (Learn-then-Test);
- certification records (:class:`Certifications`, ``app.certifications``): a version's
  certification kept, audited and served by the gateway with every answer of that version.

Importing it imports neither scikit-learn nor scipy nor torch: they load when a recipe
trains or a certification runs. Nothing here imports the app or the kernel; certification
records reach storage only through its units of work.
"""

from __future__ import annotations

from ..records.certification import CertificationRecord
from .certifications import Certifications
from .certify import DEFAULT_DELTA, DEFAULT_TARGET, Certification, certify, p_value
from .classifiers import EmbeddingLogregParams, EnsembleParams, TfidfLogregParams
from .dataset import Dataset
from .datasets import Datasets, DatasetVersion
from .labels import Labels
from .recipes import (
    ArtifactPart,
    Metrics,
    Recipe,
    TextClassifier,
    Trained,
    TrainingResult,
    evaluate,
    params_from_json,
    params_to_json,
)
from .registry import RecipeRegistry

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_TARGET",
    "ArtifactPart",
    "Certification",
    "CertificationRecord",
    "Certifications",
    "Dataset",
    "DatasetVersion",
    "Datasets",
    "EmbeddingLogregParams",
    "EnsembleParams",
    "Labels",
    "Metrics",
    "Recipe",
    "RecipeRegistry",
    "TextClassifier",
    "TfidfLogregParams",
    "Trained",
    "TrainingResult",
    "certify",
    "evaluate",
    "p_value",
    "params_from_json",
    "params_to_json",
]
