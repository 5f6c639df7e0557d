"""``/v1/models/{name}/retrain`` and ``/v1/models/{name}/retraining``: retraining a model.

``POST .../retrain`` enqueues a retraining (``models:write``) with the model's configuration
in force and answers 202 with its run id at once: the training runs on a worker, never in
the API process. ``GET .../retraining`` shows the configuration and the latest retrainings
(``models:read``); ``GET /v1/retrainings/{run_id}`` one retraining.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ...records.retraining import RetrainingConfig, RetrainingRun
from ..deps import AccessDep, PrincipalDep
from .models import NameParam

router = APIRouter(tags=["models"])


class RetrainingOut(BaseModel):
    """One retraining: its workflow run and what it came to."""

    run_id: str = Field(description="The retraining's workflow run (GET /v1/runs/{run_id}).")
    model: str
    trigger: str = Field(description="manual, labels (every N new labels), schedule or drift.")
    status: str = Field(description="queued, running, succeeded or failed.")
    reason: str | None = Field(description="Why it failed, when it did.")
    config_version: int
    requested_by: str
    label_count: int = Field(description="The model's labels when it was started.")
    dataset: str | None = Field(description="The digest of the dataset version it trained on.")
    parent: int | None = Field(description="The champion version when it started.")
    candidate: int | None = Field(description="The version it registered.")
    certified: bool | None
    threshold: float | None = Field(description="The candidate's certified threshold.")
    promotion: str | None = Field(description="The promotion policy's decision.")
    lineage: dict[str, Any]
    started_at: float
    finished_at: float | None

    @classmethod
    def of(cls, run: RetrainingRun) -> RetrainingOut:
        data = run.to_json()
        data.pop("tenant")
        return cls(**data)


class ConfigOut(BaseModel):
    """How the model is retrained (the configuration version in force)."""

    version: int
    recipe: str
    params: dict[str, Any]
    every_labels: int | None
    interval: float | None = Field(description="Seconds between scheduled retrainings.")
    holdout: float
    min_holdout: int
    target: float
    delta: float
    min_count: int | None
    auto_promote: bool
    policy: str
    updated_by: str
    updated_at: float

    @classmethod
    def of(cls, config: RetrainingConfig) -> ConfigOut:
        data = config.to_json()
        for key in ("tenant", "model"):
            data.pop(key)
        return cls(**data)


class RetrainingOverview(BaseModel):
    config: ConfigOut
    runs: list[RetrainingOut]


@router.post("/v1/models/{name}/retrain", status_code=202)
def retrain(name: NameParam, access: AccessDep, principal: PrincipalDep) -> RetrainingOut:
    """Enqueue a retraining of the model (its configuration in force); 202 with its run id."""
    return RetrainingOut.of(access.retraining.start(principal, name))


@router.get("/v1/models/{name}/retraining")
def retraining(
    name: NameParam,
    access: AccessDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> RetrainingOverview:
    """The model's retraining configuration and its latest retrainings, newest first."""
    config = access.retraining.config(principal, name)
    runs = access.retraining.runs(principal, name, limit=limit)
    return RetrainingOverview(config=ConfigOut.of(config), runs=[RetrainingOut.of(r) for r in runs])


@router.get("/v1/retrainings/{run_id}")
def get_retraining(
    run_id: Annotated[str, Path(min_length=1, max_length=200)],
    access: AccessDep,
    principal: PrincipalDep,
) -> RetrainingOut:
    """One retraining of the tenant's."""
    return RetrainingOut.of(access.retraining.run(principal, run_id))
