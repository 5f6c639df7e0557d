"""``/v1/cases``: kept cases over HTTP.

List the token's tenant's cases (lineage and digests, no inputs; ``cases:read``), read one
with its input as kept, tokenised (``?reveal=true`` resolves the tokens and needs
``pii:reveal`` too, audited), and forget a run's or a data subject's cases
(``cases:delete``, audited ``case.forgotten``). An unknown case is a 404 ``case_not_found``;
a bad filter a 422.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ...cases import MAX_LIMIT, KeptCase
from ..deps import AccessDep, PrincipalDep

router = APIRouter(prefix="/v1/cases", tags=["cases"])


class CaseOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    case_id: str = Field(description="A model call's call_id, or task:<task_id>.")
    kind: Literal["model_call", "task"]
    model: str | None
    version: int | None
    run_id: str | None
    seq: int | None
    call_id: str | None
    task_id: str | None
    input_digest: str = Field(description="SHA-256 of the kept input (the audit's digest).")
    model_input_digest: str | None = Field(
        description="SHA-256 of what the model was given: the model.called record's "
        "input_sha256 (differs from input_digest only when the data policy changed it)."
    )
    created_at: float
    expires_at: float | None = Field(description="When retention ends; null: never.")

    @classmethod
    def of(cls, case: KeptCase) -> CaseOut:
        data = case.to_dict(include_input=False)
        del data["tenant"]
        return cls(**data)


class CaseDetail(CaseOut):
    input: Any = Field(description="The input as kept: tokenised by the data policy.")
    input_encoding: Literal["json", "base64"] = Field(
        description="base64 when the input was raw bytes (an image, a document)."
    )

    @classmethod
    def detail(cls, case: KeptCase) -> CaseDetail:
        base = CaseOut.of(case).model_dump()
        if isinstance(case.input, bytes):
            return cls(**base, input=base64.b64encode(case.input).decode(), input_encoding="base64")
        return cls(**base, input=case.input, input_encoding="json")


class Forgotten(BaseModel):
    deleted: int = Field(description="How many kept cases were deleted.")


@router.get("")
def list_cases(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    run_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[CaseOut]:
    """Kept cases of the token's tenant, oldest first, without their inputs."""
    cases = access.cases.list(
        principal, model=model, run_id=run_id, since=since, until=until, limit=limit
    )
    return [CaseOut.of(case) for case in cases]


@router.get("/{case_id}")
def get_case(
    case_id: Annotated[str, Path(min_length=1, max_length=230)],
    access: AccessDep,
    principal: PrincipalDep,
    reveal: Annotated[
        bool,
        Query(
            description="Replace the input's PII tokens by the original values; needs "
            "pii:reveal (403 without), and is audited."
        ),
    ] = False,
) -> CaseDetail:
    """One kept case with its input."""
    return CaseDetail.detail(access.cases.get(principal, case_id, reveal=reveal))


@router.delete("")
def forget_cases(
    access: AccessDep,
    principal: PrincipalDep,
    run_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    subject: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="A data subject: a vault token (tok_...), as in tokenised text.",
        ),
    ] = None,
) -> Forgotten:
    """Delete the tenant's cases of one run, or every case that names a data subject."""
    return Forgotten(deleted=access.cases.forget(principal, run_id=run_id, subject=subject))
