"""The shapes shared by the registry, the adapters and the gateway.

An adapter turns an input into a :class:`Prediction`; the registry stores immutable
:class:`ModelVersion` records and resolves names and aliases to them; the gateway routes a
call to a version, governs it (budgets, breaker, policy) and records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Prediction:
    """What one model call returned, in one shape whatever the model.

    ``label`` is the decision-like output (a class, a routed queue, a field value),
    ``confidence`` its probability or score in [0, 1] where the model has one, ``output``
    the full structured result (class probabilities, OCR text and boxes, an embedding, an
    LLM message). Token counts and cost are filled by adapters that know them.
    """

    label: Any = None
    confidence: float | None = None
    output: Any = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelAdapter(Protocol):
    """A loaded model version that can predict. Adapters are built by flavor loaders from a
    version's artifact bytes and config; ``predict`` must be safe to call from threads."""

    flavor: str

    def predict(self, input: Any) -> Prediction: ...


@dataclass(frozen=True)
class ModelCard:
    """What a version is for and where it came from (MLflow's model card, trimmed)."""

    intended_use: str = ""
    owner: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    training_data: str = ""  # a reference: dataset name + digest, never the data
    training_run_id: str | None = None  # the aevos run that produced it
    limitations: str = ""


@dataclass(frozen=True)
class ModelVersion:
    """One immutable, content-addressed version of a model."""

    tenant: str
    name: str
    version: int
    digest: str  # sha256 of the artifact bytes
    flavor: str
    config: Mapping[str, Any]
    card: ModelCard
    signature: Mapping[str, Any] | None
    tags: Mapping[str, str]
    created_by: str
    created_at: float

    @property
    def ref(self) -> str:
        """``name@version``: how calls, audit records and lineage name this version."""
        return f"{self.name}@{self.version}"
