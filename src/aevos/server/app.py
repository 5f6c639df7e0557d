"""The FastAPI application over one :class:`~aevos.Aevos` app."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import Scope

from .. import __version__
from ..app import Aevos
from ..errors import AevosError
from . import console, errors, summaries
from .api import (
    approvals,
    audit,
    cases,
    certifications,
    datasets,
    dead_letters,
    events,
    evolution,
    labels,
    metrics,
    models,
    monitors,
    policies,
    replays,
    retraining,
    rollouts,
    runs,
    schedules,
    signals,
    tasks,
)
from .limits import BodyLimit, BodyLimits, BodyRule, RequestRefusals
from .limits import max_body_bytes as resolve_max_body_bytes
from .schemas import Status

log = logging.getLogger("aevos.server")


def create_app(
    aevos: Aevos,
    *,
    max_body_bytes: int | None = None,
    listed_value_bytes: int | None = None,
) -> FastAPI:
    """The HTTP API of ``aevos``: every route but ``/healthz`` needs a bearer token.

    ``max_body_bytes`` bounds every request body (default ``AEVOS_MAX_BODY_BYTES``, else
    1 MiB; webhook sources and model registrations have their own limits): a larger body
    is refused with 413 ``payload_too_large`` before it is read (:mod:`.limits`).
    Listings show an input, output or case longer than ``listed_value_bytes`` as JSON
    (default 8 KiB) as a summary with a link to the whole value (:mod:`.summaries`).
    """
    limit = resolve_max_body_bytes(max_body_bytes)
    listed = summaries.listed_value_bytes(listed_value_bytes)
    refusals = RequestRefusals(aevos)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Refusals counted in a flood and still waiting for their minute to end are written
        # before the server stops, not lost with the process.
        for flush in (aevos.flush_refusals, refusals.flush):
            try:
                await run_in_threadpool(flush, math.inf)
            except AevosError as exc:
                log.error("counted refusals could not be recorded at shutdown: %s", exc.code)

    api = FastAPI(
        title="aevos",
        version=__version__,
        description="Durable, governed business-process automation.",
        lifespan=lifespan,
    )
    api.state.aevos = aevos
    api.state.listed_value_bytes = listed
    errors.install(api)
    api.include_router(runs.router)
    api.include_router(signals.router)
    api.include_router(tasks.router)
    api.include_router(audit.router)
    api.include_router(models.router)
    api.include_router(certifications.router)
    api.include_router(retraining.router)
    api.include_router(replays.router)
    api.include_router(rollouts.router)
    api.include_router(monitors.router)
    api.include_router(approvals.router)
    api.include_router(policies.router)
    api.include_router(metrics.router)
    api.include_router(dead_letters.router)
    api.include_router(events.router)
    api.include_router(labels.router)
    api.include_router(datasets.router)
    api.include_router(cases.router)
    api.include_router(evolution.router)
    api.include_router(schedules.router)

    @api.get("/healthz", tags=["health"])
    def healthz() -> Status:
        """Liveness and database reachability (503 when the database is unreachable)."""
        aevos.store.ping()
        return Status(status="ok")

    @api.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        # People who open the server's address find the console; API clients use /v1/...
        return RedirectResponse("/console", status_code=307)

    console.install(api)  # the web console under /console, outside the OpenAPI schema

    async def refuse_event(
        scope: Scope, params: Mapping[str, Any], size: int, _: int
    ) -> AevosError:
        return await events.refuse_oversized(aevos, scope, params, size)

    rules = (
        BodyRule(
            _route(events.router, events.receive),
            lambda params: events.max_body(aevos, params),
            refuse_event,
        ),
        BodyRule(
            _route(models.router, models.register_version),
            lambda _: max(limit, models.REGISTER_BODY_BYTES),
        ),
    )
    api.add_middleware(
        BodyLimit, limits=BodyLimits(limit, refusals, rules), respond=console.error_response
    )
    return api


def _route(router: APIRouter, endpoint: Callable[..., Any]) -> BaseRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)
