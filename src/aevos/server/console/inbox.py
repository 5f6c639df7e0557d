"""People's work: the inbox, a task's page, claim, release and decide."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from ... import errors as e
from ...identity import Permission, Principal, Role
from ...records.task import Field, Task, TaskStatus
from ..deps import AccessDep
from .page import (
    PAGE_SIZE,
    CheckedViewerDep,
    Viewer,
    ViewerDep,
    render,
    router,
)

_INBOX_NOTES = {
    "done": "Decision recorded. No more tasks for you: the inbox is empty.",
    "empty": "No more tasks for you: every task you may work is decided or claimed.",
    "released": "Task released: it is back in its queue for anyone to claim.",
}
# A choice field with more choices than this is a searchable list (console.js) over a select.
SEARCHABLE_AFTER = 12
QueueQuery = Annotated[str, Query(max_length=200)]
QueueForm = Annotated[str, Form(max_length=200)]


async def _posted(request: Request) -> FormData:
    """The posted form, parsed once (the CSRF check reads the same one)."""
    return await request.form()


PostedDep = Annotated[FormData, Depends(_posted)]


def _works(principal: Principal, task: Task) -> bool:
    """Whether ``principal`` may claim and decide ``task``. Access decides; this only spares
    people buttons that would be refused."""
    return principal.can(Permission.TASKS_WORK) and (
        principal.role is Role.ADMIN or task.role == principal.role.value
    )


def _link(path: str, **params: str) -> str:
    """``path`` with the non-empty ``params`` as its query."""
    query = {name: value for name, value in params.items() if value}
    return f"{path}?{urlencode(query)}" if query else path


def _task_link(task_id: str, **params: str) -> str:
    return _link(f"/console/tasks/{quote(task_id, safe='')}", **params)


@router.get("/inbox")
def inbox(
    request: Request,
    access: AccessDep,
    viewer: ViewerDep,
    queue: QueueQuery = "",
    note: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    principal = viewer.principal
    only = queue or None
    works = viewer.can("tasks:work")
    mine: list[Task] = []
    if works:
        mine = access.tasks.list(
            principal, status=[TaskStatus.CLAIMED], mine=True, queue=only, limit=PAGE_SIZE
        )
        waiting = access.tasks.list(
            principal, status=[TaskStatus.OPEN], workable=True, queue=only, limit=PAGE_SIZE
        )
    else:
        # Operators and auditors work no tasks themselves: they see every live one.
        live = [TaskStatus.OPEN, TaskStatus.CLAIMED]
        waiting = access.tasks.list(principal, status=live, queue=only, limit=PAGE_SIZE)
    return render(
        request,
        "inbox.html",
        mine=mine,
        waiting=waiting,
        works=works,
        queue=queue,
        queues=[queue] if queue else sorted({t.queue for t in [*mine, *waiting]}),
        note=_INBOX_NOTES.get(note),
        now=time.time(),
        page_size=PAGE_SIZE,
    )


def _go_next(access: AccessDep, viewer: Viewer, queue: str, *, decided: bool) -> Response:
    """To the viewer's next task: their oldest claim, else the next one they may claim; to
    the inbox when there is none."""
    principal = viewer.principal
    only = queue or None
    claimed = access.tasks.list(
        principal, status=[TaskStatus.CLAIMED], mine=True, queue=only, limit=1
    )
    task = claimed[0] if claimed else access.tasks.claim_next(principal, queue=only)
    if task is None:
        target = _link("/console/inbox", queue=queue, note="done" if decided else "empty")
    else:
        target = _task_link(task.task_id, queue=queue, decided="1" if decided else "")
    return RedirectResponse(target, status_code=303)


@router.post("/inbox/next")
def next_task(access: AccessDep, viewer: CheckedViewerDep, queue: QueueForm = "") -> Response:
    return _go_next(access, viewer, queue, decided=False)


def _task_page(
    request: Request,
    viewer: Viewer,
    task: Task,
    status_code: int = 200,
    *,
    queue: str = "",
    values: Mapping[str, Any] | None = None,
    invalid: e.TaskInputError | None = None,
    conflict: str | None = None,
    notice: str | None = None,
) -> Response:
    principal = viewer.principal
    works = _works(principal, task)
    mine = task.status is TaskStatus.CLAIMED and task.assignee == principal.actor
    suggestion = task.suggestion or {}
    names = {f.name for f in task.form.fields}
    return render(
        request,
        "task.html",
        status_code,
        task=task,
        suggestion=suggestion,
        choice_lists=_choice_lists(task, suggestion),
        values=suggestion if values is None else values,
        invalid=invalid,
        stray=invalid if invalid is not None and invalid.field not in names else None,
        conflict=conflict,
        notice=notice,
        queue=queue,
        now=time.time(),
        mine=mine,
        can_decide=works and (task.status is TaskStatus.OPEN or mine),
        can_claim=works and task.status is TaskStatus.OPEN,
        can_release=task.status is TaskStatus.CLAIMED
        and ((mine and works) or viewer.can("tasks:assign")),
    )


@dataclass(frozen=True)
class ChoiceList:
    """A long choice field's options in the order the page offers them: the model's top
    suggestions (with their probability; the suggested value alone when the task has no
    probabilities), then every other choice alphabetically."""

    top: tuple[tuple[str, float | None], ...]
    rest: tuple[str, ...]


def _choice_lists(task: Task, suggestion: Mapping[str, Any]) -> dict[str, ChoiceList]:
    lists: dict[str, ChoiceList] = {}
    for f in task.form.fields:
        if f.kind != "choice" or len(f.choices) <= SEARCHABLE_AFTER:
            continue
        top: list[tuple[str, float | None]] = [
            (r.value, r.probability) for r in task.ranked.get(f.name, ())
        ]
        suggested = suggestion.get(f.name)
        if not top and suggested in f.choices:
            top = [(str(suggested), None)]
        first = {value for value, _ in top}
        rest = sorted((c for c in f.choices if c not in first), key=lambda c: (c.casefold(), c))
        lists[f.name] = ChoiceList(tuple(top), tuple(rest))
    return lists


def _conflict_message(task: Task, actor: str) -> str:
    if task.status is TaskStatus.SUBMITTED:
        who = "you" if task.submitted_by == actor else "someone else"
        return f"This task was already decided by {who}. Nothing was changed."
    if task.status is TaskStatus.CANCELLED:
        return (
            "This task's run was cancelled: there is nothing left to decide. Nothing was changed."
        )
    if task.status is TaskStatus.EXPIRED:
        return "This task expired: nobody decided it in time. Nothing was changed."
    if task.status is TaskStatus.CLAIMED and task.assignee != actor:
        return "Someone else claimed this task first. Nothing was changed."
    return "This task changed while you had it open. Nothing was changed; look again."


def _conflict(
    request: Request, access: AccessDep, viewer: Viewer, task_id: str, queue: str
) -> Response:
    """The task as it is now, with why the viewer's action did not happen."""
    task = access.tasks.get(viewer.principal, task_id)
    message = _conflict_message(task, viewer.principal.actor)
    return _task_page(request, viewer, task, 409, queue=queue, conflict=message)


def _values(fields: tuple[Field, ...], posted: FormData) -> dict[str, Any]:
    """The form's values as the browser posted them, in the shapes ``Field.check`` takes: a
    checkbox is there or not; an empty input is no value, except in a required text field,
    where the form's own check says it is required."""
    values: dict[str, Any] = {}
    for f in fields:
        # Prefixed: a form field may be called "queue" or "csrf_token" like the page's own.
        raw = posted.get(f"field.{f.name}")
        text = raw if isinstance(raw, str) else None
        if f.kind == "boolean":
            values[f.name] = text is not None
        elif f.kind == "text" and f.required:
            values[f.name] = text
        else:
            values[f.name] = text if text is not None and text.strip() else None
    return values


@router.get("/tasks/{task_id}")
def task_page(
    request: Request,
    task_id: str,
    access: AccessDep,
    viewer: ViewerDep,
    queue: QueueQuery = "",
    decided: bool = False,
) -> Response:
    task = access.tasks.get(viewer.principal, task_id)
    notice = "Decision recorded. Here is your next task." if decided else None
    return _task_page(request, viewer, task, queue=queue, notice=notice)


@router.post("/tasks/{task_id}/claim")
def claim_task(
    request: Request,
    task_id: str,
    access: AccessDep,
    viewer: CheckedViewerDep,
    queue: QueueForm = "",
) -> Response:
    try:
        access.tasks.claim(viewer.principal, task_id)
    except e.TaskConflictError:
        return _conflict(request, access, viewer, task_id, queue)
    return RedirectResponse(_task_link(task_id, queue=queue), status_code=303)


@router.post("/tasks/{task_id}/release")
def release_task(
    request: Request,
    task_id: str,
    access: AccessDep,
    viewer: CheckedViewerDep,
    queue: QueueForm = "",
) -> Response:
    try:
        access.tasks.release(viewer.principal, task_id)
    except e.TaskConflictError:
        return _conflict(request, access, viewer, task_id, queue)
    return RedirectResponse(_link("/console/inbox", queue=queue, note="released"), 303)


@router.post("/tasks/{task_id}/submit")
def submit_task(
    request: Request,
    task_id: str,
    access: AccessDep,
    viewer: CheckedViewerDep,
    posted: PostedDep,
) -> Response:
    principal = viewer.principal
    task = access.tasks.get(principal, task_id)
    queue = posted.get("queue")
    queue = queue[:200] if isinstance(queue, str) else ""
    values = _values(task.form.fields, posted)
    try:
        access.tasks.submit(principal, task_id, values)
    except e.TaskInputError as exc:
        return _task_page(request, viewer, task, 422, queue=queue, values=values, invalid=exc)
    except e.TaskConflictError:
        return _conflict(request, access, viewer, task_id, queue)
    return _go_next(access, viewer, queue, decided=True)
