"""``/v1/events``: webhook deliveries that start runs, and the record of every one received.

``POST /v1/events/{source}`` authenticates itself (a signature, or a bearer token for a
source without a secret), so it takes no principal dependency; see :mod:`aevos.webhook`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Scope

from ...app import Aevos
from ...errors import AevosError
from ...events.intake import Channel
from ...events.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    EventRecord,
    EventStatus,
)
from ...kernel.tracing import trace_headers
from ..deps import AppDep, PrincipalDep

router = APIRouter(prefix="/v1/events", tags=["events"])


class Event(BaseModel):
    """A received event: never its body, only the body's SHA-256 and size."""

    id: int
    tenant: str
    channel: str  # webhook, nats or signal
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
            channel=record.channel,
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


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else authorization


def _delivery(source: str, headers: Headers, body: bytes | None, size: int) -> Delivery:
    return Delivery(
        source=source,
        body=body,
        size=size,
        signature=headers.get(SIGNATURE_HEADER),
        event_id=headers.get(EVENT_ID_HEADER),
        token=_bearer(headers.get("authorization")),
        trace=trace_headers(headers),
    )


def max_body(app: Aevos, params: Mapping[str, Any]) -> int:
    """The body limit of a delivery to the source named in ``params``."""
    return app.ingress.max_body(str(params.get("source", "")))


async def refuse_oversized(
    app: Aevos, scope: Scope, params: Mapping[str, Any], size: int
) -> AevosError:
    """Record a delivery whose body passed its source's limit, as the ingress records every
    refusal (a REJECTED event, counted past the source's budget), and return its error."""
    delivery = _delivery(str(params.get("source", "")), Headers(scope=scope), None, size)
    try:
        await run_in_threadpool(app.ingress.receive, delivery)
    except AevosError as exc:
        return exc
    raise AssertionError("the ingress accepted a delivery without a body")


@router.post(
    "/{source}",
    status_code=202,
    responses={200: {"model": Event, "description": "A redelivery: the first delivery's run"}},
)
async def receive(source: str, request: Request, response: Response, app: AppDep) -> Event:
    """Receive an event: ACCEPTED (202) starts a run, a redelivery of the same event id is
    DUPLICATE (200) with the same run. Every refusal is recorded with its reason."""
    # Within the source's max_body: the server's body limit refused a larger one unread,
    # through refuse_oversized below.
    body = await request.body()
    delivery = _delivery(source, request.headers, body, len(body))
    # Database work and the source's mapping function: off the event loop.
    record = await run_in_threadpool(app.ingress.receive, delivery)
    if record.status is EventStatus.DUPLICATE:
        response.status_code = 200
    return Event.of(record)


@router.get("")
def list_events(
    app: AppDep,
    principal: PrincipalDep,
    source: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[list[EventStatus] | None, Query()] = None,
    channel: Annotated[Channel | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[Event]:
    """The events received for the token's tenant (webhook deliveries, NATS messages,
    signals), newest first (needs ``runs:read``)."""
    records = app.ingress.list_events(
        principal,
        source=source,
        status=status,
        channel=None if channel is None else channel.value,
        limit=limit,
        offset=offset,
    )
    return [Event.of(record) for record in records]
