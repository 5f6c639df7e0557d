"""``/v1/events/dead-letters``: events that failed validation or mapping, kept with their
reason; listed, inspected and replayed (one or many) within the token's tenant."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ...events.intake import DeadLetter, DeadLetterStatus, ReplayOutcome
from ..deps import AccessDep, PrincipalDep

#: Dead letter ids are 64-bit integers: a larger one names none, and would overflow the driver.
MAX_ID = 2**63 - 1

router = APIRouter(prefix="/v1/events/dead-letters", tags=["events"])


class DeadLetterOut(BaseModel):
    id: int
    channel: str
    source: str
    event_id: str
    status: DeadLetterStatus
    code: str
    reason: str
    payload_digest: str
    size: int
    meta: dict[str, Any]
    attempts: int
    run_id: str | None
    created_at: float
    updated_at: float
    # Only with ?payload=true (pii:reveal): the body as text when it is UTF-8, else base64.
    payload: str | None = None
    payload_encoding: str | None = None

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        text: str | None = None
        encoding: str | None = None
        if letter.payload is not None:
            try:
                text, encoding = letter.payload.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                text, encoding = base64.b64encode(letter.payload).decode(), "base64"
        return cls(
            id=letter.id,
            channel=letter.channel.value,
            source=letter.source,
            event_id=letter.event_id,
            status=letter.status,
            code=letter.code,
            reason=letter.reason,
            payload_digest=letter.payload_digest,
            size=letter.size,
            meta=letter.meta,
            attempts=letter.attempts,
            run_id=letter.run_id,
            created_at=letter.created_at,
            updated_at=letter.updated_at,
            payload=text,
            payload_encoding=encoding,
        )


class ReplayIn(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=1000)


class ReplayOut(BaseModel):
    id: int
    replayed: bool
    run_id: str | None
    code: str | None
    reason: str | None

    @classmethod
    def of(cls, outcome: ReplayOutcome) -> ReplayOut:
        return cls(
            id=outcome.id,
            replayed=outcome.replayed,
            run_id=outcome.run_id,
            code=outcome.code,
            reason=outcome.reason,
        )


@router.get("")
def list_dead_letters(
    access: AccessDep,
    principal: PrincipalDep,
    status: Annotated[list[DeadLetterStatus] | None, Query()] = None,
    source: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[DeadLetterOut]:
    """The tenant's dead letters, newest first, without bodies (``runs:read``)."""
    letters = access.events.dead_letters(
        principal, status=status, source=source, limit=limit, offset=offset
    )
    return [DeadLetterOut.of(letter) for letter in letters]


@router.get("/{letter_id}")
def get_dead_letter(
    letter_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    access: AccessDep,
    principal: PrincipalDep,
    payload: Annotated[
        bool, Query(description="Include the body; needs pii:reveal and is audited.")
    ] = False,
) -> DeadLetterOut:
    """One dead letter of the tenant, with its reason (and its body with ``payload``)."""
    return DeadLetterOut.of(access.events.dead_letter(principal, letter_id, payload=payload))


@router.post("/replay")
def replay_dead_letters(
    body: ReplayIn, access: AccessDep, principal: PrincipalDep
) -> list[ReplayOut]:
    """Replay dead letters through their sources (``runs:control``): each is REPLAYED with
    its run, or stays DEAD with the reason it failed with again."""
    return [ReplayOut.of(outcome) for outcome in access.events.replay(principal, body.ids)]


@router.post("/{letter_id}/replay")
def replay_dead_letter(
    letter_id: Annotated[int, Path(ge=1, le=MAX_ID)], access: AccessDep, principal: PrincipalDep
) -> ReplayOut:
    """Replay one dead letter (``runs:control``)."""
    return ReplayOut.of(access.events.replay(principal, [letter_id])[0])
