"""Budgets and rate limits of the gateway: reserved before each call, shared through the
database, exact under concurrency across processes, on both backends.

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
    RateLimitedError,
)
from aevos.models import flavors
from aevos.models.budget import Budget, Leasing, window_start
from aevos.models.gateway import Gateway
from aevos.models.registry import ModelRegistry
from aevos.models.types import Prediction

REPO = Path(__file__).resolve().parent.parent
# A window far longer than any test: one window for the whole test, wherever the clock is.
FOREVER = 1e9


class _Priced:
    """Answers at once, reporting the cost its config names."""

    flavor = "gwb"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.cost = config.get("cost")
        self.tokens = config.get("tokens")
        self.label = config.get("label", "ok")

    def predict(self, input: Any) -> Prediction:
        return Prediction(label=self.label, confidence=0.9, cost=self.cost, tokens_out=self.tokens)


flavors.register_flavor("gwb", lambda artifact, config, trusted: _Priced(config))


def _register(app: Aevos, name: str, tenant: str = "default", **config: Any) -> None:
    registry = ModelRegistry(app.store, app.audit)
    artifact = json.dumps(config, sort_keys=True).encode()
    registry.register(
        name, artifact, flavor="gwb", config=config, tenant=tenant, aliases=["champion"]
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

    @app.workflow(name="claims")
    def claims(ctx: WorkflowContext) -> str:
        return str(gw.predict_step(ctx, "m", "x").label)

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


# -- many processes --------------------------------------------------------------------------


def _hammer(url: str, kind: str, chunk: int | None, limit: int, threads: int) -> None:
    """One process: ``threads`` callers, each until refused; prints the count made."""
    app = Aevos(url)
    gw = _gateway(app, leasing=Leasing(chunk=chunk))
    gw.route("m", max_cost=0.01)
    if kind == "calls":
        gw.set_budget(tenant="default", calls=limit, window=FOREVER)
    else:
        gw.set_budget(tenant="default", cost=limit * 0.01, window=FOREVER)
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
    [("calls", 1, 300), ("cost", 1, 200), ("calls", None, 3000)],
    ids=["calls-per-call", "cost-per-call", "calls-leased"],
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
    assert {limit for r in results for limit in r["refused"]} == {kind}

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
