"""What every console page shares: rendering, the signed-in viewer, errors as pages."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.types import Scope

from ... import errors as e
from ...identity import Permission, Principal
from ..deps import AccessDep
from ..errors import error_response as api_error_response
from ..errors import public_message, status_for
from .session import SESSION_COOKIE, Session, Sessions

log = logging.getLogger("aevos.server.console")

HERE = Path(__file__).parent.parent  # server/: templates/ and static/
PAGE_SIZE = 50
# No inline script or style anywhere: the pages work under this policy.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


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


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def render(
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
        headers=HEADERS,
    )


async def error_response(scope: Scope, error: e.AevosError) -> Response:
    """A refusal made before any route ran (a body too large): under ``/console`` a page,
    elsewhere the API's JSON."""
    if not scope["path"].startswith("/console"):
        return api_error_response(error)
    return render(Request(scope), "error.html", status_for(error), message=public_message(error))


def to_login(request: Request, reason: str | None) -> Response:
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


class SignIn(Exception):
    """No valid session: the route answers with a way to the login page."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason


class ConsoleRoute(APIRoute):
    """Answers errors with pages (the API's handlers answer JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignIn as exc:
                return to_login(request, exc.reason)
            except e.AevosError as exc:
                return render(request, "error.html", status_for(exc), message=public_message(exc))
            except RequestValidationError:
                return render(request, "error.html", 422, message="invalid request parameters")
            except HTTPException:
                raise
            except Exception as exc:
                # The type only: the text of an arbitrary exception may hold input data.
                log.error("unhandled %s in a console request", type(exc).__name__)
                return render(request, "error.html", 500, message="internal error")

        return handle


router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.console_sessions
    return sessions


def current_viewer(request: Request, access: AccessDep) -> Viewer:
    session = sessions_of(request).open(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignIn("expired" if SESSION_COOKIE in request.cookies else None)
    try:
        principal = access.authenticate(session.token)  # revoked or expired: audited, 401
    except e.AuthenticationError:
        raise SignIn("expired") from None
    viewer = Viewer(principal, session)
    request.state.viewer = viewer
    return viewer


async def checked_viewer(
    request: Request, viewer: Annotated[Viewer, Depends(current_viewer)]
) -> Viewer:
    """The viewer of a state-changing request, which must carry its session's CSRF secret."""
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        value = (await request.form()).get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), viewer.session.csrf.encode()):
        raise e.AuthorizationError("the form's CSRF token is missing or wrong; reload the page")
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
CheckedViewerDep = Annotated[Viewer, Depends(checked_viewer)]


def safe_next(target: str) -> str:
    # Only our own pages: never an absolute or protocol-relative URL (an open redirect).
    ok = target.startswith("/console/") and not target.startswith("/console/login")
    # Without one, /console sends the viewer to their landing page (by role).
    return target if ok and "//" not in target and "\\" not in target else "/console"


Window = Literal["hour", "day", "week"]
# name -> (title, seconds, buckets, strftime of a bucket's start)
WINDOWS: dict[str, tuple[str, float, int, str]] = {
    "hour": ("Last hour", 3600.0, 30, "%H:%M"),
    "day": ("Last day", 86400.0, 48, "%H:%M"),
    "week": ("Last week", 7 * 86400.0, 56, "%a %H:%M"),
}
