"""Signing in with an API token, and out."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from ... import errors as e
from ..deps import AccessDep
from .page import (
    CheckedViewerDep,
    Viewer,
    ViewerDep,
    is_secure,
    render,
    router,
    safe_next,
    sessions_of,
)
from .session import LOGIN_COOKIE, LOGIN_SECONDS, SESSION_COOKIE

_SIGN_IN_REASONS = {
    "expired": "Your session ended or its token is no longer valid. Sign in again.",
    "signed-out": "You are signed out.",
}


def _login_page(request: Request, status_code: int, error: str | None, next_: str) -> Response:
    nonce = secrets.token_urlsafe(32)
    reason = request.query_params.get("reason", "")
    response = render(
        request,
        "login.html",
        status_code,
        csrf=nonce,
        error=error,
        notice=_SIGN_IN_REASONS.get(reason),
        next=safe_next(next_),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_SECONDS,
        path="/console/login",
        secure=is_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


def landing(viewer: Viewer) -> str:
    """Where a viewer starts: people who work tasks and do not operate runs (reviewers) in
    their inbox, everyone else among the runs."""
    if viewer.can("tasks:work") and not viewer.can("runs:control"):
        return "/console/inbox"
    if viewer.can("runs:read"):
        return "/console/runs"
    return "/console/inbox" if viewer.can("tasks:read") else "/console/models"


@router.get("")
def home(viewer: ViewerDep) -> Response:
    return RedirectResponse(landing(viewer), status_code=303)


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
    _, cookie = sessions_of(request).issue(token.strip())
    response = RedirectResponse(safe_next(next_), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=sessions_of(request).ttl,
        path="/console",
        secure=is_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
def logout(request: Request, viewer: CheckedViewerDep) -> Response:
    sessions_of(request).end(viewer.session)
    response = RedirectResponse("/console/login?reason=signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response
