"""``/v1/audit``: query, verify and export the caller's tenant's audit chain."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from ..deps import AccessDep, PrincipalDep
from ..schemas import AuditRecordOut, VerifyOut

router = APIRouter(prefix="/v1/audit", tags=["audit"])

_MAX_SEQ = 2**63 - 1  # the seq column is a 64-bit integer


class JsonLinesResponse(PlainTextResponse):
    media_type = "application/x-ndjson"


@router.get("")
def query(
    access: AccessDep,
    principal: PrincipalDep,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    after_seq: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AuditRecordOut]:
    records = access.audit.query(
        principal, run_id=run_id, action=action, after_seq=after_seq, limit=limit
    )
    return [AuditRecordOut(**{**r.to_dict(), "data": dict(r.data)}) for r in records]


@router.post("/verify")
def verify(access: AccessDep, principal: PrincipalDep) -> VerifyOut:
    report = access.audit.verify(principal)
    problems = [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in report.problems]
    return VerifyOut(ok=report.ok, checked=report.checked, problems=problems)


@router.get("/export", response_class=JsonLinesResponse)
def export(
    access: AccessDep,
    principal: PrincipalDep,
    after_seq: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
) -> JsonLinesResponse:
    """The chain as JSON Lines (verifiable offline with ``aevos audit verify-file``)."""
    out = io.StringIO()
    access.audit.export(principal, out, after_seq=after_seq)
    return JsonLinesResponse(out.getvalue())
