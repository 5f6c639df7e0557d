"""Bounded request bodies: every route refuses a body past its limit with 413, unread.

:class:`BodyLimit` is an ASGI middleware in front of every route (the API, the webhook
receiver and the console). A request that declares a ``Content-Length`` above its route's
limit is refused before a byte of its body is read; any other body (chunked, or one whose
declared length the ASGI server did not hold it to) is counted as it arrives and refused as
soon as it passes the limit. A body within the limit is handed to the route whole, so no
route ever holds more than its limit in memory.

Limits: the server's ``max_body_bytes`` (default :data:`DEFAULT_MAX_BODY_BYTES`, 1 MiB; the
``AEVOS_MAX_BODY_BYTES`` environment variable or ``aevos serve --max-body-bytes``), except
for routes with a :class:`BodyRule` of their own: a webhook source's ``max_body``, and a
model version's registration, whose body carries an artifact of up to 64 MiB.

Refusals are answered with the API's error body (code ``payload_too_large``) and recorded
like other refusals that come before anyone is authenticated: as ``request.refused`` audit
records in the ``default`` tenant's chain (the request's own tenant is unknown and must not
be taken from it), the first :data:`~aevos.rejections.DEFAULT_LIMIT` a minute one by one and
a flood counted in one ``request.refused_counted`` summary (:mod:`aevos.rejections`). A
webhook delivery's refusal is recorded by the webhook ingress instead, as a REJECTED event.
The body itself is never stored or logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors as e
from ..audit.rejections import DEFAULT_LIMIT, RejectionBudget
from .errors import error_response

if TYPE_CHECKING:
    from ..app import Aevos

log = logging.getLogger("aevos.server")

DEFAULT_MAX_BODY_BYTES = 1 << 20
#: The largest server-wide limit accepted: a body is held in memory whole.
MAX_BODY_BYTES_LIMIT = 1 << 30
MAX_BODY_ENV = "AEVOS_MAX_BODY_BYTES"
#: Where refusals that come before authentication are audited.
REFUSAL_TENANT = "default"
_MAX_DECLARED = 10**12  # a Content-Length beyond this is "this much or more"


def max_body_bytes(value: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The server-wide body limit: ``value``, else ``AEVOS_MAX_BODY_BYTES``, else 1 MiB."""
    name = "max_body_bytes"
    if value is None:
        text = (os.environ if environ is None else environ).get(MAX_BODY_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_BODY_BYTES
        name = MAX_BODY_ENV
        if not (text.isascii() and text.isdigit()):
            raise e.DefinitionError(f"{MAX_BODY_ENV} must be a number of bytes, not {text[:30]!r}")
        value = int(text)
    if isinstance(value, bool) or not 0 < value <= MAX_BODY_BYTES_LIMIT:
        raise e.DefinitionError(f"{name} must be 1 to {MAX_BODY_BYTES_LIMIT} bytes, not {value}")
    return value


# Records a refusal its own way and returns the error to answer with:
# (scope, path parameters, size seen, limit) -> error.
Refuse = Callable[[Scope, Mapping[str, Any], int, int], Awaitable[e.AevosError]]


@dataclass(frozen=True)
class BodyRule:
    """A route whose bodies are bounded otherwise than by the server-wide limit."""

    route: BaseRoute
    limit: Callable[[Mapping[str, Any]], int]  # its path parameters -> bytes
    refuse: Refuse | None = None  # None: recorded as a request refusal


class RequestRefusals:
    """Audits requests refused before authentication; past a budget a flood is counted."""

    def __init__(self, aevos: Aevos, limit: int = DEFAULT_LIMIT) -> None:
        self.aevos = aevos
        self.limit = limit
        self.budget = RejectionBudget()

    def record(self, code: str, message: str, now: float, **data: Any) -> None:
        try:
            self.flush(now)
        except e.AevosError as exc:  # kept for the next try; this refusal goes on
            log.error("counted request refusals could not be recorded: %s", exc.code)
        if self.budget.admit(REFUSAL_TENANT, code, now, self.limit):
            self._append("request.refused", "anonymous", reason=f"{code}: {message}", **data)

    def flush(self, now: float | None = None) -> None:
        """Audit the counts whose window ended by ``now`` (``math.inf``: all, at shutdown)."""
        pending = self.budget.due(time.time() if now is None else now)
        while pending:
            counted = pending[0]
            try:
                self._append(
                    "request.refused_counted",
                    "system",
                    reason=counted.describe(),
                    count=counted.count,
                    reasons=dict(counted.reasons),
                    window_start=counted.start,
                    window_end=counted.end,
                )
            except BaseException:
                self.budget.put_back(pending)
                raise
            pending.pop(0)

    def _append(self, action: str, actor: str, **data: Any) -> None:
        from ..audit import AuditEvent

        self.aevos.audit.append(
            AuditEvent(action=action, actor=actor, tenant=REFUSAL_TENANT, data=data)
        )


@dataclass
class BodyLimits:
    """What :class:`BodyLimit` enforces: the server-wide limit and the routes' own rules."""

    max_body_bytes: int
    refusals: RequestRefusals
    rules: tuple[BodyRule, ...] = ()

    def resolve(self, scope: Scope) -> tuple[int, BodyRule | None, Mapping[str, Any]]:
        if scope["method"] in ("POST", "PUT", "PATCH"):
            for rule in self.rules:
                match, child = rule.route.matches(scope)
                if match is Match.FULL:
                    params: Mapping[str, Any] = child.get("path_params", {})
                    return rule.limit(params), rule, params
        return self.max_body_bytes, None, {}

    async def refuse(
        self, scope: Scope, rule: BodyRule | None, params: Mapping[str, Any], size: int, limit: int
    ) -> e.AevosError:
        if rule is not None and rule.refuse is not None:
            return await rule.refuse(scope, params, size, limit)
        path = scope["path"]
        error = e.PayloadTooLargeError(
            f"the request body is {size} bytes or more; {scope['method']} {path[:200]} accepts "
            f"at most {limit} bytes"
        )
        try:
            await run_in_threadpool(
                self.refusals.record,
                error.code,
                error.message,
                time.time(),
                method=scope["method"],
                path=path[:200],
                size=size,
                limit=limit,
            )
        except e.AevosError as exc:  # the refusal stands without its record
            log.error("a refused request could not be recorded: %s", exc.code)
        return error


def _declared(scope: Scope) -> int | None:
    text = Headers(scope=scope).get("content-length", "")
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= 12 else _MAX_DECLARED
    return None


class BodyLimit:
    """ASGI middleware: the request body within its route's limit, or 413 unread."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: BodyLimits,
        respond: Callable[[Scope, e.AevosError], Awaitable[Response]] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.respond = respond or _json_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, rule, params = self.limits.resolve(scope)
        declared = _declared(scope)
        if declared is not None and declared > limit:
            # Answered without reading: a client that waits for "100 Continue" never
            # sends the body at all.
            await self._refuse(scope, receive, send, rule, params, declared, limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, rule, params, size, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        whole = b"".join(chunks)
        del chunks
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, whole
            if replayed:
                return await receive()  # what comes after the body: the disconnect
            replayed = True
            message = {"type": "http.request", "body": whole, "more_body": False}
            whole = b""
            return message

        await self.app(scope, replay, send)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rule: BodyRule | None,
        params: Mapping[str, Any],
        size: int,
        limit: int,
    ) -> None:
        error = await self.limits.refuse(scope, rule, params, size, limit)
        response = await self.respond(scope, error)
        # The rest of the body is left unread; the server discards it.
        await response(scope, receive, send)


async def _json_error(_scope: Scope, error: e.AevosError) -> Response:
    return error_response(error)
