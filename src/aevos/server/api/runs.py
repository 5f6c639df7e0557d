"""``/v1/runs``: start (idempotent by key), list, inspect, steps, lineage, cancel, resume, fork."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...status import RunStatus
from ..deps import AccessDep, PrincipalDep
from ..schemas import ForkRun, LineageOut, Run, StartRun, Status, Step

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.post("", status_code=201)
def start_run(body: StartRun, access: AccessDep, principal: PrincipalDep) -> Run:
    """Start a run of a registered workflow; the same idempotency key returns the same run."""
    info = access.start_run(
        principal,
        body.workflow,
        body.args,
        body.kwargs,
        idempotency_key=body.idempotency_key,
        queue=body.queue,
        priority=body.priority,
    )
    return Run.of(info)


@router.get("")
def list_runs(
    access: AccessDep,
    principal: PrincipalDep,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[Run]:
    runs = access.list_runs(principal, status=status, workflow=workflow, limit=limit, offset=offset)
    return [Run.of(info) for info in runs]


@router.get("/{run_id}")
def get_run(
    run_id: str,
    access: AccessDep,
    principal: PrincipalDep,
    reveal: Annotated[
        bool,
        Query(
            description="Return the input and output with their PII tokens replaced by the "
            "original values; needs pii:reveal (403 without), and is audited."
        ),
    ] = False,
) -> Run:
    """A run; its input is stored with its data policy applied (PII tokenised or redacted)."""
    return Run.of(access.get_run(principal, run_id, reveal=reveal))


@router.get("/{run_id}/steps")
def list_steps(run_id: str, access: AccessDep, principal: PrincipalDep) -> list[Step]:
    return [Step.of(step) for step in access.list_steps(principal, run_id)]


@router.get("/{run_id}/lineage")
def lineage(run_id: str, access: AccessDep, principal: PrincipalDep) -> LineageOut:
    """Why the case was decided so: steps, decisions, model calls, people, child runs."""
    return LineageOut.of(access.lineage(principal, run_id))


@router.post("/{run_id}/cancel")
def cancel(run_id: str, access: AccessDep, principal: PrincipalDep) -> Status:
    return Status(status=access.cancel_run(principal, run_id).value)


@router.post("/{run_id}/resume")
def resume(run_id: str, access: AccessDep, principal: PrincipalDep) -> Run:
    return Run.of(access.resume_run(principal, run_id))


@router.post("/{run_id}/fork", status_code=201)
def fork(run_id: str, body: ForkRun, access: AccessDep, principal: PrincipalDep) -> Run:
    return Run.of(access.fork_run(principal, run_id, body.from_step))
