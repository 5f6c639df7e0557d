"""The web console under ``/console``: server-rendered pages (Jinja2 + htmx) for people.

Every page goes through :class:`~aevos.access.Access` with the signed-in principal, exactly
like the HTTP API: the same permission checks, tenant scoping and audit, no second path.

**Sessions.** A person signs in by pasting an API token. The console keeps no session table:
the session is the cookie ``aevos_console``, a Fernet token (AES-128-CBC with HMAC-SHA256,
timestamped) that holds the API token, a random session id and a CSRF secret, encrypted
under a key only the server has. The browser holds ciphertext it can neither read nor
forge. The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page
makes the browser send it), Secure when served over HTTPS, scoped to ``/console``, and
expires after :data:`SESSION_SECONDS` (the timestamp inside is checked, not only the
cookie's max-age). Every request decrypts it and authenticates the API token again through
:meth:`Access.authenticate`, so revoking or expiring a token ends its console sessions at
once. Signing out deletes the cookie and denies its session id in this process until it
would have expired anyway.

Why the encrypted token rather than a session id pointing at server state: nothing to store,
sessions survive restarts and work across processes when they share ``AEVOS_CONSOLE_KEY``
(a key from ``Fernet.generate_key()``), and re-authenticating the token on every request
keeps revocation exact. Without ``AEVOS_CONSOLE_KEY`` each process makes a random key, so a
restart signs everyone out.

**CSRF.** Besides SameSite=Strict, every state-changing request must carry its session's
CSRF secret: forms post it as ``csrf_token``; htmx requests send it as ``X-CSRF-Token``
(the layout puts it into ``hx-headers`` on ``<body>``, so every ``hx-post`` inherits it).
The login form, before any session exists, is protected by a double-submit cookie.

**People's work.** The inbox (``/console/inbox``) lists the tasks the viewer's role may work
and the viewer's own claims, in inbox order. A task page shows the case, the model's
suggestion and confidence and the task's form pre-filled with the suggestion; a submission
goes straight on to the viewer's next task (their oldest claim, else ``claim_next``), so a
reviewer's loop is claim, read, decide, next. The form is checked by the server only
(``novalidate``): the messages beside the fields are the API's, for every browser.

**The dashboard** (``/console/dashboard``) draws :func:`aevos.metrics.dashboard` for the
last hour, day or week with Chart.js; the series travel as JSON in the page, not in script.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from .. import errors as e
from ..identity import Permission, Principal, Role
from ..metrics import Dashboard, ModelMetrics
from ..status import RunStatus
from ..task import Field, Task, TaskStatus
from .deps import AccessDep
from .errors import public_message, status_for

log = logging.getLogger("aevos.server.console")

HERE = Path(__file__).parent
SESSION_COOKIE = "aevos_console"
LOGIN_COOKIE = "aevos_console_login"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600
KEY_ENV = "AEVOS_CONSOLE_KEY"
PAGE_SIZE = 50
# No inline script or style anywhere: the pages work under this policy.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_SIGN_IN_REASONS = {
    "expired": "Your session ended or its token is no longer valid. Sign in again.",
    "signed-out": "You are signed out.",
}


# -- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    token: str = field(repr=False)
    sid: str
    csrf: str = field(repr=False)
    issued_at: float


class Sessions:
    """Seals sessions into cookies and opens them again (see the module docstring)."""

    def __init__(self, key: bytes | None = None, *, ttl: int = SESSION_SECONDS) -> None:
        self._fernet = Fernet(key or Fernet.generate_key())
        self.ttl = ttl
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Sessions:
        text = (os.environ if environ is None else environ).get(KEY_ENV)
        if not text:
            return cls()
        try:
            return cls(text.strip().encode())
        except ValueError:
            raise e.DefinitionError(
                f"{KEY_ENV} must be a Fernet key: 32 bytes of URL-safe base64, from "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`"
            ) from None

    def issue(self, token: str) -> tuple[Session, str]:
        now = int(time.time())  # Fernet timestamps are whole seconds
        session = Session(token, secrets.token_urlsafe(16), secrets.token_urlsafe(32), now)
        data = {"t": session.token, "s": session.sid, "c": session.csrf}
        sealed = self._fernet.encrypt_at_time(json.dumps(data).encode(), now)
        return session, sealed.decode()

    def open(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 4096:
            return None
        try:
            sealed = cookie.encode()
            data = json.loads(self._fernet.decrypt(sealed, ttl=self.ttl))
            issued_at = float(self._fernet.extract_timestamp(sealed))
            session = Session(str(data["t"]), str(data["s"]), str(data["c"]), issued_at)
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        with self._lock:
            if session.sid in self._ended:
                return None
        return session

    def end(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            self._ended = {sid: until for sid, until in self._ended.items() if until > now}
            self._ended[session.sid] = session.issued_at + self.ttl


def install(api: FastAPI, sessions: Sessions | None = None) -> None:
    """Serve the console under ``/console`` (and its static files) from ``api``."""
    api.state.console_sessions = Sessions.from_env() if sessions is None else sessions
    api.include_router(router)
    api.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


# -- rendering -------------------------------------------------------------------------------


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _span(seconds: float) -> str:
    """A duration as people say it: "40 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _ago(value: float | None) -> str:
    return "-" if value is None else _span(time.time() - value)


def _number(value: Any) -> Any:
    """A form value as an input shows it: 120.0 as "120"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _preview(case: Any, length: int = 100) -> str:
    """A line of a task's case for the inbox: the case if it is text, else its first text
    value at the top level (what a reviewer most likely reads first)."""
    if isinstance(case, Mapping):
        case = next((v for v in case.values() if isinstance(v, str) and v.strip()), "")
    if not isinstance(case, str):
        return ""
    line = " ".join(case.split())
    return line if len(line) <= length else line[: length - 1] + "…"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    ts=_ts,
    seconds=_seconds,
    pretty=_pretty,
    ago=_ago,
    span=_span,
    number=_number,
    preview=_preview,
)


@dataclass(frozen=True)
class Viewer:
    """The signed-in principal and the session that carries it."""

    principal: Principal
    session: Session

    def can(self, permission: str) -> bool:
        return self.principal.can(Permission(permission))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page(
    request: Request,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": getattr(request.state, "viewer", None), "status_code": status_code} | context,
        status_code=status_code,
        headers=_HEADERS,
    )


def _to_login(request: Request, reason: str | None) -> Response:
    target = "/console/login"
    if reason is not None:
        target += f"?reason={reason}"
    elif request.method == "GET":
        target += f"?next={quote(request.url.path)}"
    response: Response
    if request.headers.get("hx-request"):
        # htmx would swap a redirected login page into the current one: navigate instead.
        response = Response(status_code=401, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if SESSION_COOKIE in request.cookies:
        # Only a cookie the browser sent: a cross-site request (which carries none) must
        # not sign its victim out.
        response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


class _SignIn(Exception):
    """No valid session: the route answers with a way to the login page."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason


class _ConsoleRoute(APIRoute):
    """Answers errors with pages (the API's handlers answer JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except _SignIn as exc:
                return _to_login(request, exc.reason)
            except e.AevosError as exc:
                return _page(request, "error.html", status_for(exc), message=public_message(exc))
            except RequestValidationError:
                return _page(request, "error.html", 422, message="invalid request parameters")
            except HTTPException:
                raise
            except Exception as exc:
                # The type only: the text of an arbitrary exception may hold input data.
                log.error("unhandled %s in a console request", type(exc).__name__)
                return _page(request, "error.html", 500, message="internal error")

        return handle


router = APIRouter(prefix="/console", include_in_schema=False, route_class=_ConsoleRoute)


# -- who is asking ---------------------------------------------------------------------------


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.console_sessions
    return sessions


def _viewer(request: Request, access: AccessDep) -> Viewer:
    session = _sessions(request).open(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _SignIn("expired" if SESSION_COOKIE in request.cookies else None)
    try:
        principal = access.authenticate(session.token)  # revoked or expired: audited, 401
    except e.AuthenticationError:
        raise _SignIn("expired") from None
    viewer = Viewer(principal, session)
    request.state.viewer = viewer
    return viewer


async def _checked_viewer(request: Request, viewer: Annotated[Viewer, Depends(_viewer)]) -> Viewer:
    """The viewer of a state-changing request, which must carry its session's CSRF secret."""
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        value = (await request.form()).get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), viewer.session.csrf.encode()):
        raise e.AuthorizationError("the form's CSRF token is missing or wrong; reload the page")
    return viewer


ViewerDep = Annotated[Viewer, Depends(_viewer)]
CheckedViewerDep = Annotated[Viewer, Depends(_checked_viewer)]


def _safe_next(target: str) -> str:
    # Only our own pages: never an absolute or protocol-relative URL (an open redirect).
    ok = target.startswith("/console/") and not target.startswith("/console/login")
    return target if ok and "//" not in target and "\\" not in target else "/console/runs"


# -- signing in and out ----------------------------------------------------------------------


def _login_page(request: Request, status_code: int, error: str | None, next_: str) -> Response:
    nonce = secrets.token_urlsafe(32)
    reason = request.query_params.get("reason", "")
    response = _page(
        request,
        "login.html",
        status_code,
        csrf=nonce,
        error=error,
        notice=_SIGN_IN_REASONS.get(reason),
        next=_safe_next(next_),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_SECONDS,
        path="/console/login",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("")
def home() -> Response:
    return RedirectResponse("/console/runs", status_code=303)


@router.get("/login")
def login_form(request: Request, next_: Annotated[str, Query(alias="next")] = "") -> Response:
    return _login_page(request, 200, None, next_)


@router.post("/login")
def login(
    request: Request,
    access: AccessDep,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next_: Annotated[str, Form(alias="next", max_length=2000)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        return _login_page(request, 403, "The sign-in form expired. Try again.", next_)
    try:
        access.authenticate(token.strip())  # a refusal is audited
    except e.AuthenticationError:
        return _login_page(request, 401, "That token was not accepted.", next_)
    _, cookie = _sessions(request).issue(token.strip())
    response = RedirectResponse(_safe_next(next_), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=_sessions(request).ttl,
        path="/console",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
def logout(request: Request, viewer: CheckedViewerDep) -> Response:
    _sessions(request).end(viewer.session)
    response = RedirectResponse("/console/login?reason=signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# -- runs ------------------------------------------------------------------------------------


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
    listed = access.list_runs(viewer.principal, status=wanted, limit=PAGE_SIZE, offset=offset)
    return _page(
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
    info = access.get_run(viewer.principal, run_id)
    lineage = access.lineage(viewer.principal, run_id)
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
    return _page(
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
    access.cancel_run(viewer.principal, run_id)
    return RedirectResponse(f"/console/runs/{quote(run_id)}", status_code=303)


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, access: AccessDep, viewer: CheckedViewerDep) -> Response:
    access.resume_run(viewer.principal, run_id)
    return RedirectResponse(f"/console/runs/{quote(run_id)}", status_code=303)


# -- models ----------------------------------------------------------------------------------


@router.get("/models")
def models(request: Request, access: AccessDep, viewer: ViewerDep) -> Response:
    return _page(request, "models.html", models=access.models(viewer.principal))


Window = Literal["hour", "day", "week"]
# name -> (title, seconds, buckets, strftime of a bucket's start)
_WINDOWS: dict[str, tuple[str, float, int, str]] = {
    "hour": ("Last hour", 3600.0, 30, "%H:%M"),
    "day": ("Last day", 86400.0, 48, "%H:%M"),
    "week": ("Last week", 7 * 86400.0, 56, "%a %H:%M"),
}


@router.get("/models/{name}")
def model(
    request: Request, name: str, access: AccessDep, viewer: ViewerDep, window: Window = "day"
) -> Response:
    overview = access.model(viewer.principal, name)
    route, breakers = access.model_rollout(viewer.principal, name)
    title, seconds, buckets, label_format = _WINDOWS[window]
    width = seconds / buckets
    until = (time.time() // width + 1) * width
    live = access.model_metrics(
        viewer.principal, name, since=until - seconds, until=until, buckets=buckets
    )
    pointing: dict[int, list[str]] = {}
    for alias in overview.aliases:
        pointing.setdefault(alias.version, []).append(alias.alias)
    me = viewer.principal
    return _page(
        request,
        "model.html",
        model=overview,
        approvals=access.approvals(me, model=name, limit=20),
        can_decide=viewer.can("models:promote"),
        # Four eyes: Access refuses the requester's own approval; the page offers them only
        # the withdrawal.
        asked_by_viewer={
            a.approval_id
            for a in access.approvals(me, status="PENDING", model=name, limit=20)
            if me.token_id == a.requester_token or me.name == a.requester_name
        },
        versions=list(reversed(overview.versions)),
        pointing=pointing,
        route=route,
        breakers=breakers,
        window=window,
        windows=[(key, spec[0]) for key, spec in _WINDOWS.items()],
        window_title=title,
        live=_model_series(live, label_format),
    )


ReasonForm = Annotated[str, Form(max_length=2000)]


@router.post("/approvals/{approval_id}/approve")
def approve(
    approval_id: str, access: AccessDep, viewer: CheckedViewerDep, reason: ReasonForm = ""
) -> Response:
    approval, _ = access.approve(viewer.principal, approval_id, reason=reason or None)
    return RedirectResponse(f"/console/models/{quote(approval.model)}#approvals", 303)


@router.post("/approvals/{approval_id}/reject")
def reject(
    approval_id: str, access: AccessDep, viewer: CheckedViewerDep, reason: ReasonForm = ""
) -> Response:
    approval = access.reject(viewer.principal, approval_id, reason=reason or None)
    return RedirectResponse(f"/console/models/{quote(approval.model)}#approvals", 303)


# -- the inbox -------------------------------------------------------------------------------

_INBOX_NOTES = {
    "done": "Decision recorded. No more tasks for you: the inbox is empty.",
    "empty": "No more tasks for you: every task you may work is decided or claimed.",
    "released": "Task released: it is back in its queue for anyone to claim.",
}
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
        mine = access.list_tasks(
            principal, status=[TaskStatus.CLAIMED], mine=True, queue=only, limit=PAGE_SIZE
        )
        waiting = access.list_tasks(
            principal, status=[TaskStatus.OPEN], workable=True, queue=only, limit=PAGE_SIZE
        )
    else:
        # Operators and auditors work no tasks themselves: they see every live one.
        live = [TaskStatus.OPEN, TaskStatus.CLAIMED]
        waiting = access.list_tasks(principal, status=live, queue=only, limit=PAGE_SIZE)
    return _page(
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
    claimed = access.list_tasks(
        principal, status=[TaskStatus.CLAIMED], mine=True, queue=only, limit=1
    )
    task = claimed[0] if claimed else access.claim_next_task(principal, queue=only)
    if task is None:
        target = _link("/console/inbox", queue=queue, note="done" if decided else "empty")
    else:
        target = _task_link(task.task_id, queue=queue, decided="1" if decided else "")
    return RedirectResponse(target, status_code=303)


@router.post("/inbox/next")
def next_task(access: AccessDep, viewer: CheckedViewerDep, queue: QueueForm = "") -> Response:
    return _go_next(access, viewer, queue, decided=False)


# -- a task ----------------------------------------------------------------------------------


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
    return _page(
        request,
        "task.html",
        status_code,
        task=task,
        suggestion=suggestion,
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
    task = access.get_task(viewer.principal, task_id)
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
    task = access.get_task(viewer.principal, task_id)
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
        access.claim_task(viewer.principal, task_id)
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
        access.release_task(viewer.principal, task_id)
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
    task = access.get_task(principal, task_id)
    queue = posted.get("queue")
    queue = queue[:200] if isinstance(queue, str) else ""
    values = _values(task.form.fields, posted)
    try:
        access.submit_task(principal, task_id, values)
    except e.TaskInputError as exc:
        return _task_page(request, viewer, task, 422, queue=queue, values=values, invalid=exc)
    except e.TaskConflictError:
        return _conflict(request, access, viewer, task_id, queue)
    return _go_next(access, viewer, queue, decided=True)


# -- the dashboard ---------------------------------------------------------------------------


def _model_series(live: ModelMetrics, label_format: str) -> dict[str, Any]:
    """Per version, one list per chart (null: no data in that bucket), for console.js."""
    versions = live.versions
    return {
        "labels": [datetime.fromtimestamp(t, tz=UTC).strftime(label_format) for t in live.starts],
        "versions": sorted(versions),
        "calls": {ref: [b.calls for b in series] for ref, series in versions.items()},
        "p95": {ref: [b.latency_p95_ms for b in series] for ref, series in versions.items()},
        "errors": {ref: [b.error_rate for b in series] for ref, series in versions.items()},
        "confidence": {
            ref: [b.mean_confidence for b in series] for ref, series in versions.items()
        },
        "overrides": {ref: [b.override_rate for b in series] for ref, series in versions.items()},
        "totals": {
            ref: {
                "calls": sum(b.calls for b in series),
                "errors": sum(b.errors for b in series),
                "decisions": sum(b.decisions for b in series),
                "overrides": sum(b.overrides for b in series),
            }
            for ref, series in versions.items()
        },
    }


def _series(board: Dashboard, label_format: str) -> dict[str, Any]:
    """What console.js draws, one list per line, one value per bucket (null: no data)."""
    buckets = board.buckets
    models = sorted({model for b in buckets for model in b.drift})
    return {
        "labels": [datetime.fromtimestamp(b.start, tz=UTC).strftime(label_format) for b in buckets],
        "automated": [b.automated for b in buckets],
        "asked": [b.throughput - b.automated for b in buckets],
        "p50": [b.latency_p50 for b in buckets],
        "p95": [b.latency_p95 for b in buckets],
        "p99": [b.latency_p99 for b in buckets],
        "automation_rate": [b.automation_rate for b in buckets],
        "override_rate": [b.override_rate for b in buckets],
        "feedback": [b.feedback for b in buckets],
        "cost_per_decision": [b.cost_per_decision for b in buckets],
        "drift": {model: [b.drift.get(model) for b in buckets] for model in models},
    }


def _totals(board: Dashboard) -> dict[str, Any]:
    """The whole window's figures, for the tiles above the charts."""
    buckets = board.buckets
    finished = sum(b.throughput for b in buckets)
    decisions = sum(b.feedback for b in buckets)
    latest: dict[str, float] = {}
    for b in buckets:
        latest.update({model: psi for model, psi in b.drift.items() if psi is not None})
    worst = max(latest.items(), key=lambda item: item[1], default=None)
    return {
        "finished": finished,
        "automation_rate": sum(b.automated for b in buckets) / finished if finished else None,
        "decisions": decisions,
        "override_rate": sum(b.overrides for b in buckets) / decisions if decisions else None,
        "cost_per_decision": sum(b.cost for b in buckets) / finished if finished else None,
        "model_calls": sum(b.model_calls for b in buckets),
        "drift": worst,
    }


@router.get("/dashboard")
def dashboard(
    request: Request, access: AccessDep, viewer: ViewerDep, window: Window = "day"
) -> Response:
    title, seconds, buckets, label_format = _WINDOWS[window]
    width = seconds / buckets
    # Buckets on round boundaries, so the same minute always falls in the same bucket.
    until = (time.time() // width + 1) * width
    board = access.dashboard(viewer.principal, since=until - seconds, until=until, buckets=buckets)
    return _page(
        request,
        "dashboard.html",
        window=window,
        windows=[(name, spec[0]) for name, spec in _WINDOWS.items()],
        title=title,
        width=width,
        series=_series(board, label_format),
        totals=_totals(board),
    )
