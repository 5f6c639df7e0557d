"""``/v1/datasets``: snapshot, list, show and export dataset versions.

A version is named by its digest (64 hex characters, the SHA-256 of its rows). Exports are
streamed a page of rows at a time (CSV) or as one Parquet file when the server has pyarrow
(the ``parquet`` extra); otherwise ``export_format_unavailable`` (422) names the extra.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...records.label import DatasetInfo
from ..deps import AccessDep, PrincipalDep
from ..schemas import NAME_PATTERN

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_DIGEST = Annotated[str, Path(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]
_MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


class Snapshot(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    until: float | None = Field(
        default=None, ge=0, lt=1e11, description="Only labels known at this time (epoch s)."
    )


class DatasetOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    digest: str
    model: str
    rows: int
    runs: int = Field(description="Distinct runs its cases came from.")
    people: int = Field(description="Distinct people (and systems) who labelled them.")
    unbiased: int = Field(description="Rows put to a person independently of confidence.")
    sources: dict[str, int]
    until: float | None
    created_at: float
    created_by: str

    @classmethod
    def of(cls, info: DatasetInfo) -> DatasetOut:
        return cls.model_validate(info.to_dict())


class RowOut(BaseModel):
    case_id: str
    label: str | int | float | bool
    source: str
    unbiased: bool
    run_id: str | None
    actor: str
    labelled_at: float


class DatasetRowsOut(DatasetOut):
    rows_shown: list[RowOut] = Field(description="Rows from `offset`, at most `limit`.")


@router.post("", status_code=201)
def snapshot(access: AccessDep, principal: PrincipalDep, body: Snapshot) -> DatasetOut:
    """Snapshot the current labels of a model's cases (datasets:write); the same rows give
    the version already stored."""
    version = access.datasets.snapshot(principal, body.model, until=body.until)
    return DatasetOut.of(version.info)


@router.get("")
def list_datasets(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[str | None, Query(max_length=200, pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[DatasetOut]:
    """The tenant's versions, newest first (datasets:read)."""
    found = access.datasets.list(principal, model=model, limit=limit, offset=offset)
    return [DatasetOut.of(info) for info in found]


@router.get("/{digest}")
def show(
    access: AccessDep,
    principal: PrincipalDep,
    digest: _DIGEST,
    limit: Annotated[int, Query(ge=0, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> DatasetRowsOut:
    """One version and a page of its rows (export it for all of them)."""
    version = access.datasets.get(principal, digest)
    page = version.rows[offset : offset + limit]
    return DatasetRowsOut(
        **DatasetOut.of(version.info).model_dump(),
        rows_shown=[RowOut.model_validate(r.to_dict()) for r in page],
    )


@router.get(
    "/{digest}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {_MEDIA["csv"]: {}, _MEDIA["parquet"]: {}}}},
)
def export(
    access: AccessDep,
    principal: PrincipalDep,
    digest: _DIGEST,
    format: Literal["csv", "parquet"] = "csv",
    text: Annotated[
        bool, Query(description="Add each case's kept input as a last column (cases:read).")
    ] = False,
    text_field: Annotated[str | None, Query(max_length=200, pattern=NAME_PATTERN)] = None,
) -> StreamingResponse:
    """The version's rows as a file, streamed (datasets:read; audited)."""
    chunks = access.datasets.export(
        principal, digest, format=format, text=text, text_field=text_field
    )
    name = f"dataset-{digest[:12]}.{format}"
    return StreamingResponse(
        chunks,
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
