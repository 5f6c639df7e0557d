"""The governed model gateway: every model call routed, budgeted, guarded and recorded.

``gateway.predict(model, input)`` (and ``ctx.predict`` inside a workflow, which records what
:meth:`Gateway.govern` returns at a position of the run) resolves the model's :class:`~aevos.models.routing.Route` to a
version (alias, sticky canary split), then for each model call it makes:

0. decides it with the ``model_call`` policy that governs the model, if any
   (:mod:`aevos.policy.model_call`): a denial refuses the call, an allowance redacts the
   fields the decision names in the input this version sees; the decision (or an explicit
   ``bypass_policy`` and its reason) is audited with the call;
1. asks the version's circuit breaker (:mod:`.breaker`): an open breaker rejects the call at
   once and the route's fallbacks answer instead;
2. reserves one call and the route's ``max_cost`` / ``max_tokens`` (or, when the cost is
   not known in advance, an estimate; a cost budget refuses a call with neither) from every
   budget and rate limit that applies (tenant, workflow, model; :mod:`.budget`), before the
   call, so concurrent callers in any number of processes cannot overshoot them;
3. calls the adapter, in a worker thread when a timeout applies;
4. settles the reservation to the actual cost and tokens, tells the breaker, and records the
   call (:mod:`.recorder`): model, version, route, outcome, confidence, input SHA-256,
   latency, tokens, cost, tenant, and the workflow, run and step when there is one.

Then a cascade escalates while the confidence is low, fallbacks answer for a failed target,
and a shadow version gets the same input in the background (recorded, never returned).

What stops a call at once, without fallbacks: a policy denying the primary target
(:class:`~aevos.errors.ModelAccessDeniedError`; a denied cascade stage keeps the answer
below it, a denied fallback is skipped) or unable to decide, an input the model's signature
refuses (:class:`~aevos.errors.ModelInputError`), an unknown model or alias
(:class:`~aevos.errors.ModelNotFoundError`), an artifact that fails its integrity check, and a
tenant or workflow budget or rate limit (a fallback would spend from the same one). What
fails over to the fallbacks: the model raising or timing out, its breaker being open, and
a budget or rate limit of that model alone.

Circuit-breaker state is per process (a failing model is noticed by each process within
a few calls); budgets and rate limits are shared by all processes through the database.
Alias resolution is cached per process for ``resolve_ttl`` seconds (1 s by default), so an
alias moved by another process (a rollback) takes effect here within that time;
:meth:`Gateway.invalidate` makes it immediate in this process.

Every answer carries the certified threshold of the version that gave it
(``CallResult.certified_threshold``; ``CallResult.certified`` says whether the answer's
confidence reaches it): the latest certification of that version
(:mod:`aevos.evolution.certifications`), read once per version and cached per process for
``certification_ttl`` seconds (5 s by default), so a certification recorded by another
process (the retraining workflow on a worker) is served here within that time, and one
recorded through this process's app at once. A version never certified, or whose
certification certified nothing, has none: nothing it answers is certified. When the
database cannot be read, the answer has none either (nothing is automated on a guess).

The HTTP endpoint for calls from outside Python comes with the server (a later issue); it
will call :meth:`Gateway.predict` with the caller's tenant and identity.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    AevosError,
    ArtifactIntegrityError,
    CircuitOpenError,
    DefinitionError,
    InvalidArtifactError,
    LimitExceededError,
    ModelAccessDeniedError,
    ModelCallError,
    ModelInputError,
    ModelNotFoundError,
    ModelTimeoutError,
    PolicyError,
    SerializationError,
    StorageError,
    UndeclaredCostError,
    UnsafeArtifactError,
)
from ..identity import check_tenant
from ..storage.cases import CaseRow
from .answer import STEP_PREFIX, CallResult, rebuild_error
from .breaker import BreakerConfig, Breakers, BreakerState
from .budget import Budget, Budgets, Leasing, Reservation, Usage
from .recorder import CallRecord, CallStats, Recorder, input_digest, seal_case
from .rollout_routes import RolloutRoutes
from .routing import Canary, Cascade, Route, Target, bucket_of, key_hash
from .types import ModelAdapter, ModelVersion, Prediction

if TYPE_CHECKING:
    from ..audit import AuditEvent, AuditLog
    from ..cases import KeptCases, NewCase
    from ..policy.model_call import ModelCallGate
    from ..storage import Store
    from .registry import ModelRegistry

__all__ = ["STEP_PREFIX", "CallResult", "Gateway", "Governed", "rebuild_error"]

# Errors that stop the call: retrying elsewhere cannot help, or would hide a real problem.
_FINAL: tuple[type[BaseException], ...] = (
    ModelInputError,
    ModelNotFoundError,
    ArtifactIntegrityError,
    UnsafeArtifactError,
    InvalidArtifactError,
    DefinitionError,
    SerializationError,
    # Budgets cannot be enforced without the database: refuse rather than guess.
    StorageError,
    # A policy that cannot decide (misdeclared input, no such policy) or that denies: the
    # caller's call is refused, not answered by some other model (see _stage for the
    # denied cascade stages and fallbacks that are skipped instead).
    PolicyError,
    ModelAccessDeniedError,
)
log = logging.getLogger("aevos.gateway")


@dataclass(frozen=True)
class Governed:
    """What :meth:`Gateway.govern` returns: the result or the error, and the records of the
    model calls made (cascades, fallbacks), which the caller writes."""

    result: CallResult | None
    error: AevosError | None
    records: list[CallRecord]
    #: The call's kept case (encrypted), for the caller to write with the records; None
    #: when it failed, or its policy keeps no cases, or there is no vault key.
    case: CaseRow | None = None

    def events(self) -> list[AuditEvent]:
        """The records as audit events (``model.called``, with their policy decisions)."""
        return [event for r in self.records for event in r.events()]


@dataclass(slots=True)
class _Call:
    """One governed call in flight."""

    tenant: str
    workflow: str | None
    actor: str
    input: Any
    digest: str
    call_id: str
    timeout: float | None
    role: str = "service"  # the caller's role, as model_call policies see it
    classification: str = "internal"
    bypass: str | None = None  # why this call skips its model_call policy (audited)
    run_id: str | None = None
    seq: int | None = None
    key_digest: str | None = None
    key_point: float = -1.0  # where the key falls in [0, 100) for canary splits
    records: list[CallRecord] = field(default_factory=list)


@dataclass(slots=True)
class _Answer:
    prediction: Prediction
    version: ModelVersion
    route: str


class Gateway:
    """Routes, governs and records model calls against one store and registry.

    ``breaker`` configures every version's circuit breaker (LiteLLM's defaults),
    ``leasing`` how budgets are leased from the database, ``flush_interval`` / ``flush_batch``
    how often buffered call records are written, ``resolve_ttl`` how long an alias
    resolution is reused, ``max_workers`` the threads that run calls with a timeout and
    ``shadow_workers`` / ``shadow_backlog`` the background shadow calls (beyond the backlog
    they are dropped, and counted in ``shadow_dropped``). ``gate`` applies ``model_call``
    policies to every call (:mod:`aevos.policy.model_call`); without one, none apply.
    ``cases`` keeps the input of every call that answered (:mod:`aevos.cases`); without
    it, nothing is kept.
    ``certification_ttl`` is how long a version's certified threshold is reused before it
    is read again (the time within which another process's new certification is served).
    ``rollout_ttl`` (at most 2 s) is how long each model's active rollout, read from the
    database, is reused: calls follow a rollout's step, pause or rollback within it
    (:mod:`.rollout_routes`).
    """

    def __init__(
        self,
        store: Store,
        registry: ModelRegistry,
        audit: AuditLog,
        *,
        breaker: BreakerConfig | None = None,
        leasing: Leasing | None = None,
        flush_interval: float = 0.2,
        flush_batch: int = 1000,
        resolve_ttl: float = 1.0,
        max_workers: int = 16,
        shadow_workers: int = 2,
        shadow_backlog: int = 1000,
        gate: ModelCallGate | None = None,
        cases: KeptCases | None = None,
        certification_ttl: float = 5.0,
        rollout_ttl: float = 1.0,
    ) -> None:
        if not isinstance(certification_ttl, int | float) or not 0 <= certification_ttl <= 3600:
            raise DefinitionError("certification_ttl must be from 0 to 3600 seconds")
        self.store = store
        self.gate = gate
        #: Keeps what each answered call's model saw (aevos.cases); None keeps nothing.
        self.cases = cases
        self.registry = registry
        self.audit = audit
        self.breakers = Breakers(breaker)
        self.budgets = Budgets(store, leasing)
        self.recorder = Recorder(audit, interval=flush_interval, batch=flush_batch)
        self.resolve_ttl = resolve_ttl
        self._routes: dict[str, Route] = {}
        self._resolved: dict[tuple[str, str, int | str], tuple[float, ModelVersion, Any]] = {}
        self.certification_ttl = float(certification_ttl)
        #: Each model's active rollout (aevos.rollouts), read from the database every
        #: ``rollout_ttl`` seconds at most (see :mod:`.rollout_routes`).
        self.rollout_routes = RolloutRoutes(store, rollout_ttl)
        # (tenant, model, version) -> (until when, threshold): read once per ttl, per version.
        self._thresholds: dict[tuple[str, str, int], tuple[float, float | None]] = {}
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._shadow_pool: ThreadPoolExecutor | None = None
        self._shadow_workers = shadow_workers
        self._shadow_slots = threading.BoundedSemaphore(shadow_backlog)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{os.urandom(4).hex()}-"
        self._closed = False
        self._callers: set[tuple[str, str]] = set()
        self.shadow_dropped = 0
        # A process that exits without close() still writes its buffered records and
        # returns its unspent budget; weakly held, so the hook keeps no gateway alive.
        ref = weakref.ref(self)

        def at_exit() -> None:
            gateway = ref()
            if gateway is not None:
                gateway.close()

        self._at_exit = at_exit
        atexit.register(at_exit)

    # -- configuration ------------------------------------------------------------------------

    def configure(self, route: Route) -> Route:
        """Use ``route`` for calls to ``route.model`` (replacing its previous route)."""
        if not isinstance(route, Route):
            raise DefinitionError(f"configure takes a Route, not {type(route).__name__}")
        self._routes[route.model] = route
        return route

    def route(
        self,
        model: str,
        *,
        alias: str | int = "champion",
        canary: Canary | None = None,
        shadow: str | int | Target | None = None,
        cascade: list[Cascade] | tuple[Cascade, ...] = (),
        fallbacks: list[str | Target] | tuple[str | Target, ...] = (),
        timeout: float | None = None,
        max_cost: float | None = None,
        max_tokens: int | None = None,
        cost_estimate: float | None = None,
        tokens_estimate: int | None = None,
    ) -> Route:
        """Build a :class:`Route` for ``model`` and :meth:`configure` it."""
        return self.configure(
            Route(
                model,
                alias=alias,
                canary=canary,
                shadow=shadow,
                cascade=tuple(cascade),
                fallbacks=tuple(fallbacks),
                timeout=timeout,
                max_cost=max_cost,
                max_tokens=max_tokens,
                cost_estimate=cost_estimate,
                tokens_estimate=tokens_estimate,
            )
        )

    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def set_policy(self, model: str, policy: str) -> None:
        """Govern calls to ``model`` by the ``model_call`` policy ``policy`` rather than
        the app's ``model-access`` policy (it must exist when the model is called)."""
        if self.gate is None:
            raise DefinitionError("this gateway applies no policies (it was built without a gate)")
        self.gate.set_policy(model, policy)

    def set_budget(
        self,
        *,
        tenant: str = "default",
        workflow: str | None = None,
        model: str | None = None,
        calls: int | None = None,
        cost: float | None = None,
        tokens: int | None = None,
        window: float = 86_400.0,
        cost_estimate: float | None = None,
        tokens_estimate: int | None = None,
    ) -> str:
        """Limit the calls, cost and tokens of a tenant, or of one of its workflows or
        models, per ``window`` seconds (a day by default); returns the scope's name. Every
        process that calls must configure the same budgets (they are code, like routes);
        their usage is shared through the database.

        ``cost_estimate`` / ``tokens_estimate``: what a call reserves here when its route
        declares no ``max_cost`` / ``max_tokens`` and no estimate of its own; without any, a
        call limited in cost (tokens) is refused with
        :class:`~aevos.errors.UndeclaredCostError`."""
        name = Budgets.scope_name(tenant, workflow=workflow, model=model)
        budget = Budget(
            calls,
            cost,
            tokens,
            window,
            cost_estimate=cost_estimate,
            tokens_estimate=tokens_estimate,
        )
        self.budgets.configure(name, budget)
        return name

    def set_rate_limit(
        self,
        *,
        calls: int,
        per: float = 1.0,
        tenant: str = "default",
        workflow: str | None = None,
        model: str | None = None,
    ) -> str:
        """At most ``calls`` model calls per ``per`` seconds (fixed windows), across all
        processes; refusals raise :class:`~aevos.errors.RateLimitedError`."""
        name = Budgets.scope_name(tenant, workflow=workflow, model=model, rate=True)
        self.budgets.configure(name, Budget(calls=calls, window=per, rate=True))
        return name

    def remove_limit(self, scope: str) -> None:
        """Stop enforcing a budget or rate limit in this process (its rows stay)."""
        self.budgets.remove(scope)

    def usage(self, scope: str) -> Usage | None:
        """The database's view of a configured scope in its current window. Chunks leased by
        running processes count as used until they are spent or returned."""
        return self.budgets.usage(scope)

    def invalidate(self, model: str | None = None) -> None:
        """Forget cached alias resolutions and certified thresholds (of ``model``, or all):
        the next call re-reads them."""
        with self._lock:
            if model is None:
                self._resolved = {}
                self._thresholds = {}
            else:
                self._resolved = {k: v for k, v in self._resolved.items() if k[1] != model}
                self._thresholds = {k: v for k, v in self._thresholds.items() if k[1] != model}

    def forget_certification(self, tenant: str, model: str, version: int) -> None:
        """Forget the cached certified threshold of ``model@version``: the next answer of
        that version reads its latest certification (the app calls this when it records
        one)."""
        self._thresholds.pop((tenant, model, version), None)

    def certified_threshold(
        self, model: str, version: int, *, tenant: str = "default"
    ) -> float | None:
        """The certified threshold this gateway serves for ``model@version`` now."""
        return self._threshold(tenant, model, version)

    def breaker_state(self, model: str, version: int, *, tenant: str = "default") -> BreakerState:
        return self.breakers.get(tenant, model, version).state

    def stats(self) -> dict[tuple[str, str, str, str], CallStats]:
        """Calls of this process by (tenant, name@version, route, outcome)."""
        return self.recorder.stats()

    def flush(self) -> int:
        """Write buffered call records now; returns how many were written."""
        return self.recorder.flush()

    def close(self) -> None:
        """Finish shadow calls, write the buffered records and return unspent budget."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.recorder.close()
        self.budgets.close()

    # -- calls --------------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        input: Any,
        *,
        key: str | int | None = None,
        tenant: str = "default",
        workflow: str | None = None,
        actor: str = "system",
        timeout: float | None = None,
        role: str = "service",
        classification: str = "internal",
        bypass_policy: str | None = None,
    ) -> CallResult:
        """Call ``model`` on ``input``, governed; the call is recorded (in the background).

        ``key`` makes the canary split sticky (the same key always reaches the same
        version); ``workflow`` charges that workflow's budgets; ``timeout`` (seconds)
        overrides the route's for each model call. ``role`` and ``classification`` are
        what the model's ``model_call`` policy sees of the caller and the data;
        ``bypass_policy="why"`` skips that policy for this call, audited with the reason.
        """
        call, route = self._start(model, input, key, tenant, workflow, actor, timeout)
        self._govern_by_policy(call, role, classification, bypass_policy)
        pending: tuple[tuple[KeptCases, NewCase], ...] = ()
        try:
            result = self._govern(call, route, model, key)
            if self.cases is not None:
                pending = ((self.cases, self._new_case(call, result)),)
            return result
        finally:
            self.recorder.add(call.records, pending)

    def govern(
        self,
        model: str,
        input: Any,
        *,
        key: str | int | None = None,
        tenant: str = "default",
        workflow: str | None = None,
        actor: str = "system",
        timeout: float | None = None,
        classification: str = "internal",
        bypass_policy: str | None = None,
        run_id: str | None = None,
        seq: int | None = None,
    ) -> Governed:
        """Govern one call and return its result (or the error that stopped it) with the
        records of the model calls it made, none of them written.

        What ``ctx.predict`` builds on: the workflow context commits the result as a
        position of run ``run_id`` (``seq``) in one transaction with these records' audit
        events (the ``model_call`` policy's decisions with them), then tells
        :meth:`recorded`. Errors of aevos are returned, not raised: they are the position's
        recorded value too.
        """
        records: list[CallRecord] = []
        try:
            call, route = self._start(model, input, key, tenant, workflow, actor, timeout)
            call.run_id, call.seq, records = run_id, seq, call.records
            self._govern_by_policy(call, "service", classification, bypass_policy)
            result = self._govern(call, route, model, key)
            case = None
            if self.cases is not None:
                case = seal_case(self.cases, self._new_case(call, result), records)
            return Governed(result, None, records, case)
        except AevosError as exc:
            # Recorded against the run like any step failure (a non-JSON input included).
            return Governed(None, exc, records)

    def recorded(self, governed: Governed) -> None:
        """Count a governed call's records, written by the caller (see :meth:`govern`)."""
        self.recorder.count(governed.records)

    # -- the governed call --------------------------------------------------------------------

    @staticmethod
    def _new_case(call: _Call, result: CallResult) -> NewCase:
        """The case of an answered call: what the caller gave, kept after its data policy."""
        from ..cases import NewCase

        return NewCase(
            tenant=call.tenant,
            case_id=call.call_id,
            kind="model_call",
            input=call.input,
            model=result.model,
            version=result.version,
            run_id=call.run_id,
            seq=call.seq,
            call_id=call.call_id,
            workflow=call.workflow,
            model_input_digest=call.digest,
        )

    def _start(
        self,
        model: str,
        input: Any,
        key: str | int | None,
        tenant: str,
        workflow: str | None,
        actor: str,
        timeout: float | None,
    ) -> tuple[_Call, Route]:
        if self._closed:
            raise DefinitionError("this gateway is closed")
        if (tenant, actor) not in self._callers:
            # Checked once per caller, here rather than when the records are written.
            check_tenant(tenant)
            if not isinstance(actor, str) or not 0 < len(actor) <= 200:
                raise DefinitionError("actor must be a string of 1 to 200 characters")
            self._callers.add((tenant, actor))
        route = self._routes.get(model)
        if route is None:
            route = self._routes.setdefault(model, Route(model))
        call = _Call(
            tenant=tenant,
            workflow=workflow,
            actor=actor,
            input=input,
            digest=input_digest(input),
            call_id=self._id_prefix + format(next(self._ids), "x"),
            timeout=route.timeout if timeout is None else timeout,
        )
        if key is not None:
            # One hash serves both: the sticky split point and the key's recorded digest
            # (salted by tenant and model, so digests cannot be matched across models).
            digest = key_hash(tenant, model, str(key))
            call.key_digest = digest[:16].hex()
            call.key_point = bucket_of(digest)
        return call, route

    @staticmethod
    def _govern_by_policy(call: _Call, role: str, classification: str, bypass: str | None) -> None:
        if bypass is not None and (not isinstance(bypass, str) or not 0 < len(bypass) <= 200):
            raise DefinitionError(
                "bypass_policy is the reason for skipping it: 1 to 200 characters"
            )
        if not isinstance(classification, str) or not 0 < len(classification) <= 100:
            raise DefinitionError("classification must be a string of 1 to 100 characters")
        call.role, call.classification, call.bypass = role, classification, bypass

    def _clear(self, call: _Call, version: ModelVersion) -> tuple[Any, dict[str, Any] | None]:
        """The input this version may see, and the policy's decision to record with the
        call; raises ModelAccessDeniedError (after recording) when the policy denies."""
        if call.bypass is not None:
            return call.input, {"bypassed": call.bypass}
        if self.gate is None:
            return call.input, None
        policy = self.gate.policy_for(version.name)
        if policy is None:
            return call.input, None
        from ..policy.model_call import ModelCallCheck, provider_of

        check = ModelCallCheck(
            tenant=call.tenant,
            actor=call.actor,
            role=call.role,
            model=version.name,
            version=version.version,
            flavor=version.flavor,
            provider=provider_of(version.flavor, version.config, version.tags),
            classification=call.classification,
            workflow=call.workflow,
            certified_threshold=self._threshold(call.tenant, version.name, version.version),
        )
        clearance = self.gate.clear(policy, check, call.input)
        return clearance.input, clearance.decision.to_record()

    def _govern(self, call: _Call, route: Route, model: str, key: str | int | None) -> CallResult:
        began = time.perf_counter()
        first, label = route.primary, "primary"
        shadow = route.shadow_target
        rollout = self.rollout_routes.get(call.tenant, model)
        if rollout is not None:
            # The rollout's step replaces the code's canary (and, in shadow, its shadow).
            candidate = Target(model, rollout.version)
            if rollout.share == 0:
                shadow = candidate
            else:
                point = random.random() * 100.0 if key is None else call.key_point
                if rollout.share >= 100 or point < rollout.share:
                    first, label = candidate, "canary"
        elif route.canary is not None and route.canary.percent > 0:
            point = random.random() * 100.0 if key is None else call.key_point
            if point < route.canary.percent:
                first, label = route.canary_target or first, "canary"
        try:
            answer = self._stage(call, route, first, label)
            for index, (target, below) in enumerate(route.cascade_targets, 1):
                confidence = answer.prediction.confidence
                if confidence is not None and confidence >= below:
                    break
                try:
                    answer = self._stage(call, route, target, f"cascade:{index}")
                except AevosError as exc:
                    if isinstance(exc, _FINAL) and not isinstance(exc, ModelAccessDeniedError):
                        raise
                    # The escalation failed: the lower stage's answer still stands.
                    break
        finally:
            if shadow is not None and shadow != first:
                self._shadow(call, route, shadow)
        return CallResult(
            prediction=answer.prediction,
            model=answer.version.name,
            version=answer.version.version,
            route=answer.route,
            latency_ms=(time.perf_counter() - began) * 1000.0,
            input_digest=call.digest,
            call_id=call.call_id,
            attempts=len(call.records),
            certified_threshold=self._threshold(
                call.tenant, answer.version.name, answer.version.version
            ),
        )

    def _stage(self, call: _Call, route: Route, target: Target, label: str) -> _Answer:
        """One target, then the route's fallbacks in order if it failed."""
        answer = self._attempt(call, route, target, label)
        if isinstance(answer, _Answer):
            return answer
        if isinstance(answer, _FINAL) or _final_limit(answer):
            raise answer
        for index, fallback in enumerate(route.fallback_targets, 1):
            if fallback == target:
                continue
            other = self._attempt(call, route, fallback, f"fallback:{index}")
            if isinstance(other, _Answer):
                return other
            if isinstance(other, ModelAccessDeniedError):
                continue  # this caller may not use that fallback; the next one may answer
            if isinstance(other, _FINAL) or _final_limit(other):
                raise other
        raise answer

    def _attempt(
        self, call: _Call, route: Route, target: Target, label: str
    ) -> _Answer | AevosError:
        """One model call, governed and recorded; the answer, or the error it ended in."""
        started = time.perf_counter()
        version: ModelVersion | None = None
        reserved: Reservation = []
        prediction: Prediction | None = None
        policy: dict[str, Any] | None = None
        try:
            version, adapter = self._resolve(call.tenant, target)
            model_input, policy = self._clear(call, version)
            if policy is not None and policy.get("allowed") is False:
                raise ModelAccessDeniedError(
                    f"policy {policy['policy']} v{policy['version']} denies this call to "
                    f"{version.ref} (rule {policy['rule']}): {policy['reason']}",
                    policy=f"{policy['policy']}@{policy['version']}",
                    decision_id=policy["decision_id"],
                )
            breaker = self.breakers.get(call.tenant, version.name, version.version)
            if not breaker.allow():
                raise CircuitOpenError(
                    f"the circuit breaker of {version.ref} is open (after repeated failures); "
                    f"next trial in {breaker.retry_after():.1f}s",
                    version_ref=version.ref,
                )
            scopes = self.budgets.scopes(call.tenant, call.workflow, version.name)
            if scopes:
                try:
                    reserved = self.budgets.reserve(scopes, route, version.name, time.time())
                except BaseException:
                    breaker.cancel()
                    raise
            try:
                prediction = self._invoke(adapter, model_input, call.timeout, version)
            except _FINAL:
                breaker.cancel()  # the caller's input, not the model's fault
                raise
            except BaseException:
                breaker.failure()
                raise
            breaker.success()
        except AevosError as exc:
            # A call that never answered is settled at nothing spent but the call itself,
            # except a timeout: the model may still be running (and billing) it.
            if reserved and not isinstance(exc, ModelTimeoutError):
                self.budgets.release(reserved)
            self._record(call, target, version, label, started, None, exc, policy)
            return exc
        if reserved:
            used_tokens = (
                float((prediction.tokens_in or 0) + (prediction.tokens_out or 0))
                if prediction.tokens_in is not None or prediction.tokens_out is not None
                else None
            )
            self.budgets.settle(reserved, prediction.cost, used_tokens)
        self._record(call, target, version, label, started, prediction, None, policy)
        return _Answer(prediction, version, label)

    def _invoke(
        self, adapter: ModelAdapter, input: Any, timeout: float | None, version: ModelVersion
    ) -> Prediction:
        try:
            if timeout is None:
                prediction = adapter.predict(input)
            else:
                future = self._executor().submit(adapter.predict, input)
                try:
                    prediction = future.result(timeout=timeout)
                except FutureTimeout:
                    if future.done():
                        raise  # the adapter's own TimeoutError
                    # The thread cannot be stopped: it finishes in the background and its
                    # answer is discarded.
                    future.cancel()
                    raise ModelTimeoutError(
                        f"model {version.ref} did not answer within {timeout:g}s"
                    ) from None
        except AevosError:
            raise
        except TimeoutError as exc:
            raise ModelTimeoutError(f"model {version.ref} timed out") from exc
        except Exception as exc:
            # Only the type: a model's own message may quote its input.
            raise ModelCallError(f"model {version.ref} raised {type(exc).__name__}") from exc
        if not isinstance(prediction, Prediction):
            raise ModelCallError(
                f"model {version.ref} answered a {type(prediction).__name__}, not a Prediction"
            )
        return prediction

    def _resolve(self, tenant: str, target: Target) -> tuple[ModelVersion, ModelAdapter]:
        key = (tenant, target.model, target.ref)
        now = time.monotonic()
        hit = self._resolved.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        version = self.registry.get(target.model, target.ref, tenant=tenant)
        adapter = self.registry.load(version)
        self._resolved[key] = (now + self.resolve_ttl, version, adapter)
        return version, adapter

    def _threshold(self, tenant: str, model: str, version: int) -> float | None:
        key = (tenant, model, version)
        now = time.monotonic()
        hit = self._thresholds.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            with self.store.reading() as uow:
                _, threshold = uow.certifications.threshold(tenant, model, version)
        except StorageError as exc:
            # Not cached: the next call asks again. Until then nothing is certified, so
            # nothing is automated on a threshold this process could not read.
            log.warning("certified threshold of %s@%s unreadable: %s", model, version, exc.code)
            return None
        self._thresholds[key] = (now + self.certification_ttl, threshold)
        return threshold

    def _record(
        self,
        call: _Call,
        target: Target,
        version: ModelVersion | None,
        route: str,
        started: float,
        prediction: Prediction | None,
        error: AevosError | None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        record = CallRecord(
            call_id=call.call_id,
            tenant=call.tenant,
            actor=call.actor,
            model=target.model,
            version=None if version is None else version.version,
            ref=str(target.ref),
            route=route,
            outcome="ok" if error is None else error.code,
            input_digest=call.digest,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            workflow=call.workflow,
            run_id=call.run_id,
            seq=call.seq,
            key_digest=call.key_digest,
            policy=policy,
            flavor=None if version is None else version.flavor,
        )
        if prediction is not None:
            answered_by = prediction.extra.get("model")
            if isinstance(answered_by, str):
                record.response_model = answered_by[:200]
            record.confidence = prediction.confidence
            record.label = prediction.label
            record.tokens_in = prediction.tokens_in
            record.tokens_out = prediction.tokens_out
            record.cost = prediction.cost
            record.tool_calls = _tool_calls(prediction.extra.get("tool_calls"))
            record.streamed = prediction.extra.get("streamed") is True
        if error is not None:
            cause = error.__cause__ if error.__cause__ is not None else error
            record.error_type = f"{type(cause).__module__}.{type(cause).__qualname__}"
        call.records.append(record)

    # -- shadow and threads -------------------------------------------------------------------

    def _shadow(self, call: _Call, route: Route, target: Target) -> None:
        if not self._shadow_slots.acquire(blocking=False):
            self.shadow_dropped += 1
            return
        shadow = _Call(
            tenant=call.tenant,
            workflow=call.workflow,
            actor=call.actor,
            input=call.input,
            digest=call.digest,
            call_id=call.call_id,
            timeout=call.timeout,
            role=call.role,
            classification=call.classification,
            bypass=call.bypass,
            run_id=call.run_id,
            seq=call.seq,
            key_digest=call.key_digest,
        )

        def run() -> None:
            try:
                self._attempt(shadow, route, target, "shadow")
                self.recorder.add(shadow.records)
            finally:
                self._shadow_slots.release()

        try:
            pool = self._shadow_pool
            if pool is None:
                with self._lock:
                    if self._shadow_pool is None:
                        self._shadow_pool = ThreadPoolExecutor(
                            self._shadow_workers, thread_name_prefix="aevos-shadow"
                        )
                    pool = self._shadow_pool
            pool.submit(run)
        except RuntimeError:  # shutting down
            self._shadow_slots.release()

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self._max_workers, thread_name_prefix="aevos-model"
                    )
                pool = self._pool
        return pool


def _tool_calls(value: Any) -> list[dict[str, str]] | None:
    """The tool calls an adapter reported, as recorded: short strings only, at most 32."""
    if not isinstance(value, list) or not value:
        return None
    keep = ("id", "name", "arguments_sha256")
    return [
        {k: str(c[k])[:128] for k in keep if isinstance(c.get(k), str)}
        for c in value[:32]
        if isinstance(c, dict)
    ]


def _final_limit(error: AevosError) -> bool:
    """A tenant or workflow limit refuses every target alike; a model's own does not."""
    return isinstance(error, (LimitExceededError, UndeclaredCostError)) and (
        ":model:" not in f":{error.scope}"
    )
