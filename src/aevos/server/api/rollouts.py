"""``/v1/rollouts``: a candidate version exposed step by step and judged at every step.

``POST /v1/models/{name}/rollouts`` starts one (``models:promote``; 409 ``rollout_conflict``
while another rollout of the model is active). ``GET /v1/rollouts`` lists the tenant's
rollouts and ``GET /v1/rollouts/{id}`` shows one with its history (``models:read``).
``POST /v1/rollouts/{id}/pause|resume|abort|promote`` are the operator's actions
(``models:promote``); a promotion passes the model's promotion policy, so it may wait for a
second person's approval. A refused action answers 404/409/422 and is audited as
``rollout.rejected``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ...rollouts import Criteria
from ..deps import AccessDep, PrincipalDep
from ..schemas import NAME_PATTERN
from .models import NameParam

if TYPE_CHECKING:
    from ...rollouts import Rollout

router = APIRouter(tags=["rollouts"])

RolloutId = Annotated[str, Path(min_length=1, max_length=200)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class CriteriaIn(BaseModel):
    """What every step must show (fields not given keep their defaults)."""

    model_config = ConfigDict(extra="forbid")

    min_calls: int | None = Field(None, ge=1, le=10_000_000, description="Candidate calls needed.")
    min_labels: int | None = Field(
        None, ge=0, le=10_000_000, description="Labelled candidate decisions needed."
    )
    min_agreement: Share | None = Field(
        None, description="Shadow: share of calls answered as the champion did."
    )
    max_error_rate: Share | None = None
    min_precision: Share | None = None
    max_precision_drop: Share | None = None
    max_override_rate: Share | None = None
    max_latency_p95_ratio: float | None = Field(None, gt=0.0, le=1e6)
    max_cost_ratio: float | None = Field(None, gt=0.0, le=1e6)
    latency_floor_ms: float | None = Field(None, ge=0.0, le=3_600_000)
    latency_p_value: Share | None = Field(
        None, description="A slower p95 fails only below this Mann-Whitney p-value."
    )
    precision_p_value: Share | None = Field(
        None, description="A precision drop fails only below this Fisher exact p-value."
    )

    def criteria(self) -> Criteria:
        # min_precision and max_override_rate are None by default: a null given for them
        # means "not judged"; for every other field null means the default.
        given = self.model_dump(exclude_unset=True)
        optional = {"min_precision", "max_override_rate", "max_latency_p95_ratio", "max_cost_ratio"}
        return Criteria.from_dict(
            {k: v for k, v in given.items() if v is not None or k in optional}
        )


class StartRollout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="The candidate version.")
    steps: list[Annotated[int, Field(ge=0, le=100)]] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="0 is shadow, 1..100 a canary's share of traffic in percent; 100 last "
        "means all traffic, then promotion. Default [0, 5, 25, 50, 100].",
    )
    criteria: CriteriaIn | None = None
    step_minutes: float | None = Field(
        None, gt=0.0, le=7 * 24 * 60, description="Each step's deadline, in minutes."
    )
    replay: bool = Field(False, description="Replay kept cases before the first step.")
    policy: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="The promotion policy the final promotion passes (promotion-gate).",
    )


class Act(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000, description="Why, for the audit log.")


class RolloutOut(BaseModel):
    """A rollout: where it stands and what its last analysis found."""

    rollout_id: str
    model: str
    version: int = Field(description="The candidate version.")
    champion: int | None = Field(description="The version it is judged against.")
    steps: list[int]
    step: int = Field(description="The index of the current step in steps.")
    step_name: str = Field(description="replay, shadow or canary N%.")
    share: int = Field(description="The candidate's share of traffic now (0: shadowed only).")
    state: str = Field(
        description="replaying, progressing, paused, promoted, rolled_back, aborted or failed."
    )
    criteria: dict[str, Any]
    step_started_at: float
    deadline: float | None = Field(
        description="When the current step's analysis must end (null while paused)."
    )
    created_by: str
    created_at: float
    updated_at: float
    reason: str
    last_verdict: dict[str, Any] | None = Field(
        description="The last analysis: outcome, reasons, candidate and champion figures."
    )
    replay: bool
    policy: str = Field(description="The promotion policy the final promotion passes.")
    step_minutes: float

    @classmethod
    def of(cls, rollout: Rollout) -> RolloutOut:
        return cls.model_validate(rollout.to_dict())


class RolloutDetail(RolloutOut):
    history: list[dict[str, Any]] = Field(
        description="Its transitions, oldest first, each with the analysis that caused it."
    )


@router.get("/v1/rollouts")
def list_rollouts(
    access: AccessDep,
    principal: PrincipalDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    active: Annotated[
        bool | None, Query(description="Only active rollouts (true) or finished ones (false).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RolloutOut]:
    """The tenant's rollouts, newest first."""
    found = access.rollouts.list(principal, model=model, active=active, limit=limit)
    return [RolloutOut.of(r) for r in found]


@router.get("/v1/rollouts/{rollout_id}")
def get_rollout(rollout_id: RolloutId, access: AccessDep, principal: PrincipalDep) -> RolloutDetail:
    """One rollout of the tenant's, with its history."""
    rollout = access.rollouts.get(principal, rollout_id)
    history = access.rollouts.history(principal, rollout_id)
    return RolloutDetail(
        **RolloutOut.of(rollout).model_dump(), history=[t.to_dict() for t in history]
    )


@router.post("/v1/models/{name}/rollouts", status_code=201)
def start_rollout(
    name: NameParam, body: StartRollout, access: AccessDep, principal: PrincipalDep
) -> RolloutOut:
    """Start rolling a version of the model out (409 while another rollout is active)."""
    rollout = access.rollouts.start(
        principal,
        name,
        body.version,
        steps=None if body.steps is None else tuple(body.steps),
        criteria=None if body.criteria is None else body.criteria.criteria(),
        step_minutes=body.step_minutes,
        replay=body.replay,
        policy=body.policy,
    )
    return RolloutOut.of(rollout)


def _act(
    access: AccessDep, principal: PrincipalDep, rollout_id: str, action: str, body: Act | None
) -> RolloutOut:
    reason = "" if body is None else body.reason
    return RolloutOut.of(access.rollouts.act(principal, rollout_id, action, reason=reason))


@router.post("/v1/rollouts/{rollout_id}/pause")
def pause_rollout(
    rollout_id: RolloutId, access: AccessDep, principal: PrincipalDep, body: Act | None = None
) -> RolloutOut:
    """Pause the rollout: its traffic stays where it is and no step is judged."""
    return _act(access, principal, rollout_id, "pause", body)


@router.post("/v1/rollouts/{rollout_id}/resume")
def resume_rollout(
    rollout_id: RolloutId, access: AccessDep, principal: PrincipalDep, body: Act | None = None
) -> RolloutOut:
    """Resume a paused rollout: its current step is judged again, with a new deadline."""
    return _act(access, principal, rollout_id, "resume", body)


@router.post("/v1/rollouts/{rollout_id}/abort")
def abort_rollout(
    rollout_id: RolloutId, access: AccessDep, principal: PrincipalDep, body: Act | None = None
) -> RolloutOut:
    """Abort the rollout: traffic goes back to the champion at once."""
    return _act(access, principal, rollout_id, "abort", body)


@router.post("/v1/rollouts/{rollout_id}/promote")
def promote_rollout(
    rollout_id: RolloutId, access: AccessDep, principal: PrincipalDep, body: Act | None = None
) -> RolloutOut:
    """Promote the candidate now, through the model's promotion policy (which may ask for a
    second person's approval: the rollout then waits for it)."""
    return _act(access, principal, rollout_id, "promote", body)
