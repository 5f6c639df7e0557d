"""The run explorer: runs, a run's timeline and lineage, cancel and resume."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Query, Request
from fastapi.responses import RedirectResponse, Response

from ... import errors as e
from ...records.status import RunStatus
from ..deps import AccessDep
from .page import (
    PAGE_SIZE,
    CheckedViewerDep,
    ViewerDep,
    render,
    router,
)


@router.get("/runs")
def runs(
    request: Request,
    access: AccessDep,
    viewer: ViewerDep,
    status: Annotated[str, Query(max_length=20)] = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    try:
        wanted = [RunStatus(status)] if status else None
    except ValueError:
        raise e.DefinitionError(f"unknown run status {status[:20]!r}") from None
    listed = access.runs.list(viewer.principal, status=wanted, limit=PAGE_SIZE, offset=offset)
    return render(
        request,
        "runs.html",
        runs=listed,
        status=status,
        statuses=[s.value for s in RunStatus],
        offset=offset,
        more=len(listed) == PAGE_SIZE,
        page_size=PAGE_SIZE,
    )


@router.get("/runs/{run_id}")
def run(request: Request, run_id: str, access: AccessDep, viewer: ViewerDep) -> Response:
    info = access.runs.get(viewer.principal, run_id)
    lineage = access.runs.lineage(viewer.principal, run_id)
    start = min((s.started_at for s in lineage.steps), default=info.created_at)
    timeline = [
        {
            "label": f"#{s.seq} {s.name}",
            "start": s.started_at - start,
            "end": s.finished_at - start,
            "status": s.status,
        }
        for s in lineage.steps
    ]
    control = viewer.can("runs:control")
    return render(
        request,
        "run.html",
        run=info,
        lineage=lineage,
        timeline=timeline,
        can_cancel=control and not info.status.terminal,
        can_resume=control and info.status in (RunStatus.FAILED, RunStatus.CANCELLED),
    )


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    access.runs.cancel(viewer.principal, run_id)
    return RedirectResponse(f"/console/runs/{quote(run_id)}", status_code=303)


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    access.runs.resume(viewer.principal, run_id)
    return RedirectResponse(f"/console/runs/{quote(run_id)}", status_code=303)
