"""``/v1/runs/{run_id}/signals/{name}``: a signal to a running workflow over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response
from pydantic import BaseModel

from ...access import SignalReceipt
from ..deps import AccessDep, PrincipalDep

router = APIRouter(prefix="/v1/runs", tags=["runs"])


class SignalIn(BaseModel):
    """The signal's payload (any JSON; ``null`` when left out)."""

    payload: Any = None


class SignalOut(BaseModel):
    run_id: str
    name: str
    status: str  # SIGNALLED, or DUPLICATE for a signal id already delivered
    signal_id: str
    event: int  # the signal's record in /v1/events

    @classmethod
    def of(cls, receipt: SignalReceipt) -> SignalOut:
        return cls(
            run_id=receipt.run_id,
            name=receipt.name,
            status=receipt.status,
            signal_id=receipt.signal_id,
            event=receipt.event,
        )


@router.post(
    "/{run_id}/signals/{name}",
    status_code=202,
    responses={200: {"model": SignalOut, "description": "A repeated Idempotency-Key"}},
)
def send_signal(
    run_id: Annotated[str, Path(max_length=200)],
    name: Annotated[str, Path(max_length=100)],
    access: AccessDep,
    principal: PrincipalDep,
    response: Response,
    body: SignalIn | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> SignalOut:
    """Deliver signal ``name`` to a run of the token's tenant that has not ended
    (``ctx.wait_signal(name)`` receives the payload); needs ``runs:control``, and is audited
    as ``event.signalled``. An ``Idempotency-Key`` already used for this run and name is
    answered 200 DUPLICATE and delivers nothing."""
    receipt = access.events.signal(
        principal,
        run_id,
        name,
        None if body is None else body.payload,
        signal_id=idempotency_key,
    )
    if receipt.status == "DUPLICATE":
        response.status_code = 200
    return SignalOut.of(receipt)
