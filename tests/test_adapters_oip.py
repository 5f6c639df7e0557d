"""The ``oip`` flavor against a real Seldon MLServer on 127.0.0.1 (see mlserver_support):
the Open Inference Protocol's infer, ready and metadata endpoints, through the governed
gateway (canary, cascade, budgets, breaker, records) on both backends, and an MLServer that
is down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from aevos import Aevos
from aevos.errors import (
    BudgetExceededError,
    CircuitOpenError,
    DefinitionError,
    ModelCallError,
    ModelInputError,
)
from aevos.models.adapters.oip import OIPAdapter
from aevos.models.breaker import BreakerConfig, BreakerState
from aevos.models.flavors import load_adapter
from aevos.models.gateway import Gateway
from aevos.models.registry import ModelRegistry
from aevos.models.routing import Canary, Cascade
from mlserver_support import MLServer, mlserver_venv, running, write_models

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    with running(tmp_path_factory.mktemp("mlserver")) as server:
        yield server


def settings(server: MLServer, model: str = "iris", **more: Any) -> dict[str, Any]:
    return {
        "base_url": server.url,
        "model": model,
        "version": "v1",
        "features": FEATURES,
        "outputs": ["predict", "predict_proba"],
        "label_output": "predict",
        "proba_output": "predict_proba",
        **more,
    }


def register(registry: ModelRegistry, name: str, **config: Any) -> Any:
    return registry.register(name, b"", flavor="oip", config=config, aliases=("champion",))


def row(x: Any) -> dict[str, float]:
    return dict(zip(FEATURES, (float(v) for v in x), strict=True))


def test_infer_ready_and_metadata_speak_the_protocol(mlserver: MLServer) -> None:
    adapter = OIPAdapter(settings(mlserver))
    assert adapter.ready()
    meta = adapter.metadata()
    assert meta["name"] == "iris"
    X, y = load_iris(return_X_y=True)
    local = LogisticRegression(max_iter=1000).fit(X, y)  # what MLServer serves, trained alike
    body = adapter.request([row(X[0])])
    assert body["inputs"] == [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
    assert body["outputs"] == [{"name": "predict"}, {"name": "predict_proba"}]

    for i in (0, 60, 120):
        prediction = adapter.predict(row(X[i]))
        assert prediction.label == local.predict(X[i : i + 1])[0]
        assert prediction.confidence == pytest.approx(local.predict_proba(X[i : i + 1]).max())
        assert prediction.output["outputs"]["predict_proba"] == pytest.approx(
            local.predict_proba(X[i : i + 1])[0].tolist()
        )
        assert prediction.extra["model_name"] == "iris"
        assert prediction.extra["model_version"] == "v1"

    # A list is a row; a batch is one request of many rows.
    assert adapter.predict(list(X[0])).label == 0
    batch = adapter.batch_predict([list(x) for x in X])
    assert [p.label for p in batch] == local.predict(X).tolist()
    adapter.close()


def test_class_names_and_text_models(mlserver: MLServer) -> None:
    named = OIPAdapter(
        {
            **settings(mlserver),
            "outputs": ["predict_proba"],
            "label_output": None,
            "classes": CLASSES,
        }
    )
    X, _ = load_iris(return_X_y=True)
    assert [named.predict(list(X[i])).label for i in (0, 60, 120)] == CLASSES
    named.close()
    text = OIPAdapter({"base_url": mlserver.url, "model": "intent"})
    assert text.predict("my card never arrived").label == "card_arrival"
    assert [p.label for p in text.batch_predict(["refund it", "where is the card"])] == [
        "refund",
        "card_arrival",
    ]
    text.close()


def test_bad_input_and_wrong_models_are_clear_errors(mlserver: MLServer) -> None:
    adapter = OIPAdapter(settings(mlserver))
    with pytest.raises(ModelInputError, match="'petal_width' is missing"):
        adapter.predict(dict.fromkeys(FEATURES[:3], 1.0))
    with pytest.raises(ModelInputError, match="must be a finite number"):
        adapter.predict({**row([1, 2, 3, 4]), "sepal_width": float("nan")})
    with pytest.raises(ModelInputError, match="has 3 values; this model takes 4"):
        adapter.predict([1.0, 2.0, 3.0])
    with pytest.raises(ModelInputError, match="got int"):
        adapter.predict(7)
    small = OIPAdapter(settings(mlserver, max_batch=2))
    with pytest.raises(ModelInputError, match="exceed this model's max_batch of 2"):
        small.batch_predict([[1, 2, 3, 4]] * 3)
    small.close()
    missing = OIPAdapter(settings(mlserver, model="no-such-model"))
    with pytest.raises(ModelCallError, match=r"no-such-model@v1 at .* is not served there") as e:
        missing.predict([1, 2, 3, 4])
    assert (e.value.status, e.value.retryable) == (404, False)
    assert not missing.ready()
    missing.close()
    # The server rejects the row (MLServer answers 500 to the model's own ValueError): its
    # text quotes the input, so only the status reaches the caller.
    raw = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [9, 8, 7]}]}
    with pytest.raises(ModelCallError, match="failed with HTTP 500") as e:
        adapter.predict(raw)
    assert "9" not in e.value.message.split("HTTP 500")[1]
    with pytest.raises(ModelInputError, match=r"has 2 values for shape \[1, 3\]"):
        adapter.predict({"inputs": [{**raw["inputs"][0], "data": [1, 2]}]})
    adapter.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": "m"}, "'base_url' must be an http"),
        ({"base_url": "http://x"}, "'model' must name"),
        ({"base_url": "http://x", "model": "m", "datatype": "FP8"}, "'datatype' must be one"),
        ({"base_url": "http://x", "model": "m", "retries": 11}, r"'retries' must be .* \[0, 10\]"),
        ({"base_url": "http://x", "model": "m", "features": ["a", "a"]}, "distinct"),
        ({"base_url": "http://x", "model": "m", "api_key": "secret"}, "must not be stored"),
    ],
)
def test_settings_are_checked_at_load(config: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_adapter("oip", b"", config)
    with pytest.raises(DefinitionError, match="unknown oip setting"):
        load_adapter("oip", b'{"modle": "x"}', {"base_url": "http://x", "model": "m"})


@pytest.fixture
def gateway(app: Aevos) -> Iterator[tuple[ModelRegistry, Gateway]]:
    registry = ModelRegistry(app.store, app.audit)
    made = Gateway(
        app.store, registry, app.audit, flush_interval=0.05, breaker=BreakerConfig(cooldown=0.5)
    )
    yield registry, made
    made.close()
    registry.close()


def test_gateway_canary_cascade_budget_and_records(
    app: Aevos, mlserver: MLServer, gateway: tuple[ModelRegistry, Gateway]
) -> None:
    registry, gw = gateway
    X, _ = load_iris(return_X_y=True)
    register(registry, "iris", **settings(mlserver))
    registry.register(
        "iris",
        b"",
        flavor="oip",
        config=settings(mlserver, model="iris-tree"),
        aliases=("challenger",),
    )
    gw.route("iris", canary=Canary("challenger", percent=50))
    routes = {gw.predict("iris", row(X[i]), key=f"c-{i}").route for i in range(0, 150, 5)}
    assert routes == {"primary", "canary"}

    # Cascade: the shallow tree is unsure between versicolor and virginica; the logistic
    # regression answers those.
    register(registry, "tree", **settings(mlserver, model="iris-tree"))
    register(registry, "logreg", **settings(mlserver))
    gw.route("tree", cascade=[Cascade("logreg", below_confidence=0.95)])
    sure = gw.predict("tree", row(X[0]))
    assert (sure.model, sure.label, sure.confidence) == ("tree", 0, 1.0)
    tree = DecisionTreeClassifier(random_state=0, max_depth=2).fit(X, load_iris().target)
    doubt = next(i for i in range(150) if tree.predict_proba(X[i : i + 1]).max() < 0.95)
    unsure = gw.predict("tree", row(X[doubt]))
    assert (unsure.model, unsure.route) == ("logreg", "cascade:1")

    gw.set_budget(model="logreg", calls=1)
    gw.route("logreg")
    gw.predict("logreg", row(X[1]))
    with pytest.raises(BudgetExceededError):
        gw.predict("logreg", row(X[2]))

    gw.flush()
    records = app.audit.query("default", action="model.called", limit=1000)
    assert {r.data["outcome"] for r in records} == {"ok", "budget_exceeded"}
    ok = [r for r in records if r.data["model"] == "tree" and r.data["outcome"] == "ok"]
    assert ok and all(r.data["confidence"] is not None for r in ok)
    assert {r.data["label"] for r in ok} <= {0, 1, 2}


def test_mlserver_down_retries_opens_the_breaker_and_recovers(
    app: Aevos, tmp_path: Path, gateway: tuple[ModelRegistry, Gateway]
) -> None:
    registry, gw = gateway
    venv = mlserver_venv()
    write_models(venv, tmp_path)
    server = MLServer(venv, tmp_path)
    server.start()
    try:
        register(registry, "iris", **settings(server, retries=1))
        register(registry, "tree-backup", **settings(server, model="iris-tree"))
        gw.route("iris", fallbacks=["tree-backup"])
        assert gw.predict("iris", [5.1, 3.5, 1.4, 0.2]).route == "primary"
        server.stop()

        adapter = OIPAdapter(settings(server, retries=2))
        with pytest.raises(
            ModelCallError, match=r"cannot reach iris@v1 .*\(after 3 attempts\)"
        ) as e:
            adapter.predict([5.1, 3.5, 1.4, 0.2])
        assert e.value.retryable and e.value.status is None
        assert not adapter.ready()
        adapter.close()

        # Down: each call fails (and its fallback, on the same server, too), until the
        # breaker opens and refuses at once.
        for _ in range(3):
            with pytest.raises(ModelCallError):
                gw.predict("iris", [5.1, 3.5, 1.4, 0.2])
        assert gw.breaker_state("iris", 1) is BreakerState.OPEN
        with pytest.raises((CircuitOpenError, ModelCallError)):
            gw.predict("iris", [5.1, 3.5, 1.4, 0.2])

        server.start()  # back, on the same port, after the cooldown: a trial call
        assert gw.predict("iris", [5.1, 3.5, 1.4, 0.2]).label == 0
        assert gw.breaker_state("iris", 1) is BreakerState.CLOSED
    finally:
        server.stop()
    gw.flush()
    outcomes = [
        r.data["outcome"]
        for r in app.audit.query("default", action="model.called", limit=1000)
        if r.data["model"] == "iris"
    ]
    assert outcomes[0] == "ok" and outcomes[-1] == "ok"
    assert outcomes[1:4] == ["model_call_failed"] * 3 and "circuit_open" in outcomes
    assert json.dumps(outcomes)
