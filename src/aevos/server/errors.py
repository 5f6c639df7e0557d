"""How aevos errors become HTTP responses: one status per error code, a stable JSON body.

Bodies are ``{"error": {"code": ..., "message": ...}}``; the code is the error's stable
``code``, so clients branch on it. Messages never carry secrets (the errors are built that
way), and unexpected exceptions become a 500 without their text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as e

log = logging.getLogger("aevos.server")

# First match wins: subclasses before their bases.
_STATUS: list[tuple[type[e.AevosError], int]] = [
    (e.AuthenticationError, 401),
    (e.SignatureError, 401),  # StaleSignatureError too
    (e.AuthorizationError, 403),
    (e.PiiAccessDeniedError, 403),
    (e.ModelAccessDeniedError, 403),
    (e.RunNotFoundError, 404),
    (e.UnknownWorkflowError, 404),
    (e.TokenNotFoundError, 404),
    (e.PolicyNotFoundError, 404),
    (e.ModelNotFoundError, 404),
    (e.TaskNotFoundError, 404),
    (e.DatasetNotFoundError, 404),
    (e.LabelInputError, 422),
    (e.ReportInputError, 422),
    (e.ExportFormatError, 422),
    (e.DatasetError, 422),
    (e.TaskConflictError, 409),
    (e.TaskInputError, 422),
    (e.ApprovalNotFoundError, 404),
    (e.CaseNotFoundError, 404),
    (e.RetrainingNotConfiguredError, 404),
    (e.ReplayNotFoundError, 404),
    (e.ReplayInputError, 422),
    (e.MonitorNotConfiguredError, 404),
    (e.AlertNotFoundError, 404),
    (e.ScheduleNotFoundError, 404),
    (e.MonitorConfigError, 422),
    (e.RecipeNotFoundError, 422),
    (e.RetrainingConfigError, 422),
    (e.RecipeParameterError, 422),
    (e.CaseInputError, 422),
    (e.ApprovalConflictError, 409),
    (e.RolloutNotFoundError, 404),
    (e.RolloutConflictError, 409),
    (e.RolloutInputError, 422),
    (e.UnknownSourceError, 404),
    (e.DeadLetterNotFoundError, 404),
    (e.NoCorrelatedRunError, 422),
    (e.ReplayUnavailableError, 409),
    (e.IdempotencyConflictError, 409),
    (e.InvalidRunStateError, 409),
    (e.NoPreviousVersionError, 409),
    (e.PayloadTooLargeError, 413),
    (e.SerializationError, 422),
    (e.DefinitionError, 422),
    (e.PolicyInputError, 422),
    (e.PolicyEvaluationError, 422),
    (e.ModelInputError, 422),
    (e.UnsafeArtifactError, 422),
    (e.InvalidArtifactError, 422),
    (e.InvalidEventError, 422),
    (e.EventMappingError, 422),
    (e.LimitExceededError, 429),
    # The deployment's budgets cannot admit the call until its cost is declared: the request
    # is fine, and retrying it cannot help.
    (e.UndeclaredCostError, 409),
    (e.CircuitOpenError, 502),
    (e.ModelCallError, 502),  # ModelTimeoutError too
    (e.VaultKeyError, 500),  # the server has no (or a malformed) vault key: its fault
    (e.StorageUnavailableError, 503),
    (e.StorageError, 500),  # SchemaError, CorruptDatabaseError: the server's fault
    (e.AuditSigningKeyError, 500),  # the server's anchor keys or directory are misconfigured
    (e.AuditAnchorError, 500),
]

# Storage errors name the database (host, name, file) for operators; HTTP clients get the
# code and this, and the detail goes to the server's log.
_STORAGE_MESSAGES = {
    503: "the database is unavailable; retry later",
    500: "the server's database failed; the operator has the details in the server log",
}


_FRAMEWORK_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_for(error: e.AevosError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


def public_message(error: e.AevosError) -> str:
    """What a client is told: the error's message, except for storage errors, whose
    messages name the database (host, name, file); those go to the server's log."""
    if isinstance(error, e.StorageError):
        log.error("storage error in a request: %s", error.message)
        return _STORAGE_MESSAGES[503 if status_for(error) == 503 else 500]
    return error.message


def body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(exc: e.AevosError) -> JSONResponse:
    """The API's answer to ``exc``: its status, and its code and public message."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, e.AuthenticationError) else None
    # Structured details the error carries (a field name, a task's status), never values.
    extra = {k: v for k, v in exc.to_dict().items() if k not in ("code", "message")}
    return JSONResponse(
        body(exc.code, public_message(exc), **extra), status_code=status_for(exc), headers=headers
    )


def _field_problem(error: Mapping[str, Any], document: Any) -> dict[str, Any]:
    """One entry of an ``invalid_request``'s ``fields``: the field and what is wrong with it.

    A body that is not JSON at all is the field ``body``; FastAPI puts the decoder's
    character offset where a field name goes, so it is moved to ``position`` (with the line
    and column) and the decoder's message becomes the problem.
    """
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
        position = loc[1]
        reason = str((error.get("ctx") or {}).get("error", "invalid JSON"))
        text = document if isinstance(document, str) else ""
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)
        return {
            "field": "body",
            "problem": f"not valid JSON: {reason} at line {line} column {column} (char {position})",
            "position": position,
            "line": line,
            "column": column,
        }
    return {"field": ".".join(str(p) for p in loc if p != "body"), "problem": error["msg"]}


def install(app: FastAPI) -> None:
    @app.exception_handler(e.AevosError)
    async def aevos_error(_request: Request, exc: e.AevosError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def framework_refusal(request: Request, exc: StarletteHTTPException) -> Response:
        # The router's own refusals (no such route, a method the path does not take, a body
        # it cannot parse) in the API's error shape too; the console keeps its own.
        if request.url.path.startswith("/console"):
            return await http_exception_handler(request, exc)
        code = _FRAMEWORK_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [_field_problem(err, exc.body) for err in exc.errors()]
        names = ", ".join(str(f["field"]) for f in fields) or "the request"
        return JSONResponse(
            body("invalid_request", f"invalid {names}", fields=fields), status_code=422
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Logged with its type only: the text of an arbitrary exception may hold input data.
        log.error("unhandled %s in a request", type(exc).__name__)
        return JSONResponse(body("internal_error", "internal error"), status_code=500)
