"""A certification record: a model version's certified automation threshold, as kept.

What :func:`aevos.evolution.certify` decided for one version, kept with the figures it
decided on (never the cases): how many labelled cases, how many errors, which threshold (or
none), the p-value, the target and risk, and the digest of the dataset version it used. The
certifications service (:mod:`aevos.evolution.certifications`) records them and storage
persists them; the gateway reads the latest one of the version that answered a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CertificationRecord:
    """One certification of ``model@version``; ``threshold`` None means nothing was
    certified and nothing of that version may be automated.

    ``n`` is the number of labelled cases certification used; ``errors`` and ``p_value``
    are those of the cases at or above the certified threshold (or, when nothing was
    certified, of the threshold whose test failed first, if any was tested); ``evidence``
    holds the rest of the figures (``n_above``, ``min_count``, ``start``, ``reason``)."""

    id: int
    tenant: str
    model: str
    version: int
    target: float
    delta: float
    method: str
    n: int
    errors: int
    threshold: float | None
    p_value: float | None
    dataset: str | None
    created_by: str
    created_at: float
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def certified(self) -> bool:
        return self.threshold is not None

    @property
    def version_ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def n_above(self) -> int:
        """The labelled cases at or above the certified threshold (0 when none is)."""
        value = self.evidence.get("n_above", 0)
        return int(value) if isinstance(value, int | float) else 0

    @property
    def reason(self) -> str | None:
        """Why nothing was certified (None when a threshold was)."""
        value = self.evidence.get("reason")
        return value if isinstance(value, str) else None

    @property
    def calibration(self) -> tuple[list[float], list[float]] | None:
        """The calibration curve certification fitted (confidences, probabilities right),
        or None (too few cases, or a record kept before curves were)."""
        value = self.evidence.get("calibration")
        if not isinstance(value, list | tuple) or len(value) != 2:
            return None
        xs, ys = value
        if not isinstance(xs, list | tuple) or not isinstance(ys, list | tuple):
            return None
        if len(xs) != len(ys) or len(xs) < 2:
            return None
        return [float(x) for x in xs], [float(y) for y in ys]

    def automates(self, confidence: float | None) -> bool:
        """Whether a decision of this version at ``confidence`` may run without a person."""
        return (
            self.threshold is not None and confidence is not None and confidence >= self.threshold
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "certified": self.certified,
            "threshold": self.threshold,
            "target": self.target,
            "delta": self.delta,
            "method": self.method,
            "n": self.n,
            "errors": self.errors,
            "p_value": self.p_value,
            "dataset": self.dataset,
            "evidence": dict(self.evidence),
            "created_by": self.created_by,
            "created_at": self.created_at,
        }
