"""The FastAPI application over one :class:`~aevos.Aevos` app."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..app import Aevos
from ..errors import AevosError
from . import console, errors
from .api import approvals, audit, events, metrics, models, policies, runs, tasks
from .schemas import Status

log = logging.getLogger("aevos.server")


def create_app(aevos: Aevos) -> FastAPI:
    """The HTTP API of ``aevos``: every route but ``/healthz`` needs a bearer token."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Refusals counted in a flood and still waiting for their minute to end are written
        # before the server stops, not lost with the process.
        try:
            await run_in_threadpool(aevos.flush_refusals, math.inf)
        except AevosError as exc:
            log.error("counted refusals could not be recorded at shutdown: %s", exc.code)

    api = FastAPI(
        title="aevos",
        version=__version__,
        description="Durable, governed business-process automation.",
        lifespan=lifespan,
    )
    api.state.aevos = aevos
    errors.install(api)
    api.include_router(runs.router)
    api.include_router(tasks.router)
    api.include_router(audit.router)
    api.include_router(models.router)
    api.include_router(approvals.router)
    api.include_router(policies.router)
    api.include_router(metrics.router)
    api.include_router(events.router)

    @api.get("/healthz", tags=["health"])
    def healthz() -> Status:
        """Liveness and database reachability (503 when the database is unreachable)."""
        aevos.store.ping()
        return Status(status="ok")

    console.install(api)  # the web console under /console, outside the OpenAPI schema
    return api
