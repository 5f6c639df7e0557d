"""The governed model gateway: routing (canary, shadow, cascade, fallbacks, timeouts), the
circuit breaker, bad input, call records, and calls as durable workflow steps.

The models are small deterministic flavors registered here, behind the real registry and
the real audit log, on both backends.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from aevos import Aevos, StepContext, WorkflowContext
from aevos.audit import AuditRecord
from aevos.errors import (
    BudgetExceededError,
    CircuitOpenError,
    DefinitionError,
    ModelCallError,
    ModelInputError,
    ModelNotFoundError,
    ModelTimeoutError,
    RunFailedError,
    SerializationError,
    StepFailedError,
)
from aevos.models import flavors
from aevos.models.breaker import BreakerConfig, BreakerState, CircuitBreaker
from aevos.models.gateway import CallResult, Gateway, rebuild_error
from aevos.models.recorder import input_digest
from aevos.models.registry import ModelRegistry
from aevos.models.routing import Canary, Cascade, Route, Target, bucket
from aevos.models.types import ModelVersion, Prediction

# -- test flavors ----------------------------------------------------------------------------

# Model behaviour switched by tests, by the version's config "switch" name.
SWITCH: dict[str, str] = {}
CALLS: dict[str, int] = {}
_calls_lock = threading.Lock()


@dataclass
class _Model:
    config: Mapping[str, Any]
    flavor: str = "gwt"

    def predict(self, input: Any) -> Prediction:
        config = self.config
        name = str(config.get("name", "?"))
        with _calls_lock:
            CALLS[name] = CALLS.get(name, 0) + 1
        mode = SWITCH.get(name, config.get("mode", "ok"))
        if mode == "fail":
            # A message quoting the input: the gateway must not pass it on.
            raise RuntimeError(f"boom on {input!r}")
        if mode == "slow":
            time.sleep(float(config.get("seconds", 1.0)))
        if config.get("strict") and not isinstance(input, str):
            raise ModelInputError(f"input must be a string, got {type(input).__name__}")
        confidence = config.get("confidence")
        if confidence is None and isinstance(input, dict):
            confidence = input.get("confidence")  # the test decides how sure the model is
        return Prediction(
            label=config.get("label", name),
            confidence=confidence,
            output={"model": name},
            tokens_in=config.get("tokens_in"),
            tokens_out=config.get("tokens_out"),
            cost=config.get("cost"),
        )


flavors.register_flavor("gwt", lambda artifact, config, trusted: _Model(config))


def _register(
    registry: ModelRegistry,
    model: str,
    *,
    aliases: tuple[str, ...] = ("champion",),
    tenant: str = "default",
    **config: Any,
) -> ModelVersion:
    config.setdefault("name", model)  # the key of SWITCH and CALLS
    artifact = json.dumps(config, sort_keys=True).encode()
    return registry.register(
        model, artifact, flavor="gwt", config=config, aliases=aliases, tenant=tenant
    )


@dataclass
class Env:
    app: Aevos
    registry: ModelRegistry
    gateway: Gateway

    def make(self, **options: Any) -> Gateway:
        """Another gateway on the same store (e.g. with other breaker settings)."""
        options.setdefault("flush_interval", 0.05)
        gateway = Gateway(self.app.store, self.registry, self.app.audit, **options)
        self._extra.append(gateway)
        return gateway

    def records(self, tenant: str = "default", **filters: Any) -> list[AuditRecord]:
        return [
            r
            for r in self.app.audit.query(tenant, action="model.called", limit=100_000)
            if all(r.data.get(k) == v for k, v in filters.items())
        ]

    def __post_init__(self) -> None:
        self._extra: list[Gateway] = []


@pytest.fixture
def env(app: Aevos) -> Iterator[Env]:
    SWITCH.clear()
    CALLS.clear()
    registry = ModelRegistry(app.store, app.audit)
    gateway = Gateway(app.store, registry, app.audit, flush_interval=0.05)
    environment = Env(app, registry, gateway)
    yield environment
    for extra in environment._extra:
        extra.close()
    gateway.close()


# -- routing ---------------------------------------------------------------------------------


def test_canary_takes_its_share_sticky_per_key(env: Env) -> None:
    _register(env.registry, "intent", label="v1")
    _register(env.registry, "intent", label="v2", aliases=("challenger",))
    env.gateway.route("intent", canary=Canary("challenger", percent=10))

    first: dict[str, str] = {}
    for i in range(5000):
        result = env.gateway.predict("intent", "text", key=f"customer-{i}")
        first[f"customer-{i}"] = result.route
        assert (result.route, result.version) in (("primary", 1), ("canary", 2))
    share = sum(route == "canary" for route in first.values()) / 5000
    assert 0.08 <= share <= 0.12, share

    for i in range(0, 5000, 7):  # the same key always reaches the same version
        assert (
            env.gateway.predict("intent", "other text", key=f"customer-{i}").route
            == first[f"customer-{i}"]
        )
    # Without a key the split is random, at the same share.
    unkeyed = [env.gateway.predict("intent", "text").route for _ in range(2000)]
    assert 0.06 <= unkeyed.count("canary") / 2000 <= 0.14


def test_bucket_is_stable_and_uniform() -> None:
    assert bucket("t", "m", "k") == bucket("t", "m", "k")
    assert bucket("t", "m", "k") != bucket("other", "m", "k")
    points = [bucket("t", "m", str(i)) for i in range(20_000)]
    assert all(0.0 <= p < 100.0 for p in points)
    assert 0.09 <= sum(p < 10 for p in points) / len(points) <= 0.11


def test_shadow_is_recorded_and_never_returned(env: Env) -> None:
    _register(env.registry, "intent", label="champion-answer")
    _register(env.registry, "intent", label="challenger-answer", aliases=("challenger",))
    env.gateway.route("intent", shadow="challenger")

    results = [env.gateway.predict("intent", f"text {i}") for i in range(50)]
    assert {r.label for r in results} == {"champion-answer"}
    assert {(r.route, r.version) for r in results} == {("primary", 1)}

    env.gateway.close()  # waits for the shadow calls, then writes every record
    shadows = env.records(route="shadow")
    assert len(shadows) == 50
    assert {(s.data["version"], s.data["outcome"], s.data["label"]) for s in shadows} == {
        (2, "ok", "challenger-answer")
    }
    # Each shadow record shares its call's id and input digest.
    primaries = {r.data["call_id"]: r for r in env.records(route="primary")}
    for shadow in shadows:
        assert shadow.data["input_sha256"] == primaries[shadow.data["call_id"]].data["input_sha256"]


def test_shadow_failure_never_reaches_the_caller(env: Env) -> None:
    _register(env.registry, "intent", label="ok")
    _register(env.registry, "intent", name="broken-shadow", mode="fail", aliases=("challenger",))
    env.gateway.route("intent", shadow="challenger")
    assert env.gateway.predict("intent", "x").label == "ok"
    env.gateway.close()
    (shadow,) = env.records(route="shadow")
    assert shadow.data["outcome"] == "model_call_failed"


def test_cascade_escalates_only_below_the_threshold(env: Env) -> None:
    _register(env.registry, "cheap")
    _register(env.registry, "strong", confidence=0.99)
    env.gateway.route("cheap", cascade=[Cascade("strong", below_confidence=0.8)])

    sure = env.gateway.predict("cheap", {"confidence": 0.9})
    assert (sure.model, sure.route, sure.attempts) == ("cheap", "primary", 1)
    edge = env.gateway.predict("cheap", {"confidence": 0.8})  # at the threshold: not below
    assert edge.model == "cheap"
    unsure = env.gateway.predict("cheap", {"confidence": 0.5})
    assert (unsure.model, unsure.route, unsure.confidence, unsure.attempts) == (
        "strong",
        "cascade:1",
        0.99,
        2,
    )
    silent = env.gateway.predict("cheap", {"confidence": None})  # no confidence: escalate
    assert silent.model == "strong"
    assert CALLS == {"cheap": 4, "strong": 2}


def test_cascade_keeps_the_lower_answer_when_escalation_fails(env: Env) -> None:
    _register(env.registry, "cheap", confidence=0.3)
    _register(env.registry, "strong", mode="fail")
    env.gateway.route("cheap", cascade=[Cascade("strong", below_confidence=0.8)])
    result = env.gateway.predict("cheap", "x")
    assert (result.model, result.route, result.attempts) == ("cheap", "primary", 2)


def test_fallback_answers_when_the_primary_raises(env: Env) -> None:
    _register(env.registry, "primary-model", mode="fail")
    _register(env.registry, "backup", label="from-backup")
    env.gateway.route("primary-model", fallbacks=["backup"])

    result = env.gateway.predict("primary-model", "secret-input-text")
    assert (result.label, result.route, result.model) == ("from-backup", "fallback:1", "backup")
    env.gateway.flush()
    failed, answered = env.records()
    assert failed.data["outcome"] == "model_call_failed"
    assert failed.data["error_type"] == "builtins.RuntimeError"
    assert failed.subject == "model:primary-model@1"
    assert answered.data["route"] == "fallback:1" and answered.data["outcome"] == "ok"
    assert "secret-input-text" not in json.dumps([failed.data, answered.data])


def test_fallback_answers_when_the_primary_times_out(env: Env) -> None:
    _register(env.registry, "slow", mode="slow", seconds=1.0)
    _register(env.registry, "fast", label="fast")
    env.gateway.route("slow", timeout=0.1, fallbacks=["fast"])
    started = time.monotonic()
    result = env.gateway.predict("slow", "x")
    assert time.monotonic() - started < 0.8
    assert (result.label, result.route) == ("fast", "fallback:1")
    env.gateway.flush()
    assert [r.data["outcome"] for r in env.records()] == ["model_timeout", "ok"]


def test_errors_without_a_fallback_are_clear(env: Env) -> None:
    _register(env.registry, "broken", mode="fail")
    _register(env.registry, "slow", mode="slow", seconds=1.0)
    with pytest.raises(ModelCallError) as raised:
        env.gateway.predict("broken", "secret-input-text")
    assert raised.value.code == "model_call_failed"
    assert "secret-input-text" not in raised.value.message
    assert "broken@1" in raised.value.message
    assert isinstance(raised.value.__cause__, RuntimeError)  # in-process only
    with pytest.raises(ModelTimeoutError):
        env.gateway.predict("slow", "x", timeout=0.05)
    env.gateway.flush()
    assert [r.data["outcome"] for r in env.records()] == ["model_call_failed", "model_timeout"]


def test_bad_input_is_refused_without_fallback_or_breaker(env: Env) -> None:
    _register(env.registry, "strict", strict=True)
    _register(env.registry, "backup")
    env.gateway.route("strict", fallbacks=["backup"])
    for _ in range(5):
        with pytest.raises(ModelInputError):
            env.gateway.predict("strict", {"not": "a string"})
    assert CALLS == {"strict": 5}  # the fallback was never asked
    assert env.gateway.breaker_state("strict", 1) is BreakerState.CLOSED
    assert env.gateway.predict("strict", "fine").model == "strict"

    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        env.gateway.predict("nope", "x")
    with pytest.raises(ModelNotFoundError, match="no alias 'challenger'"):
        env.gateway.configure(Route("strict", alias="challenger"))
        env.gateway.predict("strict", "x")
    with pytest.raises(SerializationError):
        env.gateway.predict("backup", object())
    env.gateway.flush()
    outcomes = [r.data["outcome"] for r in env.records()]
    assert outcomes.count("model_input_invalid") == 5
    assert outcomes.count("model_not_found") == 2


def test_routes_are_validated() -> None:
    with pytest.raises(DefinitionError):
        Canary("challenger", percent=120)
    with pytest.raises(DefinitionError):
        Cascade("big", below_confidence=1.5)
    with pytest.raises(DefinitionError):
        Route("m", timeout=0)
    with pytest.raises(DefinitionError):
        Route("m", fallbacks=["@alias"])
    route = Route("m", shadow="challenger", fallbacks=["other@3", "x@beta"], canary=Canary(2, 5))
    assert route.shadow_target == Target("m", "challenger")
    assert route.fallback_targets == (Target("other", 3), Target("x", "beta"))
    assert route.canary_target == Target("m", 2)


def test_timeout_per_call_overrides_the_route(env: Env) -> None:
    _register(env.registry, "slow", mode="slow", seconds=0.3)
    env.gateway.route("slow", timeout=0.05)
    assert env.gateway.predict("slow", "x", timeout=2.0).model == "slow"


# -- the circuit breaker ---------------------------------------------------------------------


def test_breaker_opens_rejects_half_opens_and_closes(env: Env) -> None:
    gateway = env.make(breaker=BreakerConfig(cooldown=0.3))
    _register(env.registry, "flaky")
    _register(env.registry, "backup", label="backup")
    gateway.route("flaky", fallbacks=["backup"])

    SWITCH["flaky"] = "fail"
    for _ in range(3):  # three consecutive failures, each answered by the fallback
        assert gateway.predict("flaky", "x").route == "fallback:1"
    assert gateway.breaker_state("flaky", 1) is BreakerState.OPEN
    assert CALLS["flaky"] == 3

    # Open: rejected without calling the model; the fallback answers.
    result = gateway.predict("flaky", "x")
    assert result.route == "fallback:1"
    assert CALLS["flaky"] == 3

    time.sleep(0.35)  # cooldown over: one trial call
    SWITCH["flaky"] = "ok"
    assert gateway.breaker_state("flaky", 1) is BreakerState.HALF_OPEN
    assert gateway.predict("flaky", "x").route == "primary"
    assert gateway.breaker_state("flaky", 1) is BreakerState.CLOSED

    # A failed trial opens it again at once.
    SWITCH["flaky"] = "fail"
    for _ in range(3):
        gateway.predict("flaky", "x")
    time.sleep(0.35)
    gateway.predict("flaky", "x")  # the trial, failing
    assert gateway.breaker_state("flaky", 1) is BreakerState.OPEN
    calls = CALLS["flaky"]
    gateway.predict("flaky", "x")
    assert CALLS["flaky"] == calls

    gateway.flush()
    outcomes = [r.data["outcome"] for r in env.records(model="flaky")]
    assert outcomes[:5] == ["model_call_failed"] * 3 + ["circuit_open", "ok"]


def test_open_breaker_without_fallback_raises_circuit_open(env: Env) -> None:
    gateway = env.make(breaker=BreakerConfig(cooldown=30))
    _register(env.registry, "flaky", mode="fail")
    for _ in range(3):
        with pytest.raises(ModelCallError):
            gateway.predict("flaky", "x")
    with pytest.raises(CircuitOpenError) as raised:
        gateway.predict("flaky", "x")
    assert raised.value.version_ref == "flaky@1"


def test_breaker_failure_rate_rule() -> None:
    breaker = CircuitBreaker(BreakerConfig())
    # Never 3 in a row, but 3 of 5 calls within the window failed.
    for failed in (True, False, True, False):
        assert breaker.allow()
        breaker.failure() if failed else breaker.success()
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state.value == "open"
    assert not breaker.allow()


def test_breaker_window_forgets_old_failures() -> None:
    breaker = CircuitBreaker(BreakerConfig(window=0.3, consecutive_failures=10))
    for failed in (True, False, True, False):
        breaker.failure() if failed else breaker.success()
    time.sleep(0.35)
    breaker.failure()  # 1 failure in the window: 1 call < min_calls
    assert breaker.state is BreakerState.CLOSED


def test_half_open_allows_one_trial_at_a_time() -> None:
    breaker = CircuitBreaker(BreakerConfig(cooldown=0.0))
    for _ in range(3):
        breaker.failure()
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # a second caller meanwhile
    breaker.cancel()  # the trial was not made after all
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


# -- records ---------------------------------------------------------------------------------


def test_every_call_is_recorded_with_its_lineage(env: Env) -> None:
    _register(
        env.registry, "llm", tenant="acme", tokens_in=12, tokens_out=30, cost=0.002, confidence=0.7
    )
    _register(env.registry, "broken", tenant="acme", mode="fail")
    inputs = [{"text": f"hello {i}", "n": i} for i in range(40)]
    for item in inputs:
        env.gateway.predict("llm", item, tenant="acme", workflow="triage", actor="svc:api")
    for _ in range(3):
        with pytest.raises(ModelCallError):
            env.gateway.predict("broken", "x", tenant="acme")
    env.gateway.flush()
    records = env.records("acme")
    assert len(records) == 43
    record = records[0]
    expected = hashlib.sha256(
        json.dumps(inputs[0], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert record.data["input_sha256"] == expected == input_digest(inputs[0])
    assert record.subject == "model:llm@1" and record.actor == "svc:api"
    assert {**record.data, "latency_ms": 0, "call_id": ""} == {
        "call_id": "",
        "model": "llm",
        "version": 1,
        "ref": "champion",
        "route": "primary",
        "outcome": "ok",
        "input_sha256": expected,
        "latency_ms": 0,
        "confidence": 0.7,
        "label": "llm",
        "tokens_in": 12,
        "tokens_out": 30,
        "cost": 0.002,
        "workflow": "triage",
    }
    assert "hello" not in json.dumps([r.data for r in records])  # digests, never inputs
    assert [r.data["outcome"] for r in records[-3:]] == ["model_call_failed"] * 3
    assert env.app.audit.verify("acme").ok

    stats = env.gateway.stats()
    assert stats[("acme", "llm@1", "primary", "ok")].calls == 40
    assert stats[("acme", "llm@1", "primary", "ok")].tokens == 40 * 42


def test_records_are_flushed_in_the_background(env: Env) -> None:
    _register(env.registry, "m")
    for _ in range(20):
        env.gateway.predict("m", "x")
    deadline = time.monotonic() + 5
    while len(env.records()) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(env.records()) == 20


def test_long_labels_are_recorded_by_digest(env: Env) -> None:
    _register(env.registry, "llm", label="a generated answer " * 20)
    env.gateway.predict("llm", "x")
    env.gateway.flush()
    (record,) = env.records()
    assert set(record.data["label"]) == {"sha256"}


# -- inside workflows ------------------------------------------------------------------------


def test_ctx_predict_is_durable_recorded_and_replayed(env: Env) -> None:
    app, gateway = env.app, env.gateway
    app.gateway = gateway  # ctx.predict calls through this gateway
    _register(env.registry, "intent", label="card_arrival", confidence=0.93)
    gateway.set_budget(tenant="default", calls=100)
    broken = {"after": True}

    @app.step()
    def act(ctx: StepContext, label: str) -> str:
        if broken["after"]:
            raise RuntimeError("downstream down")
        return f"routed to {label}"

    @app.workflow()
    def triage(ctx: WorkflowContext, text: str) -> dict[str, Any]:
        pred = ctx.predict("intent", text)
        return {"label": pred.label, "version": pred.version_ref, "done": act(ctx, pred.label)}

    handle = triage.start("my card has not arrived")
    worker = app.worker().start()
    try:
        with pytest.raises(RunFailedError):
            handle.result(timeout=10)
        broken["after"] = False
        app.resume(handle.run_id)  # replays: the model is not called again
        assert handle.result(timeout=10) == {
            "label": "card_arrival",
            "version": "intent@1",
            "done": "routed to card_arrival",
        }
    finally:
        worker.stop()
    assert CALLS == {"intent": 1}
    step = app.list_steps(handle.run_id)[0]
    assert step.name == "aevos.predict:intent" and step.status == "SUCCEEDED"
    recorded = CallResult.from_record(step.output)
    assert (recorded.label, recorded.version, recorded.route) == ("card_arrival", 1, "primary")
    assert "arrived" not in json.dumps(step.output)

    (record,) = env.records(route="primary")
    assert record.run_id == handle.run_id
    assert record.data["seq"] == 0 and record.data["workflow"] == triage.name
    assert record.actor == f"system:workflow/{triage.name}"
    usage = gateway.usage("tenant:default")
    gateway.close()
    usage = gateway.usage("tenant:default")
    assert usage is not None and usage.calls_used == 1


def test_ctx_predict_failure_is_recorded_and_raised(env: Env) -> None:
    app, gateway = env.app, env.gateway
    app.gateway = gateway  # ctx.predict calls through this gateway
    _register(env.registry, "broken", mode="fail")
    gateway.set_budget(tenant="default", workflow="wf-budget", calls=0)
    _register(env.registry, "fine")

    @app.workflow()
    def uses_broken(ctx: WorkflowContext) -> str:
        try:
            ctx.predict("broken", "x")
        except ModelCallError as exc:
            return exc.code
        return "no error"

    @app.workflow(name="wf-budget")
    def over_budget(ctx: WorkflowContext) -> str:
        return str(ctx.predict("fine", "x").label)

    assert uses_broken.run() == "model_call_failed"
    run = app.list_runs(workflow=uses_broken.name)[0]
    (step,) = app.list_steps(run.run_id)
    assert step.status == "FAILED" and step.error is not None
    assert step.error["code"] == "model_call_failed"
    (record,) = app.audit.query("default", run_id=run.run_id)
    assert record.data["outcome"] == "model_call_failed"

    with pytest.raises(BudgetExceededError, match="workflow:default/wf-budget"):
        over_budget.run()
    assert CALLS.get("fine") is None


def test_recorded_errors_are_rebuilt_as_the_same_class() -> None:
    error = rebuild_error({"code": "budget_exceeded", "message": "budget x exhausted"}, "s", 3)
    assert isinstance(error, BudgetExceededError) and error.message == "budget x exhausted"
    assert isinstance(
        rebuild_error({"code": "model_timeout", "message": "m"}, "s", 3), TimeoutError
    )
    unknown = rebuild_error({"type": "builtins.ValueError", "message": "m"}, "s", 3)
    assert isinstance(unknown, StepFailedError)


def test_bad_callers_and_inputs_are_refused_up_front(env: Env) -> None:
    app, gateway = env.app, env.gateway
    app.gateway = gateway  # ctx.predict calls through this gateway
    _register(env.registry, "m")
    with pytest.raises(DefinitionError, match="tenant"):
        gateway.predict("m", "x", tenant="Not A Tenant!")
    with pytest.raises(DefinitionError, match="actor"):
        gateway.predict("m", "x", actor="")

    @app.workflow()
    def odd_input(ctx: WorkflowContext) -> str:
        try:
            ctx.predict("m", {1, 2})
        except SerializationError as exc:
            return exc.code
        return "accepted"

    assert odd_input.run() == "not_serializable"
    run = app.list_runs(workflow=odd_input.name)[0]
    (step,) = app.list_steps(run.run_id)
    assert step.status == "FAILED" and step.error is not None
    assert step.error["code"] == "not_serializable"
    assert CALLS == {}
