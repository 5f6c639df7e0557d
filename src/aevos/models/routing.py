"""Routes: how a call to a model name becomes calls to model versions.

A :class:`Route` is configured in code, one per model name, and compiled once into the list
of targets the gateway walks on every call:

* the primary target: the route's alias (``champion`` by default), or, for the share of
  traffic a :class:`Canary` takes, the canary's alias. The split is sticky per key: a key
  hashes (with the tenant and model name) to a point in [0, 100), so the same key always
  lands on the same side; calls without a key are split at random;
* a cascade: cheap first; when the answer's confidence is below a stage's
  ``below_confidence`` (or the model gives none), the call escalates to that stage's target;
* fallbacks, tried in order when a target raises, times out or has its breaker open;
* a shadow: the same input goes, in the background, to another version whose answer is
  recorded (route ``shadow``) and never returned.

Targets are written ``"name"``, ``"name@alias"`` or ``"name@3"``; for a canary or shadow a
bare ``"challenger"`` means that alias of the route's own model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import DefinitionError

DEFAULT_ALIAS = "champion"


@dataclass(frozen=True)
class Target:
    """One model and a reference to one of its versions: an alias, ``latest`` or a number."""

    model: str
    ref: int | str = DEFAULT_ALIAS

    def __str__(self) -> str:
        return f"{self.model}@{self.ref}"

    @classmethod
    def parse(cls, spec: str | Target) -> Target:
        """``"name"`` / ``"name@alias"`` / ``"name@3"``, or a Target as is."""
        if isinstance(spec, Target):
            return spec
        if not isinstance(spec, str) or not spec or spec.startswith("@"):
            raise DefinitionError(
                f"a model target is 'name', 'name@alias' or 'name@3', not {spec!r}"
            )
        name, sep, ref = spec.partition("@")
        if not sep:
            return cls(name)
        if not ref:
            raise DefinitionError(f"model target {spec!r} names no alias or version after '@'")
        return cls(name, int(ref) if ref.isdigit() else ref)


def _same_model(model: str, spec: str | int | Target) -> Target:
    """A canary or shadow: a bare alias or version number means one of the route's model."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, int) or "@" not in spec:
        if isinstance(spec, str) and not spec:
            raise DefinitionError("an empty alias")
        return Target(model, spec)
    return Target.parse(spec)


@dataclass(frozen=True)
class Canary:
    """Send ``percent`` of the traffic (0-100) to ``ref`` (an alias of the route's model by
    default, e.g. ``challenger``), sticky per call key."""

    ref: str | int | Target
    percent: float

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.percent) <= 100.0:
            raise DefinitionError(f"canary percent must be within 0..100, not {self.percent}")


@dataclass(frozen=True)
class Cascade:
    """Escalate to ``target`` when the previous stage answered with a confidence below
    ``below_confidence`` (or with none)."""

    target: str | Target
    below_confidence: float

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.below_confidence) <= 1.0:
            raise DefinitionError(
                f"cascade below_confidence must be within 0..1, not {self.below_confidence}"
            )


@dataclass(frozen=True)
class Route:
    """How calls to ``model`` are routed. Fields not given keep the plain behaviour: one call
    to ``model@champion``, no timeout, and a cost not known in advance.

    ``max_cost`` / ``max_tokens`` declare what one model call may cost at most (e.g. an LLM's
    ``max_tokens`` at its price; ``0`` for a model that costs nothing): the gateway reserves
    them from budgets before the call and settles to the actual amounts after it, so a budget
    holds exactly when they are upper bounds. When the cost is not known in advance,
    ``cost_estimate`` / ``tokens_estimate`` are reserved instead (a call that costs more is
    charged the excess; see :mod:`aevos.models.budget`); with neither, a budget that limits
    cost (tokens) refuses the call unless the budget has its own estimate. ``timeout``
    (seconds) applies to each model call of the route.
    """

    model: str
    alias: str | int = DEFAULT_ALIAS
    canary: Canary | None = None
    shadow: str | int | Target | None = None
    cascade: Sequence[Cascade] = ()
    fallbacks: Sequence[str | Target] = ()
    timeout: float | None = None
    max_cost: float | None = None
    max_tokens: int | None = None
    cost_estimate: float | None = None
    tokens_estimate: int | None = None
    # Compiled targets, filled in __post_init__.
    primary: Target = field(init=False, repr=False, compare=False)
    canary_target: Target | None = field(init=False, repr=False, compare=False)
    shadow_target: Target | None = field(init=False, repr=False, compare=False)
    cascade_targets: tuple[tuple[Target, float], ...] = field(init=False, repr=False, compare=False)
    fallback_targets: tuple[Target, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model or "@" in self.model:
            raise DefinitionError(f"a route's model is a model name, not {self.model!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise DefinitionError(f"route timeout must be > 0 seconds, not {self.timeout}")
        for name in ("max_cost", "max_tokens", "cost_estimate", "tokens_estimate"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise DefinitionError(f"route {name} must be >= 0, not {value}")
        for dim in ("cost", "tokens"):
            bound, estimate = getattr(self, f"max_{dim}"), getattr(self, f"{dim}_estimate")
            if bound is not None and estimate is not None:
                raise DefinitionError(
                    f"route {self.model!r} sets both max_{dim} and {dim}_estimate: an upper "
                    f"bound is reserved as is, an estimate only stands in for a missing one"
                )
        cascade = tuple(self.cascade)
        fallbacks = tuple(self.fallbacks)
        for stage in cascade:
            if not isinstance(stage, Cascade):
                raise DefinitionError(f"cascade stages are Cascade(...), not {stage!r}")
        setter = object.__setattr__
        setter(self, "cascade", cascade)
        setter(self, "fallbacks", fallbacks)
        setter(self, "primary", _same_model(self.model, self.alias))
        setter(
            self,
            "canary_target",
            None if self.canary is None else _same_model(self.model, self.canary.ref),
        )
        setter(
            self,
            "shadow_target",
            None if self.shadow is None else _same_model(self.model, self.shadow),
        )
        setter(
            self,
            "cascade_targets",
            tuple((Target.parse(s.target), float(s.below_confidence)) for s in cascade),
        )
        setter(self, "fallback_targets", tuple(Target.parse(spec) for spec in fallbacks))


def key_hash(tenant: str, model: str, key: str) -> bytes:
    return hashlib.sha256(f"{tenant}\x1f{model}\x1f{key}".encode()).digest()


def bucket_of(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") * (100.0 / 2**64)


def bucket(tenant: str, model: str, key: str) -> float:
    """Where ``key`` falls in [0, 100): the same key always falls in the same place."""
    return bucket_of(key_hash(tenant, model, key))
