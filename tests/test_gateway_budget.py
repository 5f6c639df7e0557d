"""Budgets and rate limits of the gateway: reserved before each call, shared through the
database, exact under concurrency across processes, on both backends, whether a call's cost
is declared in advance or only estimated.

The two-process test runs this file as a script (``python tests/test_gateway_budget.py
hammer ...``): each process calls with 8 threads until refused, then reports its count.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from aevos import Aevos, WorkflowContext
from aevos.errors import (
    BudgetExceededError,
    DefinitionError,
    LimitExceededError,
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    UndeclaredCostError,
)
from aevos.models import flavors
from aevos.models.budget import Budget, Leasing, window_start
from aevos.models.gateway import Gateway, rebuild_error
from aevos.models.registry import ModelRegistry
from aevos.models.routing import Route
from aevos.models.types import Prediction

REPO = Path(__file__).resolve().parent.parent
# A window far longer than any test: one window for the whole test, wherever the clock is.
FOREVER = 1e9


class _Priced:
    """Answers at once, reporting the cost its config names (or raises, with ``fail``)."""

    flavor = "gwb"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.cost = config.get("cost")
        self.tokens = config.get("tokens")
        self.label = config.get("label", "ok")
        self.fail = bool(config.get("fail"))

    def predict(self, input: Any) -> Prediction:
        if self.fail:
            raise RuntimeError("the model is down")
        return Prediction(label=self.label, confidence=0.9, cost=self.cost, tokens_out=self.tokens)


class _Gate:
    """Holds every call inside the model until released, so that a test sees exactly which
    calls the budgets admitted while all of them were in flight (no timing involved)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.inside = 0
        self.refused = 0
        self._open = False

    def enter(self) -> None:
        with self._cond:
            self.inside += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open, timeout=60)

    def note_refused(self) -> None:
        with self._cond:
            self.refused += 1
            self._cond.notify_all()

    def wait_for_all(self, callers: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.inside + self.refused == callers, 60)

    def release(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


GATES: dict[str, _Gate] = {}


class _Gated(_Priced):
    """A priced model whose calls wait at the gate its config names."""

    flavor = "gwg"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.gate = GATES[str(config["gate"])]

    def predict(self, input: Any) -> Prediction:
        self.gate.enter()
        return super().predict(input)


flavors.register_flavor("gwb", lambda artifact, config, trusted: _Priced(config))
flavors.register_flavor("gwg", lambda artifact, config, trusted: _Gated(config))


def _register(
    app: Aevos, name: str, tenant: str = "default", flavor: str = "gwb", **config: Any
) -> None:
    registry = ModelRegistry(app.store, app.audit)
    artifact = json.dumps(config, sort_keys=True).encode()
    registry.register(
        name, artifact, flavor=flavor, config=config, tenant=tenant, aliases=["champion"]
    )


def _gateway(app: Aevos, **options: Any) -> Gateway:
    options.setdefault("flush_interval", 0.05)
    return Gateway(app.store, ModelRegistry(app.store, app.audit), app.audit, **options)


@pytest.fixture
def gateway(app: Aevos) -> Iterator[Gateway]:
    _register(app, "m", cost=0.01)
    gw = _gateway(app)
    yield gw
    gw.close()


# -- one process -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, None])
def test_calls_budget_is_exact(app: Aevos, chunk: int | None) -> None:
    _register(app, "m")
    gw = _gateway(app, leasing=Leasing(chunk=chunk))
    scope = gw.set_budget(tenant="default", calls=50, window=FOREVER)
    for _ in range(50):
        gw.predict("m", "x")
    with pytest.raises(BudgetExceededError) as raised:
        gw.predict("m", "x")
    assert (raised.value.scope, raised.value.limit) == ("tenant:default", "calls")
    assert "tenant:default" in raised.value.message and "calls limit 50" in raised.value.message
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and usage.calls_used == 50 and usage.calls_limit == 50


def test_cost_is_reserved_at_max_cost_and_settled_to_actual(app: Aevos) -> None:
    _register(app, "m", cost=0.01)
    gw = _gateway(app, leasing=Leasing(chunk=1))
    gw.route("m", max_cost=0.05)
    scope = gw.set_budget(tenant="default", cost=1.0, window=FOREVER)
    made = 0
    with pytest.raises(BudgetExceededError) as raised:
        while True:
            gw.predict("m", "x")
            made += 1
    assert raised.value.limit == "cost"
    # A call needs its whole max_cost free: 0.95 spent + 0.05 reserved is the last that fits.
    assert made == 96
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and math.isclose(usage.cost_used, 0.96, abs_tol=1e-9)


def test_tokens_budget(app: Aevos) -> None:
    _register(app, "llm", tokens=100)
    gw = _gateway(app)
    gw.route("llm", max_tokens=100)
    scope = gw.set_budget(tenant="default", tokens=1000, window=FOREVER)
    for _ in range(10):
        gw.predict("llm", "x")
    with pytest.raises(BudgetExceededError, match="tokens"):
        gw.predict("llm", "x")
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and usage.tokens_used == 1000


def test_rate_limit_per_tenant_rolls_with_its_window(app: Aevos) -> None:
    _register(app, "m")
    _register(app, "m", tenant="other")
    gw = _gateway(app)
    gw.set_rate_limit(tenant="default", calls=5, per=1.0)
    # Start at the beginning of a window, so five calls fit in it.
    time.sleep(math.ceil(time.time()) - time.time() + 0.01)
    for _ in range(5):
        gw.predict("m", "x")
    with pytest.raises(RateLimitedError) as raised:
        gw.predict("m", "x")
    assert raised.value.scope == "rate:tenant:default" and raised.value.code == "rate_limited"
    assert "5 calls per 1s" in raised.value.message
    for _ in range(10):  # another tenant is not limited
        gw.predict("m", "x", tenant="other")
    time.sleep(math.ceil(time.time()) - time.time() + 0.01)  # the next window
    gw.predict("m", "x")
    gw.close()


def test_budgets_per_workflow(app: Aevos) -> None:
    _register(app, "m")
    gw = _gateway(app)
    gw.set_budget(tenant="default", workflow="claims", calls=3, window=FOREVER)
    for _ in range(3):
        gw.predict("m", "x", workflow="claims")
    with pytest.raises(BudgetExceededError, match="workflow:default/claims"):
        gw.predict("m", "x", workflow="claims")
    gw.predict("m", "x", workflow="support")  # other workflows and plain calls are free
    gw.predict("m", "x")

    app.gateway = gw  # ctx.predict calls through this gateway

    @app.workflow(name="claims")
    def claims(ctx: WorkflowContext) -> str:
        return str(ctx.predict("m", "x").label)

    with pytest.raises(BudgetExceededError):
        claims.run()
    gw.close()


def test_a_models_own_budget_fails_over_to_the_fallback(app: Aevos) -> None:
    _register(app, "big", label="big")
    _register(app, "small", label="small")
    gw = _gateway(app)
    gw.route("big", fallbacks=["small"])
    gw.set_budget(tenant="default", model="big", calls=2, window=FOREVER)
    assert [gw.predict("big", "x").label for _ in range(4)] == ["big", "big", "small", "small"]
    gw.flush()
    outcomes = [
        r.data["outcome"] for r in app.audit.query("default", action="model.called", limit=100)
    ]
    assert outcomes == ["ok", "ok", "budget_exceeded", "ok", "budget_exceeded", "ok"]
    gw.close()


def test_all_scopes_reserve_together_or_not_at_all(app: Aevos) -> None:
    _register(app, "m")
    gw = _gateway(app, leasing=Leasing(chunk=1))
    tenant = gw.set_budget(tenant="default", calls=100, window=FOREVER)
    gw.set_budget(tenant="default", workflow="wf", calls=2, window=FOREVER)
    gw.predict("m", "x", workflow="wf")
    gw.predict("m", "x", workflow="wf")
    for _ in range(3):
        with pytest.raises(BudgetExceededError):
            gw.predict("m", "x", workflow="wf")
    gw.close()
    usage = gw.usage(tenant)
    assert usage is not None and usage.calls_used == 2  # refused calls took nothing


def test_reconfiguring_a_budget_moves_its_limits(app: Aevos) -> None:
    _register(app, "m")
    gw = _gateway(app)
    scope = gw.set_budget(tenant="default", calls=1, window=FOREVER)
    gw.predict("m", "x")
    with pytest.raises(LimitExceededError):
        gw.predict("m", "x")
    gw.set_budget(tenant="default", calls=2, window=FOREVER)
    gw.predict("m", "x")
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and (usage.calls_used, usage.calls_limit) == (2, 2)


def test_idle_leases_go_back_to_the_database(app: Aevos) -> None:
    _register(app, "m")
    gw = _gateway(app, leasing=Leasing(idle_return=0.1))
    scope = gw.set_budget(tenant="default", calls=10_000, window=FOREVER)
    for _ in range(300):  # fast enough for the lease to grow past one call
        gw.predict("m", "x")
    deadline = time.monotonic() + 5
    used = None
    while time.monotonic() < deadline:
        usage = gw.usage(scope)
        used = None if usage is None else usage.calls_used
        if used == 300:
            break
        time.sleep(0.05)
    assert used == 300
    scope_state = gw.budgets.get(scope)
    assert scope_state is not None and scope_state.leases < 300  # leased in chunks
    gw.close()


def test_budget_definitions_are_validated() -> None:
    with pytest.raises(DefinitionError):
        Budget()
    with pytest.raises(DefinitionError):
        Budget(calls=-1)
    with pytest.raises(DefinitionError):
        Budget(calls=1, window=0)
    with pytest.raises(DefinitionError):
        Leasing(chunk=0)


# -- costs not known in advance --------------------------------------------------------------
# A route without max_cost (the default) does not know a call's cost before it runs. Such a
# call once reserved nothing, so a $0.20 budget let 4 calls of $0.066 through one after the
# other, and any number at once.


def _outcomes(app: Aevos, gw: Gateway) -> list[str]:
    gw.flush()
    records = app.audit.query("default", action="model.called", limit=100)
    return [r.data["outcome"] for r in records]


@pytest.mark.parametrize("estimated_by", ["route", "budget"])
def test_a_cost_budget_refuses_an_undeclared_cost_and_reserves_an_estimate(
    app: Aevos, estimated_by: str
) -> None:
    _register(app, "llm", cost=0.066)
    _register(app, "rules")  # reports no cost
    gw = _gateway(app)
    scope = gw.set_budget(tenant="default", cost=0.20, window=FOREVER)
    with pytest.raises(UndeclaredCostError) as raised:
        gw.predict("llm", "x")
    error = raised.value
    assert (error.code, error.scope, error.limit, error.model) == (
        "cost_undeclared",
        "tenant:default",
        "cost",
        "llm",
    )
    assert "'llm'" in error.message and "tenant:default" in error.message
    assert "max_cost" in error.message and "cost_estimate" in error.message
    assert _outcomes(app, gw) == ["cost_undeclared"]  # recorded like any refusal
    usage = gw.usage(scope)
    assert usage is not None and (usage.calls_used, usage.cost_used) == (0, 0.0)

    if estimated_by == "route":
        gw.route("llm", cost_estimate=0.066)
    else:
        gw.set_budget(tenant="default", cost=0.20, cost_estimate=0.066, window=FOREVER)
    for _ in range(3):
        gw.predict("llm", "x")
    with pytest.raises(BudgetExceededError) as exhausted:
        gw.predict("llm", "x")
    assert exhausted.value.limit == "cost"
    gw.route("rules", max_cost=0)  # declared free: served from an exhausted cost budget
    assert gw.predict("rules", "x").label == "ok"
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and math.isclose(usage.cost_used, 3 * 0.066, abs_tol=1e-9)
    assert usage.cost_used <= 0.20
    outcomes = _outcomes(app, gw)
    assert outcomes == ["cost_undeclared", "ok", "ok", "ok", "budget_exceeded", "ok"]


def test_a_tokens_budget_reserves_the_estimate_and_settles_to_the_reported_tokens(
    app: Aevos,
) -> None:
    _register(app, "llm", tokens=100)
    gw = _gateway(app, leasing=Leasing(chunk=1))
    scope = gw.set_budget(tenant="default", tokens=1000, window=FOREVER)
    with pytest.raises(UndeclaredCostError) as raised:
        gw.predict("llm", "x")
    assert raised.value.limit == "tokens" and "tokens_estimate" in raised.value.message
    gw.route("llm", tokens_estimate=250)
    made = 0
    with pytest.raises(BudgetExceededError, match="tokens"):
        while True:
            gw.predict("llm", "x")
            made += 1
    # Each call reserves 250 and gives 150 back: 800 used + 250 no longer fits.
    assert made == 8
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and usage.tokens_used == 800


def test_an_estimate_that_runs_low_overshoots_by_that_calls_excess_then_refuses(
    app: Aevos,
) -> None:
    _register(app, "llm", cost=0.12)
    gw = _gateway(app)
    gw.route("llm", cost_estimate=0.05)
    scope = gw.set_budget(tenant="default", cost=0.20, window=FOREVER)
    gw.predict("llm", "x")  # reserves 0.05, costs 0.12
    gw.predict("llm", "x")  # 0.12 + 0.05 fits; costs 0.12: 0.24 spent
    for _ in range(3):  # over the limit: nothing more until the window rolls
        with pytest.raises(BudgetExceededError):
            gw.predict("llm", "x")
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and math.isclose(usage.cost_used, 0.24, abs_tol=1e-9)
    assert usage.cost_used <= 0.20 + (0.12 - 0.05) + 1e-9  # the documented bound


@pytest.mark.parametrize("chunk", [1, None])
@pytest.mark.parametrize(
    ("estimate", "admitted"),
    [(0.066, 3), (0.1, 2), (0.05, 4)],
    ids=["estimate-exact", "estimate-high", "estimate-low"],
)
def test_concurrent_calls_of_undeclared_cost_are_admitted_only_into_the_budget(
    app: Aevos, request: pytest.FixtureRequest, chunk: int | None, estimate: float, admitted: int
) -> None:
    limit, actual, callers = 0.20, 0.066, 8
    gate = GATES.setdefault(request.node.nodeid, _Gate())
    _register(app, "llm", flavor="gwg", cost=actual, gate=request.node.nodeid)
    gw = _gateway(app, leasing=Leasing(chunk=chunk))
    scope = gw.set_budget(tenant="default", cost=limit, cost_estimate=estimate, window=FOREVER)
    errors: list[Exception] = []

    def caller() -> None:
        try:
            gw.predict("llm", "x")
        except Exception as exc:
            errors.append(exc)
            gate.note_refused()

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        # Every call is now inside the model or refused: none has settled yet.
        gate.wait_for_all(callers)
        assert gate.inside == admitted
    finally:
        gate.release()
        for thread in threads:
            thread.join()
    assert all(isinstance(e, BudgetExceededError) and e.limit == "cost" for e in errors)
    assert len(errors) == callers - admitted
    with pytest.raises(BudgetExceededError):
        gw.predict("llm", "x")
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and math.isclose(usage.cost_used, admitted * actual, abs_tol=1e-9)
    # The guarantee: the limit, plus the excess of the calls in flight (none unless low).
    assert usage.cost_used <= limit + admitted * max(0.0, actual - estimate) + 1e-9
    if estimate >= actual:
        assert usage.cost_used <= limit


def test_a_failed_call_gives_its_estimate_back_and_a_timed_out_one_keeps_it(
    app: Aevos, request: pytest.FixtureRequest
) -> None:
    gate = GATES.setdefault(request.node.nodeid, _Gate())
    _register(app, "broken", fail=True)
    _register(app, "slow", flavor="gwg", cost=0.1, gate=request.node.nodeid)
    _register(app, "llm", cost=0.1)
    gw = _gateway(app)
    scope = gw.set_budget(tenant="default", cost=0.2, cost_estimate=0.1, window=FOREVER)
    try:
        for _ in range(3):
            with pytest.raises(ModelCallError):
                gw.predict("broken", "x")
        # The model may still be running, and billing: its estimate stays reserved.
        with pytest.raises(ModelTimeoutError):
            gw.predict("slow", "x", timeout=0.05)
        gw.predict("llm", "x")
        with pytest.raises(BudgetExceededError):
            gw.predict("llm", "x")
    finally:
        gate.release()
    gw.close()
    usage = gw.usage(scope)
    assert usage is not None and math.isclose(usage.cost_used, 0.2, abs_tol=1e-9)
    assert usage.calls_used == 5  # the calls are counted, failed or not


def test_a_models_own_undeclared_budget_fails_over_but_a_tenants_stops_the_call(
    app: Aevos,
) -> None:
    _register(app, "llm", label="llm", cost=0.05)
    _register(app, "rules", label="rules")
    gw = _gateway(app)
    gw.route("llm", fallbacks=["rules"])
    gw.set_budget(tenant="default", model="llm", cost=1.0, window=FOREVER)
    assert gw.predict("llm", "x").label == "rules"
    assert _outcomes(app, gw) == ["cost_undeclared", "ok"]
    gw.set_budget(tenant="default", cost=1.0, window=FOREVER)
    with pytest.raises(UndeclaredCostError) as raised:
        gw.predict("llm", "x")
    assert raised.value.scope == "tenant:default"  # the fallback would meet it too
    gw.close()
    replayed = rebuild_error(raised.value.to_dict(), "aevos.predict:llm", 0)
    assert isinstance(replayed, UndeclaredCostError)


def test_estimates_are_validated() -> None:
    with pytest.raises(DefinitionError, match="cost_estimate needs a cost limit"):
        Budget(calls=1, cost_estimate=0.1)
    with pytest.raises(DefinitionError, match="cost_estimate must be >= 0"):
        Budget(cost=1.0, cost_estimate=-0.1)
    with pytest.raises(DefinitionError, match="both max_cost and cost_estimate"):
        Route("m", max_cost=0.1, cost_estimate=0.05)
    with pytest.raises(DefinitionError, match="tokens_estimate must be >= 0"):
        Route("m", tokens_estimate=-1)


# -- many processes --------------------------------------------------------------------------


def _hammer(url: str, kind: str, chunk: int | None, limit: int, threads: int) -> None:
    """One process: ``threads`` callers, each until refused; prints the count made."""
    app = Aevos(url)
    gw = _gateway(app, leasing=Leasing(chunk=chunk))
    if kind == "calls":
        gw.route("m", max_cost=0.01)
        gw.set_budget(tenant="default", calls=limit, window=FOREVER)
    elif kind == "cost":
        gw.route("m", max_cost=0.01)
        gw.set_budget(tenant="default", cost=limit * 0.01, window=FOREVER)
    else:  # "estimated": the route declares no cost; the budget's estimate is reserved
        gw.set_budget(tenant="default", cost=limit * 0.01, cost_estimate=0.01, window=FOREVER)
    made = [0] * threads
    refused: list[str] = []

    def caller(index: int) -> None:
        while True:
            try:
                gw.predict("m", "x")
            except BudgetExceededError as exc:
                refused.append(exc.limit)
                return
            made[index] += 1

    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go", so both processes hammer at once
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    gw.close()
    app.close()
    print(json.dumps({"made": sum(made), "refused": refused}), flush=True)


@pytest.mark.parametrize(
    ("kind", "chunk", "limit"),
    # Leased in chunks, a few hundred calls would be over before the second process starts.
    [
        ("calls", 1, 300),
        ("cost", 1, 200),
        ("calls", None, 3000),
        ("estimated", 1, 200),
        ("estimated", None, 600),
    ],
    ids=["calls-per-call", "cost-per-call", "calls-leased", "estimated", "estimated-leased"],
)
def test_budget_hammered_from_two_processes_ends_exactly_at_its_limit(
    database_url: str, kind: str, chunk: int | None, limit: int
) -> None:
    app = Aevos(database_url)
    try:
        _register(app, "m", cost=0.01)
    finally:
        app.close()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "hammer",
        database_url,
        kind,
        str(chunk or 0),
        str(limit),
        "8",
    ]
    procs = [
        subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sum(r["made"] for r in results) == limit
    # Every caller of both processes ran until the shared budget refused it. (How the calls
    # split between the processes varies: SQLite's lock can favour one of them for a while.)
    assert [len(r["refused"]) for r in results] == [8, 8]
    assert {limit for r in results for limit in r["refused"]} == {
        "cost" if kind == "estimated" else kind
    }

    app = Aevos(database_url)
    try:
        gw = _gateway(app)
        usage = gw.budgets.ledger.usage("tenant:default", window_start(time.time(), FOREVER))
        assert usage is not None
        assert usage.calls_used == limit
        assert math.isclose(usage.cost_used, limit * 0.01, abs_tol=1e-9)
        records = app.audit.query("default", action="model.called", limit=10_000)
        assert sum(r.data["outcome"] == "ok" for r in records) == limit
        assert sum(r.data["outcome"] == "budget_exceeded" for r in records) == 16
        assert app.audit.verify("default").ok
        gw.close()
    finally:
        app.close()


if __name__ == "__main__" and sys.argv[1:2] == ["hammer"]:
    _url, _kind, _chunk, _limit, _threads = sys.argv[2:7]
    _hammer(_url, _kind, int(_chunk) or None, int(_limit), int(_threads))
