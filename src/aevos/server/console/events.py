"""Dead letters in the console: events that failed validation or mapping, with their reason;
replay one, or the ones ticked, through the same :class:`~aevos.access.Access` call as
``POST /v1/events/dead-letters/replay``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from ... import errors as e
from ...events.intake import DeadLetterStatus
from ..deps import AccessDep
from .page import PAGE_SIZE, CheckedViewerDep, ViewerDep, render, router

MAX_TICKED = 1000


@router.get("/dead-letters")
def dead_letters(
    request: Request,
    access: AccessDep,
    viewer: ViewerDep,
    status: Annotated[str, Query(max_length=20)] = "DEAD",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    return _page(request, access, viewer, status, offset, outcomes=None)


def _page(
    request: Request,
    access: AccessDep,
    viewer: ViewerDep,
    status: str,
    offset: int,
    outcomes: list[object] | None,
) -> Response:
    try:
        wanted = [DeadLetterStatus(status)] if status else None
    except ValueError:
        raise e.DefinitionError(f"unknown dead letter status {status[:20]!r}") from None
    letters = access.events.dead_letters(
        viewer.principal, status=wanted, limit=PAGE_SIZE, offset=offset
    )
    return render(
        request,
        "dead_letters.html",
        letters=letters,
        status=status,
        statuses=[s.value for s in DeadLetterStatus],
        offset=offset,
        more=len(letters) == PAGE_SIZE,
        page_size=PAGE_SIZE,
        can_replay=viewer.can("runs:control"),
        outcomes=outcomes,
    )


@router.post("/dead-letters/replay")
async def replay(request: Request, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    form = await request.form()
    ids: list[int] = []
    for value in form.getlist("id")[:MAX_TICKED]:
        if not isinstance(value, str) or not value.isdigit() or len(value) > 12:
            raise e.DefinitionError("a dead letter id must be a positive integer")
        ids.append(int(value))
    if not ids:
        raise e.DefinitionError("tick at least one dead letter to replay")
    outcomes = access.events.replay(viewer.principal, ids)
    return _page(request, access, viewer, "DEAD", 0, outcomes=list(outcomes))
