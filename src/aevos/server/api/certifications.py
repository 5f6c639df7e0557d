"""``/v1/models/{name}/versions/{version}/certification[s]``: certified automation thresholds.

A version's certification is what the retraining workflow recorded (``app.certifications``):
the threshold at or above which its answers may be automated (precision >= target with
probability >= 1 - delta, Learn-then-Test), the figures it was decided on, and the digest
of the dataset version it used. Read-only here, with ``models:read``, tenant scoped.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ...records.certification import CertificationRecord
from ..deps import AccessDep, PrincipalDep
from .models import NameParam, VersionParam

router = APIRouter(prefix="/v1/models", tags=["models"])


class Certification(BaseModel):
    """One certification of a model version."""

    id: int
    model: str
    version: int
    certified: bool = Field(description="False: nothing was certified, nothing is automated.")
    threshold: float | None = Field(
        description="Answers at or above this confidence may be automated; null: none may."
    )
    target: float = Field(description="The precision certified.")
    delta: float = Field(description="The risk: precision >= target with probability 1 - delta.")
    method: str = Field(description="The p-value: binomial or hoeffding-bentkus.")
    n: int = Field(description="Labelled cases certification used.")
    n_above: int = Field(description="Of those, the cases at or above the threshold.")
    errors: int = Field(description="Errors among the cases at or above the threshold.")
    p_value: float | None
    dataset: str | None = Field(description="The digest of the dataset version it used.")
    reason: str | None = Field(description="Why nothing was certified, when nothing was.")
    evidence: dict[str, Any]
    created_by: str
    created_at: float

    @classmethod
    def of(cls, record: CertificationRecord) -> Certification:
        return cls(
            id=record.id,
            model=record.model,
            version=record.version,
            certified=record.certified,
            threshold=record.threshold,
            target=record.target,
            delta=record.delta,
            method=record.method,
            n=record.n,
            n_above=record.n_above,
            errors=record.errors,
            p_value=record.p_value,
            dataset=record.dataset,
            reason=record.reason,
            evidence=dict(record.evidence),
            created_by=record.created_by,
            created_at=record.created_at,
        )


class VersionCertification(BaseModel):
    """The certification in force for a version, if any."""

    model: str
    version: int
    certified: bool = Field(
        description="Whether the version has a certified threshold; without one nothing it "
        "answers is automated."
    )
    threshold: float | None
    certification: Certification | None = Field(description="null: never certified.")


@router.get("/{name}/versions/{version}/certification")
def get_certification(
    name: NameParam, version: VersionParam, access: AccessDep, principal: PrincipalDep
) -> VersionCertification:
    """The certification in force for the version (its latest)."""
    record = access.certifications.latest(principal, name, version)
    return VersionCertification(
        model=name,
        version=version,
        certified=record is not None and record.certified,
        threshold=None if record is None else record.threshold,
        certification=None if record is None else Certification.of(record),
    )


@router.get("/{name}/versions/{version}/certifications")
def list_certifications(
    name: NameParam,
    version: VersionParam,
    access: AccessDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Certification]:
    """Every certification of the version, newest first (the first is the one in force)."""
    return [
        Certification.of(record)
        for record in access.certifications.history(principal, name, version, limit=limit)
    ]
