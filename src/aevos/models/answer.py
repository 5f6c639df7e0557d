"""What a governed model call answers (:class:`CallResult`), as a workflow records it at its
position, and how a recorded failure is raised again on replay (:func:`rebuild_error`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AevosError, StepFailedError
from .types import Prediction

__all__ = ["STEP_PREFIX", "CallResult", "rebuild_error"]

#: The step name of a ``ctx.predict`` position: this prefix and the model's name.
STEP_PREFIX = "aevos.predict:"


@dataclass(frozen=True)
class CallResult:
    """The answer of a governed call: the prediction, which version gave it and by which
    route (``primary``, ``canary``, ``cascade:N``, ``fallback:N``), the whole call's latency
    and the input's SHA-256. ``label``, ``confidence`` and ``output`` are the prediction's.

    ``certified_threshold`` is the answering version's certified automation threshold when
    the call was made (None: the version has none, and nothing it answers may be automated);
    ``certified`` says whether this answer reaches it. A policy deciding after the call sees
    both (``ctx.decide("auto-route", prediction=result)``: see :meth:`policy_input`)."""

    prediction: Prediction
    model: str
    version: int
    route: str
    latency_ms: float
    input_digest: str
    call_id: str
    attempts: int = 1
    certified_threshold: float | None = None

    @property
    def version_ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def certified(self) -> bool:
        """Whether this answer may be automated: its version has a certified threshold and
        the answer's confidence is at or above it."""
        threshold, confidence = self.certified_threshold, self.prediction.confidence
        return threshold is not None and confidence is not None and confidence >= threshold

    def policy_input(self) -> dict[str, Any]:
        """What a policy sees of this answer when it is passed as an input
        (``ctx.decide(policy, prediction=result)``): ``prediction.label``,
        ``prediction.confidence``, ``prediction.certified`` (bool),
        ``prediction.certified_threshold`` (null when uncertified), ``prediction.model``,
        ``prediction.version``, ``prediction.route``. The output is left out: a policy that
        needs part of it is passed that part."""
        return {
            "label": self.prediction.label,
            "confidence": self.prediction.confidence,
            "certified": self.certified,
            "certified_threshold": self.certified_threshold,
            "model": self.model,
            "version": self.version,
            "route": self.route,
            "call_id": self.call_id,
            "input_digest": self.input_digest,
        }

    @property
    def label(self) -> Any:
        return self.prediction.label

    @property
    def confidence(self) -> float | None:
        return self.prediction.confidence

    @property
    def output(self) -> Any:
        return self.prediction.output

    def to_record(self) -> dict[str, Any]:
        """JSON values: what a workflow step records, and what a replay rebuilds from."""
        p = self.prediction
        return {
            "prediction": {
                "label": p.label,
                "confidence": p.confidence,
                "output": p.output,
                "tokens_in": p.tokens_in,
                "tokens_out": p.tokens_out,
                "cost": p.cost,
                "extra": dict(p.extra),
            },
            "model": self.model,
            "version": self.version,
            "route": self.route,
            "latency_ms": self.latency_ms,
            "input_digest": self.input_digest,
            "call_id": self.call_id,
            "attempts": self.attempts,
            "certified_threshold": self.certified_threshold,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> CallResult:
        p = data["prediction"]
        return cls(
            prediction=Prediction(
                label=p.get("label"),
                confidence=p.get("confidence"),
                output=p.get("output"),
                tokens_in=p.get("tokens_in"),
                tokens_out=p.get("tokens_out"),
                cost=p.get("cost"),
                extra=p.get("extra") or {},
            ),
            model=str(data["model"]),
            version=int(data["version"]),
            route=str(data["route"]),
            latency_ms=float(data["latency_ms"]),
            input_digest=str(data["input_digest"]),
            call_id=str(data["call_id"]),
            attempts=int(data.get("attempts", 1)),
            # Recorded before certifications existed: the version had none then.
            certified_threshold=_optional_float(data.get("certified_threshold")),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def rebuild_error(error: Mapping[str, Any], step: str, seq: int) -> AevosError:
    """The error a recorded failed call raises again on replay: the same class by its code
    (any aevos error whose constructor takes the message alone), else StepFailedError."""
    code, message = error.get("code"), str(error.get("message", ""))
    if isinstance(code, str):
        for cls in _error_classes(AevosError):
            if cls.code == code:
                try:
                    return cls(message)
                except TypeError:
                    break
    return StepFailedError(step, seq, str(error.get("type")), message, 1)


def _error_classes(root: type[AevosError]) -> list[type[AevosError]]:
    found: list[type[AevosError]] = []
    pending = [root]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
