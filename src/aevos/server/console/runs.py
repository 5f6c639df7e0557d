"""The run explorer: runs, a run's timeline and lineage, cancel and resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from ... import errors as e
from ...records.status import RunStatus
from ..deps import AccessDep
from ..summaries import encode
from .page import (
    HEADERS,
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


@dataclass(frozen=True)
class Shown:
    """A value as the run page shows it: whole up to the listing limit, else its start
    and a link to the whole value (what the API's summaries do for listings)."""

    text: str  # pretty JSON, or its first ``limit`` characters
    preview: str  # one line of it, for a table cell
    size: int  # bytes of its JSON
    whole: bool
    href: str

    @classmethod
    def of(cls, value: Any, href: str, limit: int) -> Shown:
        size = len(encode(value))
        pretty = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
        line = json.dumps(value, ensure_ascii=False)
        preview = line if len(line) <= 60 else line[:59] + "…"
        if size <= limit:
            return cls(pretty, preview, size, True, href)
        return cls(pretty[:limit] + "\n…", preview, size, False, href)


def _limit(request: Request) -> int:
    limit: int = request.app.state.listed_value_bytes
    return limit


@router.get("/runs/{run_id}")
def run(request: Request, run_id: str, access: AccessDep, viewer: ViewerDep) -> Response:
    info = access.runs.get(viewer.principal, run_id)
    lineage = access.runs.lineage(viewer.principal, run_id)
    # The steps as GET /v1/runs/{id}/steps shows them to this principal: the same read.
    base = f"/console/runs/{quote(run_id, safe='')}"
    limit = _limit(request)
    steps = [
        (step, Shown.of(step.output, f"{base}/steps/{step.seq}/output", limit))
        for step in access.runs.steps(viewer.principal, run_id)
    ]
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
        steps=steps,
        input=Shown.of(info.input, f"{base}/input", limit),
        output=Shown.of(info.output, f"{base}/output", limit),
        lineage=lineage,
        timeline=timeline,
        can_cancel=control and not info.status.terminal,
        can_resume=control and info.status in (RunStatus.FAILED, RunStatus.CANCELLED),
    )


def _value(value: Any) -> Response:
    # JSON for the browser to show; never run as a page (nosniff, no-store, a strict CSP).
    return Response(encode(value), media_type="application/json", headers=HEADERS)


@router.get("/runs/{run_id}/input")
def run_input(run_id: str, access: AccessDep, viewer: ViewerDep) -> Response:
    return _value(access.runs.get(viewer.principal, run_id).input)


@router.get("/runs/{run_id}/output")
def run_output(run_id: str, access: AccessDep, viewer: ViewerDep) -> Response:
    return _value(access.runs.get(viewer.principal, run_id).output)


@router.get("/runs/{run_id}/steps/{seq}/output")
def step_output(
    request: Request,
    run_id: str,
    seq: Annotated[int, Path(ge=0, le=2**31 - 1)],
    access: AccessDep,
    viewer: ViewerDep,
) -> Response:
    for step in access.runs.steps(viewer.principal, run_id):
        if step.seq == seq:
            return _value(step.output)
    return render(request, "error.html", 404, message=f"run {run_id} has no step at {seq}")


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    access.runs.cancel(viewer.principal, run_id)
    return RedirectResponse(f"/console/runs/{quote(run_id)}", status_code=303)


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    access.runs.resume(viewer.principal, run_id)
    return RedirectResponse(f"/console/runs/{quote(run_id)}", status_code=303)
