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
from typing import Annotated, Any
from urllib.parse import quote

from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from .. import errors as e
from ..identity import Permission, Principal
from ..status import RunStatus
from .deps import AccessDep
from .errors import status_for

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


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(ts=_ts, seconds=_seconds, pretty=_pretty)


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
                return _page(request, "error.html", status_for(exc), message=exc.message)
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


@router.get("/models/{name}")
def model(request: Request, name: str, access: AccessDep, viewer: ViewerDep) -> Response:
    overview = access.model(viewer.principal, name)
    route, breakers = access.model_rollout(viewer.principal, name)
    pointing: dict[int, list[str]] = {}
    for alias in overview.aliases:
        pointing.setdefault(alias.version, []).append(alias.alias)
    return _page(
        request,
        "model.html",
        model=overview,
        versions=list(reversed(overview.versions)),
        pointing=pointing,
        route=route,
        breakers=breakers,
    )
