"""``/v1/events``: webhook deliveries that start runs, and the record of every one received.

``POST /v1/events/{source}`` authenticates itself (a signature, or a bearer token for a
source without a secret), so it takes no principal dependency; see :mod:`aevos.events.webhook`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...events.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    EventRecord,
    EventStatus,
)
from ..deps import AppDep, PrincipalDep

router = APIRouter(prefix="/v1/events", tags=["events"])


class Event(BaseModel):
    """A received event: never its body, only the body's SHA-256 and size."""

    id: int
    tenant: str
    source: str
    event_id: str | None
    status: EventStatus
    code: str | None  # the stable error code of a REJECTED event
    reason: str | None
    run_id: str | None
    payload_digest: str | None
    size: int
    received_at: float

    @classmethod
    def of(cls, record: EventRecord) -> Event:
        return cls(
            id=record.id,
            tenant=record.tenant,
            source=record.source,
            event_id=record.event_id,
            status=record.status,
            code=record.code,
            reason=record.reason,
            run_id=record.run_id,
            payload_digest=record.payload_digest,
            size=record.size,
            received_at=record.received_at,
        )


async def _read_bounded(request: Request, limit: int) -> tuple[bytes | None, int]:
    """The body, or None (and how much was declared or had arrived) past ``limit`` bytes:
    an oversized body is never held in memory whole."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        length = int(declared) if len(declared) <= 12 else 10**12
        if length > limit:
            return None, length
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None, size
        chunks.append(chunk)
    return b"".join(chunks), size


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else authorization


@router.post(
    "/{source}",
    status_code=202,
    responses={200: {"model": Event, "description": "A redelivery: the first delivery's run"}},
)
async def receive(source: str, request: Request, response: Response, app: AppDep) -> Event:
    """Receive an event: ACCEPTED (202) starts a run, a redelivery of the same event id is
    DUPLICATE (200) with the same run. Every refusal is recorded with its reason."""
    ingress = app.ingress
    body, size = await _read_bounded(request, ingress.max_body(source))
    delivery = Delivery(
        source=source,
        body=body,
        size=size,
        signature=request.headers.get(SIGNATURE_HEADER),
        event_id=request.headers.get(EVENT_ID_HEADER),
        token=_bearer(request.headers.get("authorization")),
    )
    # Database work and the source's mapping function: off the event loop.
    record = await run_in_threadpool(ingress.receive, delivery)
    if record.status is EventStatus.DUPLICATE:
        response.status_code = 200
    return Event.of(record)


@router.get("")
def list_events(
    app: AppDep,
    principal: PrincipalDep,
    source: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[list[EventStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[Event]:
    """The events received for the token's tenant, newest first (needs ``runs:read``)."""
    records = app.ingress.list_events(
        principal, source=source, status=status, limit=limit, offset=offset
    )
    return [Event.of(record) for record in records]
