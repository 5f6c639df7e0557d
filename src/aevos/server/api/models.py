"""``/v1/models``: the tenant's model registry, its promotion gate, and governed model calls.

In the manner of MLflow's registry: models with immutable numbered versions, movable
aliases and instant rollback. Every change is made by :class:`aevos.access.Access` and
audited by the registry in the transaction that makes it, with the token's principal as the
actor. Artifacts arrive base64-encoded in a JSON body; only data flavors are registered
here and a pickle never is. ``champion`` moves only through ``POST .../promote``, which
passes the ``promotion-gate`` policy.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...access import API_FLAVORS, ModelOverview
from ...models.registry import ModelAlias, card_to_dict
from ...models.types import ModelCard, ModelVersion
from ..deps import AccessDep, PrincipalDep
from .policies import DecisionOut

router = APIRouter(prefix="/v1/models", tags=["models"])

#: The largest artifact accepted (decoded); larger models are registered from the CLI.
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
_MAX_BASE64 = 4 * -(-MAX_ARTIFACT_BYTES // 3)
#: The body limit of a version's registration: the base64 artifact and 1 MiB for the rest.
REGISTER_BODY_BYTES = _MAX_BASE64 + (1 << 20)

NameParam = Annotated[str, Path(min_length=1, max_length=200)]
AliasParam = Annotated[str, Path(min_length=1, max_length=100)]
VersionParam = Annotated[int, Path(ge=1, le=2**31 - 1)]
Metric = Annotated[float, Field(strict=True, allow_inf_nan=False)]


# -- bodies ----------------------------------------------------------------------------------


class Card(BaseModel):
    """A model card: what the version is for and where it came from."""

    model_config = ConfigDict(extra="forbid")

    intended_use: str = Field(default="", max_length=5000)
    owner: str = Field(default="", max_length=200)
    metrics: dict[Annotated[str, Field(max_length=100)], Metric] = Field(default_factory=dict)
    training_data: str = Field(
        default="", max_length=2000, description="A reference (dataset and digest), not data."
    )
    training_run_id: str | None = Field(
        default=None, max_length=200, description="The aevos run that produced the model."
    )
    limitations: str = Field(default="", max_length=5000)


class RegisterVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(
        max_length=_MAX_BASE64,
        description="The artifact's bytes, base64 (standard alphabet, padded): a skops file "
        "for sklearn (aevos.models.artifact.dump_sklearn), a JSON or YAML decision table for "
        f"rules. Pickles are refused; at most {MAX_ARTIFACT_BYTES} bytes decoded.",
    )
    flavor: str = Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,49}$",
        description=f"How to load it; over the API: {', '.join(sorted(API_FLAVORS))}.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Adapter config (JSON; readable by model readers)."
    )
    card: Card = Field(default_factory=Card)
    signature: dict[str, Any] | None = Field(default=None, description="The input signature.")
    tags: dict[Annotated[str, Field(min_length=1, max_length=100)], str] = Field(
        default_factory=dict
    )
    aliases: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Aliases to point at the version (not champion: promote instead).",
    )

    @field_validator("artifact")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64 (standard alphabet, padded)") from None
        return value

    def data(self) -> bytes:
        return base64.b64decode(self.artifact, validate=True)


class SetAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1)


class Promote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1)
    evidence: dict[str, Any] = Field(
        description="What the promotion policy reads besides model.name: typically the "
        "candidate's and the champion's metrics, e.g. {candidate: {accuracy, "
        "calibration_error, samples}, champion: {accuracy, calibration_error}}."
    )
    alias: str = Field(default="champion", min_length=1, max_length=100)

    @field_validator("evidence")
    @classmethod
    def _no_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "model" in value:
            raise ValueError("must not hold 'model': the policy is told the model's name")
        return value


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any
    key: str | None = Field(
        default=None, max_length=200, description="Makes a canary split sticky for this key."
    )


# -- responses -------------------------------------------------------------------------------


class Version(BaseModel):
    """An immutable model version."""

    name: str
    version: int
    ref: str = Field(description="name@version")
    digest: str = Field(description="sha256 of the artifact")
    flavor: str
    config: dict[str, Any]
    card: Card
    signature: dict[str, Any] | None
    tags: dict[str, str]
    created_by: str
    created_at: float

    @classmethod
    def of(cls, version: ModelVersion) -> Version:
        return cls(
            name=version.name,
            version=version.version,
            ref=version.ref,
            digest=version.digest,
            flavor=version.flavor,
            config=dict(version.config),
            # Stored cards are not validated again: a newer writer's card is shown as it is.
            card=Card.model_construct(**card_to_dict(version.card)),
            signature=None if version.signature is None else dict(version.signature),
            tags=dict(version.tags),
            created_by=version.created_by,
            created_at=version.created_at,
        )


class Alias(BaseModel):
    """Where an alias points, where it pointed before its last move, and who moved it."""

    alias: str
    version: int
    previous_version: int | None = Field(description="Where a rollback would move it.")
    updated_by: str
    updated_at: float

    @classmethod
    def of(cls, alias: ModelAlias) -> Alias:
        return cls(
            alias=alias.alias,
            version=alias.version,
            previous_version=alias.previous_version,
            updated_by=alias.updated_by,
            updated_at=alias.updated_at,
        )


class ModelSummary(BaseModel):
    name: str
    latest_version: int
    versions: int = Field(description="How many versions it has.")
    aliases: dict[str, int] = Field(description="alias -> version")

    @classmethod
    def of(cls, model: ModelOverview) -> ModelSummary:
        return cls(
            name=model.name,
            latest_version=model.versions[-1].version,
            versions=len(model.versions),
            aliases={a.alias: a.version for a in model.aliases},
        )


class Model(BaseModel):
    name: str
    latest_version: int
    versions: list[Version] = Field(description="Oldest first.")
    aliases: list[Alias]

    @classmethod
    def of(cls, model: ModelOverview) -> Model:
        return cls(
            name=model.name,
            latest_version=model.versions[-1].version,
            versions=[Version.of(v) for v in model.versions],
            aliases=[Alias.of(a) for a in model.aliases],
        )


class Registered(BaseModel):
    created: bool = Field(
        description="False: an identical version (artifact, flavor, config) "
        "existed and is returned; its card and tags stay as first registered."
    )
    version: Version


class Promotion(BaseModel):
    decision: DecisionOut
    needs_approval: bool = Field(
        description="The policy asks a second person to approve; nothing moved yet."
    )
    promoted: Version | None = Field(description="The version the alias now names, if it moved.")
    approval_id: str | None = Field(
        default=None,
        description="The pending approval, when one is needed: another principal approves "
        "it with POST /v1/approvals/{approval_id}/approve.",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    route: str
    label: Any
    confidence: float | None
    output: Any
    input_digest: str
    latency_ms: float
    certified_threshold: float | None = Field(
        default=None,
        description="The answering version's certified automation threshold; null: none.",
    )
    certified: bool = Field(
        default=False,
        description="The confidence reaches the version's certified threshold: the answer "
        "may be automated.",
    )


# -- routes ----------------------------------------------------------------------------------


@router.get("")
def list_models(access: AccessDep, principal: PrincipalDep) -> list[ModelSummary]:
    """The tenant's models, by name."""
    return [ModelSummary.of(model) for model in access.models.list(principal)]


@router.get("/{name}")
def get_model(name: NameParam, access: AccessDep, principal: PrincipalDep) -> Model:
    """One model with every version (oldest first) and its aliases."""
    return Model.of(access.models.get(principal, name))


@router.get("/{name}/versions/{version}")
def get_version(
    name: NameParam, version: VersionParam, access: AccessDep, principal: PrincipalDep
) -> Version:
    return Version.of(access.models.version(principal, name, version))


@router.post("/{name}/versions", status_code=201)
def register_version(
    name: NameParam,
    body: RegisterVersion,
    access: AccessDep,
    principal: PrincipalDep,
    response: Response,
) -> Registered:
    """Register the next version (201), or return the identical one that exists (200)."""
    registration = access.models.register(
        principal,
        name,
        body.data(),
        flavor=body.flavor,
        config=body.config,
        card=ModelCard(**body.card.model_dump()),
        signature=body.signature,
        tags=body.tags,
        aliases=body.aliases,
    )
    if not registration.created:
        response.status_code = 200
    return Registered(created=registration.created, version=Version.of(registration.version))


@router.get("/{name}/aliases/{alias}")
def get_alias(
    name: NameParam, alias: AliasParam, access: AccessDep, principal: PrincipalDep
) -> Version:
    """The version an alias names."""
    return Version.of(access.models.version(principal, name, alias))


@router.put("/{name}/aliases/{alias}")
def set_alias(
    name: NameParam, alias: AliasParam, body: SetAlias, access: AccessDep, principal: PrincipalDep
) -> Alias:
    """Point an alias at a version (not champion: it moves only by promotion)."""
    return Alias.of(access.models.set_alias(principal, name, alias, body.version))


@router.post("/{name}/aliases/{alias}/rollback")
def rollback(
    name: NameParam, alias: AliasParam, access: AccessDep, principal: PrincipalDep
) -> Alias:
    """Move an alias back to its previous version (409 ``no_previous_version`` if none)."""
    return Alias.of(access.models.rollback(principal, name, alias))


@router.post("/{name}/promote")
def promote(
    name: NameParam, body: Promote, access: AccessDep, principal: PrincipalDep
) -> Promotion:
    """Ask the ``promotion-gate`` policy to move the alias to the version: ``allow``
    promotes, ``deny`` refuses, ``approve`` records a pending approval for a second person
    (``/v1/approvals``). Audited either way."""
    result = access.models.promote(
        principal, name, body.version, evidence=body.evidence, alias=body.alias
    )
    return Promotion(
        decision=DecisionOut.of(result.decision),
        needs_approval=result.needs_approval,
        promoted=None if result.promoted is None else Version.of(result.promoted),
        approval_id=None if result.approval is None else result.approval.approval_id,
    )


@router.post("/{name}/predict")
def predict(
    name: NameParam, body: PredictRequest, access: AccessDep, principal: PrincipalDep
) -> PredictResponse:
    """Call the model (its tenant's routes, budgets, rate limits and breakers apply)."""
    result = access.models.predict(principal, name, body.input, key=body.key)
    return PredictResponse(
        model=name,
        version=result.version_ref,
        route=result.route,
        label=result.label,
        confidence=result.confidence,
        output=result.output,
        input_digest=result.input_digest,
        latency_ms=result.latency_ms,
        certified_threshold=result.certified_threshold,
        certified=result.certified,
    )
