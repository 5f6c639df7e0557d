"""``/v1/runs``: start (idempotent by key), list, inspect, steps, lineage, cancel, resume, fork;
the runs in flight per code version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from ...kernel.tracing import trace_headers
from ...records.status import RunStatus
from ..deps import AccessDep, ListedDep, PrincipalDep
from ..schemas import CodeVersionRuns, ForkRun, LineageOut, Run, StartRun, Status, Step
from ..summaries import value_response

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.post("", status_code=201)
def start_run(body: StartRun, request: Request, access: AccessDep, principal: PrincipalDep) -> Run:
    """Start a run of a registered workflow; the same idempotency key returns the same run."""
    # A W3C traceparent header makes the run's trace a child of the caller's (when traced).
    info = access.runs.start(
        principal,
        body.workflow,
        body.args,
        body.kwargs,
        idempotency_key=body.idempotency_key,
        queue=body.queue,
        priority=body.priority,
        trace=trace_headers(request.headers),
    )
    return Run.of(info)


@router.get("")
def list_runs(
    access: AccessDep,
    principal: PrincipalDep,
    listed: ListedDep,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[Run]:
    """The tenant's runs, newest first; a large input or output is listed as a summary."""
    runs = access.runs.list(principal, status=status, workflow=workflow, limit=limit, offset=offset)
    return [Run.listed(info, listed) for info in runs]


# Declared before /{run_id}, which would otherwise take "versions" for a run id.
@router.get("/versions")
def versions_in_flight(access: AccessDep, principal: PrincipalDep) -> list[CodeVersionRuns]:
    """The tenant's runs in flight (enqueued, running, waiting) per the code version they
    started on, oldest version first: what is left before an old deployment can retire."""
    return [CodeVersionRuns.of(entry) for entry in access.runs.versions(principal)]


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
    return Run.of(access.runs.get(principal, run_id, reveal=reveal))


# The whole value a listing's summary points at: any JSON value, exactly the bytes summarised.
_VALUE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The value, as JSON", "content": {"application/json": {"schema": {}}}}
}


@router.get("/{run_id}/input", response_class=JSONResponse, responses=_VALUE)
def run_input(run_id: str, access: AccessDep, principal: PrincipalDep) -> JSONResponse:
    """The run's input (its arguments), whole."""
    return value_response(access.runs.get(principal, run_id).input)


@router.get("/{run_id}/output", response_class=JSONResponse, responses=_VALUE)
def run_output(run_id: str, access: AccessDep, principal: PrincipalDep) -> JSONResponse:
    """The run's output (null until it succeeds), whole."""
    return value_response(access.runs.get(principal, run_id).output)


@router.get("/{run_id}/steps")
def list_steps(
    run_id: str, access: AccessDep, principal: PrincipalDep, listed: ListedDep
) -> list[Step]:
    """Its recorded steps, in order; a large output is listed as a summary."""
    return [Step.listed(run_id, step, listed) for step in access.runs.steps(principal, run_id)]


@router.get("/{run_id}/steps/{seq}/output", response_class=JSONResponse, responses=_VALUE)
def step_output(
    run_id: str,
    seq: Annotated[int, Path(ge=0, le=2**31 - 1)],
    access: AccessDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """The output of the step at position ``seq``, whole."""
    for step in access.runs.steps(principal, run_id):
        if step.seq == seq:
            return value_response(step.output)
    raise HTTPException(404, f"run {run_id} has no step at position {seq}")


@router.get("/{run_id}/lineage")
def lineage(run_id: str, access: AccessDep, principal: PrincipalDep) -> LineageOut:
    """Why the case was decided so: steps, decisions, model calls, people, child runs."""
    return LineageOut.of(access.runs.lineage(principal, run_id))


@router.post("/{run_id}/cancel")
def cancel(run_id: str, access: AccessDep, principal: PrincipalDep) -> Status:
    return Status(status=access.runs.cancel(principal, run_id).value)


@router.post("/{run_id}/resume")
def resume(run_id: str, access: AccessDep, principal: PrincipalDep) -> Run:
    return Run.of(access.runs.resume(principal, run_id))


@router.post("/{run_id}/fork", status_code=201)
def fork(run_id: str, body: ForkRun, access: AccessDep, principal: PrincipalDep) -> Run:
    return Run.of(access.runs.fork(principal, run_id, body.from_step))
