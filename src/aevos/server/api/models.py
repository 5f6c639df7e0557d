"""``/v1/models``: governed model calls from outside workflows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..deps import AccessDep, PrincipalDep

router = APIRouter(prefix="/v1/models", tags=["models"])


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any
    key: str | None = Field(
        default=None, max_length=200, description="Makes a canary split sticky for this key."
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    route: str
    label: Any
    confidence: float | None
    output: Any
    input_digest: str
    latency_ms: float


@router.post("/{name}/predict")
def predict(
    name: str, body: PredictRequest, access: AccessDep, principal: PrincipalDep
) -> PredictResponse:
    """Call the model (its tenant's routes, budgets, rate limits and breakers apply)."""
    result = access.predict(principal, name, body.input, key=body.key)
    return PredictResponse(
        model=name,
        version=result.version_ref,
        route=result.route,
        label=result.label,
        confidence=result.confidence,
        output=result.output,
        input_digest=result.input_digest,
        latency_ms=result.latency_ms,
    )
