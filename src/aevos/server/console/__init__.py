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

**Where people start.** ``/console`` (and ``/``) sends a reviewer, who works tasks and
does not operate runs, to the inbox, and everyone else to the runs. A run's page shows its
steps' outputs through the same :meth:`Access.runs.steps` read as the API's
``GET /v1/runs/{id}/steps``; a value past the server's ``listed_value_bytes`` is shown in
part, with a link to its whole JSON.

**People's work.** The inbox (``/console/inbox``) lists the tasks the viewer's role may work
and the viewer's own claims, in inbox order. A task page shows the case, the model's
suggestion and confidence and the task's form pre-filled with the suggestion; a submission
goes straight on to the viewer's next task (their oldest claim, else ``claim_next``), so a
reviewer's loop is claim, read, decide, next. The form is checked by the server only
(``novalidate``): the messages beside the fields are the API's, for every browser.

**Dead letters** (``/console/dead-letters``) lists the tenant's events that failed
validation or mapping, with their reason, and replays one or the ticked ones
(``runs:control``).

**The dashboard** (``/console/dashboard``) draws :func:`aevos.telemetry.metrics.dashboard` for the
last hour, day or week with Chart.js; the series travel as JSON in the page, not in script.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

# The page modules register their routes on the shared router when imported.
from . import dashboard, events, evolution, inbox, login, models, runs  # noqa: F401
from .page import HERE, error_response, router
from .session import KEY_ENV, LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Sessions

__all__ = [
    "KEY_ENV",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Sessions",
    "error_response",
    "install",
    "router",
]


def install(api: FastAPI, sessions: Sessions | None = None) -> None:
    """Serve the console under ``/console`` (and its static files) from ``api``."""
    api.state.console_sessions = Sessions.from_env() if sessions is None else sessions
    api.include_router(router)
    api.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
