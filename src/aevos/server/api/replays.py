"""``/v1/models/{name}/versions/{version}/replays``, ``/v1/models/{name}/replays`` and
``/v1/replays/{replay_id}``: replaying kept cases with a candidate version.

``POST`` enqueues a replay (``models:promote``) and answers 202 with its record at once:
the cases are re-decided on a worker, never in the API process. ``GET`` reads one replay
or a model's replays (``models:read``), tenant scoped.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ...records.replay import Replay
from ..deps import AccessDep, PrincipalDep
from .models import NameParam, VersionParam

router = APIRouter(tags=["models"])


class CriteriaIn(BaseModel):
    """What the replay must show to pass (defaults for what is left out)."""

    model_config = ConfigDict(extra="forbid")

    min_cases: int = Field(50, ge=1, le=10_000, description="Decided cases needed to judge.")
    min_agreement: float = Field(0.8, ge=0, le=1, description="Agreement with the champion.")
    max_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Accuracy on labelled cases below the champion's, at most."
    )
    require_no_error: bool = Field(True, description="Fail if the candidate raised on a case.")


class ReplayIn(BaseModel):
    """Which kept cases to replay, and how fast."""

    model_config = ConfigDict(extra="forbid")

    since: float | None = Field(
        None, description="Only cases kept since (epoch seconds); null: every kept case."
    )
    limit: int = Field(1000, ge=1, le=10_000, description="The newest cases, at most.")
    rate: float = Field(20.0, gt=0, le=1000, description="Cases per second, at most.")
    criteria: CriteriaIn | None = None


class ReplayOut(BaseModel):
    """One replay of a candidate version over kept cases."""

    replay_id: str = Field(description="The replay's workflow run (GET /v1/runs/{run_id}).")
    model: str
    version: int = Field(description="The candidate.")
    champion: int | None = Field(description="The champion when it was planned.")
    status: str = Field(description="running, passed, failed, inconclusive or error.")
    passed: bool | None = Field(description="null while running, inconclusive or in error.")
    reason: str | None
    criteria: dict[str, Any]
    figures: dict[str, Any] = Field(
        description="cases, expired, decided, errors, agreement, labelled, accuracy, "
        "champion_accuracy, above_threshold, latency_p50_ms, latency_p95_ms, cost, ..."
    )
    since: float | None
    limit: int
    rate: float
    requested_by: str
    started_at: float
    finished_at: float | None

    @classmethod
    def of(cls, replay: Replay) -> ReplayOut:
        data = replay.to_dict()
        data.pop("tenant")
        return cls(**data)


class ReplayList(BaseModel):
    replays: list[ReplayOut]


@router.post("/v1/models/{name}/versions/{version}/replays", status_code=202)
def start_replay(
    name: NameParam,
    version: VersionParam,
    body: ReplayIn,
    access: AccessDep,
    principal: PrincipalDep,
) -> ReplayOut:
    """Enqueue a replay of the version over the model's kept cases; 202 with its record."""
    criteria = None if body.criteria is None else body.criteria.model_dump()
    replay = access.replays.start(
        principal,
        name,
        version,
        since=body.since,
        limit=body.limit,
        rate=body.rate,
        criteria=criteria,
    )
    return ReplayOut.of(replay)


@router.get("/v1/models/{name}/replays")
def list_replays(
    name: NameParam,
    access: AccessDep,
    principal: PrincipalDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReplayList:
    """The model's replays (of one version), newest first."""
    found = access.replays.list(principal, name, version=version, limit=limit)
    return ReplayList(replays=[ReplayOut.of(r) for r in found])


@router.get("/v1/replays/{replay_id}")
def get_replay(
    replay_id: Annotated[str, Path(min_length=1, max_length=200)],
    access: AccessDep,
    principal: PrincipalDep,
) -> ReplayOut:
    """One replay of the tenant's."""
    return ReplayOut.of(access.replays.get(principal, replay_id))
