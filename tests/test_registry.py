"""The model registry, on both backends: content-addressed versions, cards, tags, aliases,
instant audited rollback, artifact integrity, safe loading and tenant isolation.

The scikit-learn model is real: TF-IDF + logistic regression trained on banking77.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from aevos import Aevos, WorkflowContext
from aevos.audit import AuditLog
from aevos.errors import (
    ArtifactIntegrityError,
    DefinitionError,
    InvalidArtifactError,
    ModelNotFoundError,
    NoPreviousVersionError,
    UnsafeArtifactError,
)
from aevos.models import ModelCard, Prediction, flavors
from aevos.models.artifact import dump_sklearn, is_pickle, is_skops, load_sklearn
from aevos.models.registry import ModelRegistry, card_from_dict, split_ref
from aevos.public_data import data_file
from aevos.storage import open_store
from aevos.storage.schema import blobs

DATA = data_file("banking77")
INTENTS = (
    "card_arrival",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "pin_blocked",
    "transfer_not_received_by_recipient",
)

# -- flavors the tests register (the real ones belong to the adapters) -------------------------

loads: list[bytes] = []
_loads_lock = threading.Lock()


@dataclass
class EchoAdapter:
    artifact: bytes
    config: Mapping[str, Any]
    flavor: str = "test-echo"

    def predict(self, input: Any) -> Prediction:
        return Prediction(label=self.artifact.decode(), output={"input": input, **self.config})


def _echo_loader(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> EchoAdapter:
    with _loads_lock:
        loads.append(artifact)
    time.sleep(0.05)  # a slow load: concurrent first calls overlap
    return EchoAdapter(artifact, config)


@dataclass
class SklearnAdapter:
    model: Any
    flavor: str = "test-sklearn"

    def predict(self, input: Any) -> Prediction:
        probabilities = self.model.predict_proba([input])[0]
        best = int(probabilities.argmax())
        return Prediction(label=self.model.classes_[best], confidence=float(probabilities[best]))


def _sklearn_loader(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> SklearnAdapter:
    return SklearnAdapter(load_sklearn(artifact, trusted=trusted))


flavors.register_flavor("test-echo", _echo_loader)
flavors.register_flavor("test-sklearn", _sklearn_loader)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def registry(app: Aevos) -> ModelRegistry:
    loads.clear()
    return ModelRegistry(app.store, app.audit)


def _rows(name: str, per_intent: int) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    counts = dict.fromkeys(INTENTS, 0)
    with (DATA / name).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            intent = row["category"]
            if intent in counts and counts[intent] < per_intent:
                counts[intent] += 1
                texts.append(row["text"])
                labels.append(intent)
    return texts, labels


@pytest.fixture(scope="module")
def banking_model() -> Any:
    """A TF-IDF + logistic regression pipeline on 300 real banking77 rows (50 per intent)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = _rows("train.csv", 50)
    assert len(texts) == 300
    model = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=1000))
    return model.fit(texts, labels)


def _actions(app: Aevos, tenant: str = "default") -> list[str]:
    return [r.action for r in app.audit.query(tenant)]


# -- registration ------------------------------------------------------------------------------


def test_register_get_and_card_round_trip(registry: ModelRegistry) -> None:
    card = ModelCard(
        intended_use="route support tickets",
        owner="support-ml",
        metrics={"accuracy": 0.91, "macro_f1": 0.88},
        training_data="banking77/train.csv sha256:abc",
        training_run_id="run-123",
        limitations="English only",
    )
    first = registry.register(
        "intent",
        b"model-one",
        flavor="test-echo",
        config={"threshold": 0.5, "labels": ["a", "b"]},
        card=card,
        signature={"input": "str"},
        tags={"team": "support"},
        created_by="alice",
    )
    assert (first.ref, first.version, first.tenant) == ("intent@1", 1, "default")
    assert first.digest == hashlib.sha256(b"model-one").hexdigest()
    assert first.created_by == "alice" and first.created_at <= time.time()
    second = registry.register("intent", b"model-two", flavor="test-echo")
    assert second.version == 2 and second.card == ModelCard() and second.tags == {}

    got = registry.get("intent", 1)
    assert got == first
    assert got.card == card and got.card.metrics == {"accuracy": 0.91, "macro_f1": 0.88}
    assert got.config == {"threshold": 0.5, "labels": ["a", "b"]}
    assert got.signature == {"input": "str"} and got.tags == {"team": "support"}
    assert registry.get("intent", "1") == first
    assert registry.get("intent", "latest") == second
    assert [v.version for v in registry.versions("intent")] == [1, 2]
    assert registry.names() == ["intent"]
    assert registry.artifact(first) == b"model-one"


def test_identical_registration_returns_the_existing_version(
    registry: ModelRegistry, app: Aevos
) -> None:
    one = registry.register("m", b"bytes", flavor="test-echo", config={"a": 1, "b": 2})
    # The same artifact, flavor and config (key order does not matter): the same version,
    # whatever card or tags come with it: versions are immutable.
    again = registry.register(
        "m", b"bytes", flavor="test-echo", config={"b": 2, "a": 1}, tags={"x": "y"}
    )
    assert again == one
    assert registry.register("m", b"bytes", flavor="test-echo", config={"a": 2}).version == 2
    assert registry.register("m", b"bytes", flavor="test-echo2").version == 3
    assert (
        registry.register("m", b"other", flavor="test-echo", config={"a": 1, "b": 2}).version == 4
    )
    assert _actions(app) == ["model.registered"] * 4
    with app.store._tx() as conn:
        refs = conn.execute(sa.select(blobs.c.ref)).scalars().all()
    # Bytes are stored once per content, however many versions share them.
    assert sorted(refs) == sorted({hashlib.sha256(b).hexdigest() for b in (b"bytes", b"other")})


def test_concurrent_registrations_get_distinct_numbers(
    registry: ModelRegistry, database_url: str, app: Aevos
) -> None:
    # Half the threads on a second store: another process's engine and connections.
    other_store = open_store(database_url)
    other = ModelRegistry(other_store, AuditLog(other_store))
    results: dict[bytes, int] = {}
    same: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        target = registry if index % 2 else other
        try:
            barrier.wait()
            for n in range(4):
                artifact = f"artifact-{index}-{n}".encode()
                version = target.register("busy", artifact, flavor="test-echo").version
                shared = target.register("busy", b"shared", flavor="test-echo").version
                with lock:
                    results[artifact] = version
                    same.append(shared)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other_store.close()
    assert not errors, errors
    versions = registry.versions("busy")
    # 32 distinct artifacts + the shared one, registered 32 times: 33 versions, no gaps.
    assert [v.version for v in versions] == list(range(1, 34))
    assert len(set(same)) == 1
    by_digest = {v.digest: v.version for v in versions}
    assert all(by_digest[hashlib.sha256(a).hexdigest()] == n for a, n in results.items())
    assert app.audit.verify("default").ok
    assert _actions(app).count("model.registered") == 33


# -- aliases and rollback ----------------------------------------------------------------------


def test_aliases_move_and_roll_back_instantly(registry: ModelRegistry, app: Aevos) -> None:
    for n in (1, 2, 3):
        registry.register("intent", f"v{n}".encode(), flavor="test-echo")
    registry.set_alias("intent", "champion", 1, by="alice")
    registry.set_alias("intent", "champion", 2, by="alice")
    registry.set_alias("intent", "challenger", 3, by="bob")
    assert registry.aliases("intent") == {"challenger": 3, "champion": 2}
    assert registry.get("intent").version == 2  # "champion" is the default ref
    assert registry.get("intent", "challenger").version == 3

    registry.set_alias("intent", "champion", 3, by="carol")
    (challenger, champion) = registry.alias_details("intent")
    assert (champion.version, champion.previous_version, champion.updated_by) == (3, 2, "carol")
    assert (challenger.version, challenger.previous_version) == (3, None)

    # The version rolled back to was serving before: its adapter is still loaded.
    assert registry.load(registry.get("intent", 2)).predict(None).label == "v2"
    assert registry.load(registry.get("intent", 3)).predict(None).label == "v3"
    assert len(loads) == 2
    started = time.perf_counter()
    back = registry.rollback("intent", by="dave")
    elapsed = time.perf_counter() - started
    assert back.version == 2 and registry.get("intent", "champion").version == 2
    assert registry.load(registry.get("intent")).predict(None).label == "v2"
    assert len(loads) == 2  # nothing was loaded: rolling back touched no artifact
    assert elapsed < 1.0

    # A second rollback does not flip back to the version just rolled back from.
    with pytest.raises(NoPreviousVersionError, match=r"points at version 2 and has no previous"):
        registry.rollback("intent", by="dave")
    assert registry.get("intent").version == 2
    with pytest.raises(NoPreviousVersionError):
        registry.rollback("intent", "challenger")

    records = [r for r in app.audit.query("default") if r.action != "model.registered"]
    assert [(r.action, r.actor, r.subject) for r in records] == [
        ("model.alias_moved", "alice", "model:intent@1"),
        ("model.alias_moved", "alice", "model:intent@2"),
        ("model.alias_moved", "bob", "model:intent@3"),
        ("model.alias_moved", "carol", "model:intent@3"),
        ("model.rolled_back", "dave", "model:intent@2"),
    ]
    assert records[1].data == {
        "model": "intent",
        "version": 2,
        "alias": "champion",
        "previous_version": 1,
    }
    assert records[-1].data == {
        "model": "intent",
        "version": 2,
        "alias": "champion",
        "from_version": 3,
    }
    assert app.audit.verify("default").ok


def test_promote_register_with_aliases_and_no_op_moves(registry: ModelRegistry, app: Aevos) -> None:
    registry.register("m", b"1", flavor="test-echo", aliases=["champion"], created_by="ci")
    registry.register("m", b"2", flavor="test-echo", aliases=["challenger"], created_by="ci")
    promoted = registry.promote("m", 2, by="approver")
    assert promoted.version == 2 and registry.aliases("m") == {"champion": 2, "challenger": 2}
    before = len(_actions(app))
    registry.set_alias("m", "champion", 2)  # already there: nothing changes, nothing recorded
    registry.register("m", b"2", flavor="test-echo", aliases=["challenger"])
    assert len(_actions(app)) == before
    assert _actions(app) == [
        "model.registered",
        "model.alias_moved",
        "model.registered",
        "model.alias_moved",
        "model.promoted",
    ]
    assert registry.rollback("m", by="oncall").version == 1


def test_alias_and_ref_errors_name_what_exists(registry: ModelRegistry) -> None:
    for n in (1, 2, 3):
        registry.register("intent", f"v{n}".encode(), flavor="test-echo")
    registry.set_alias("intent", "champion", 2)
    registry.register("other", b"o", flavor="test-echo")
    with pytest.raises(DefinitionError, match="'latest' is reserved"):
        registry.set_alias("intent", "latest", 1)
    for bad in ("Champion", "1st", "", "a b", "x" * 101):
        with pytest.raises(DefinitionError, match="must match"):
            registry.set_alias("intent", bad, 1)
    with pytest.raises(ModelNotFoundError, match=r"'intent' has no version 7 \(versions: 1\.\.3\)"):
        registry.set_alias("intent", "champion", 7)
    with pytest.raises(ModelNotFoundError, match=r"no version 9 \(versions: 1\.\.3\)"):
        registry.get("intent", 9)
    with pytest.raises(ModelNotFoundError) as missing_alias:
        registry.get("intent", "challenger")
    assert missing_alias.value.code == "model_not_found"
    assert "no alias 'challenger' (aliases: champion -> 2; versions: 1..3" in str(
        missing_alias.value
    )
    with pytest.raises(ModelNotFoundError, match=r"no alias 'canary'"):
        registry.rollback("intent", "canary")
    with pytest.raises(
        ModelNotFoundError,
        match=r"no model 'intnet' in tenant 'default' \(its models: intent, other\)",
    ):
        registry.get("intnet")
    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        registry.versions("nope")
    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        registry.aliases("nope")
    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        registry.rollback("nope")
    with pytest.raises(DefinitionError, match="positive integer"):
        registry.set_alias("intent", "champion", 0)


def test_bad_names_flavors_tags_and_cards_are_refused(registry: ModelRegistry) -> None:
    for name in ("", "a b", "x@1", "-x", "a/b", "x" * 201):
        with pytest.raises(DefinitionError, match="model name"):
            registry.register(name, b"x", flavor="test-echo")
    with pytest.raises(DefinitionError, match="flavor 'Sk Learn'"):
        registry.register("m", b"x", flavor="Sk Learn")
    with pytest.raises(DefinitionError, match="tenant"):
        registry.register("m", b"x", flavor="test-echo", tenant="Acme Corp")
    with pytest.raises(DefinitionError, match="tag 'k' must have a string value"):
        registry.register("m", b"x", flavor="test-echo", tags={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(DefinitionError, match="metrics must map"):
        registry.register("m", b"x", flavor="test-echo", card=ModelCard(metrics={"acc": "high"}))  # type: ignore[dict-item]
    with pytest.raises(DefinitionError, match="an artifact is bytes"):
        registry.register("m", "text", flavor="test-echo")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match=r"unknown model card field\(s\) accuracy"):
        card_from_dict({"owner": "x", "accuracy": 0.9})
    assert registry.names() == []
    assert split_ref("intent@champion") == ("intent", "champion")
    assert split_ref("intent@3") == ("intent", 3)
    assert split_ref("intent") == ("intent", "latest")
    with pytest.raises(DefinitionError):
        split_ref("intent@")


# -- tags --------------------------------------------------------------------------------------


def test_tags_are_mutable_metadata(registry: ModelRegistry, app: Aevos) -> None:
    first = registry.register("m", b"1", flavor="test-echo", tags={"team": "a", "stage": "dev"})
    updated = registry.set_tags("m", 1, {"stage": "prod", "ticket": "OPS-1"}, by="alice")
    assert updated.tags == {"team": "a", "stage": "prod", "ticket": "OPS-1"}
    removed = registry.remove_tags("m", 1, ["team", "absent"], by="bob")
    assert removed.tags == {"stage": "prod", "ticket": "OPS-1"}
    stored = registry.get("m", 1)
    assert stored.tags == removed.tags
    # Everything else about the version is immutable.
    assert (stored.digest, stored.card, stored.created_at) == (
        first.digest,
        first.card,
        first.created_at,
    )
    tagged = [r for r in app.audit.query("default") if r.action == "model.tagged"]
    assert [(r.actor, r.data["set"], r.data["removed"]) for r in tagged] == [
        ("alice", {"stage": "prod", "ticket": "OPS-1"}, []),
        ("bob", {}, ["team"]),
    ]
    with pytest.raises(ModelNotFoundError, match="no version 5"):
        registry.set_tags("m", 5, {"a": "b"})


# -- artifacts ---------------------------------------------------------------------------------


def test_a_tampered_artifact_is_refused(registry: ModelRegistry, app: Aevos) -> None:
    version = registry.register("fraud", b"genuine weights", flavor="test-echo")
    with app.store._tx() as conn:
        conn.execute(
            sa.update(blobs).where(blobs.c.ref == version.digest).values(data=b"evil weights")
        )
    with pytest.raises(ArtifactIntegrityError) as caught:
        registry.artifact(version)
    message = str(caught.value)
    assert caught.value.code == "artifact_integrity"
    assert "fraud@1" in message and version.digest in message
    assert hashlib.sha256(b"evil weights").hexdigest() in message
    with pytest.raises(ArtifactIntegrityError):
        registry.load(version)
    assert loads == []
    with app.store._tx() as conn:
        conn.execute(sa.delete(blobs).where(blobs.c.ref == version.digest))
    with pytest.raises(ArtifactIntegrityError, match=r"fraud@1 .* is missing"):
        registry.artifact(version)


def test_load_is_cached_per_digest_and_thread_safe(registry: ModelRegistry) -> None:
    one = registry.register("a", b"same", flavor="test-echo", config={"k": 1})
    two = registry.register("b", b"same", flavor="test-echo", config={"k": 1})
    other_config = registry.register("c", b"same", flavor="test-echo", config={"k": 2})
    adapters: list[Any] = []
    threads = [
        threading.Thread(target=lambda: adapters.append(registry.load(one))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(adapters) == 8 and all(a is adapters[0] for a in adapters)
    assert registry.load(two) is adapters[0]  # another model, the same bytes and config
    assert registry.load(other_config) is not adapters[0]
    assert len(loads) == 2
    assert adapters[0].predict("hi").output == {"input": "hi", "k": 1}


def test_unknown_flavor_fails_on_load(registry: ModelRegistry) -> None:
    version = registry.register("m", b"x", flavor="no-such-flavor")
    with pytest.raises(DefinitionError, match="unknown model flavor 'no-such-flavor'"):
        registry.load(version)


# -- safe serialisation ------------------------------------------------------------------------


def test_skops_round_trip_of_a_banking77_pipeline(
    registry: ModelRegistry, banking_model: Any
) -> None:
    artifact = dump_sklearn(banking_model)
    assert is_skops(artifact) and not is_pickle(artifact)
    # Canonical bytes: the same fitted model dumps to the same digest.
    assert dump_sklearn(banking_model) == artifact
    version = registry.register(
        "support-intent",
        artifact,
        flavor="test-sklearn",
        card=ModelCard(intended_use="banking77 intents", metrics={"train_rows": 300.0}, owner="ml"),
        aliases=["champion"],
    )
    assert (
        registry.register("support-intent", dump_sklearn(banking_model), flavor="test-sklearn")
        == version
    )
    adapter = registry.load(registry.get("support-intent"))
    texts, labels = _rows("test.csv", 10)
    loaded = [adapter.predict(text).label for text in texts]
    assert loaded == list(banking_model.predict(texts))
    accuracy = sum(p == t for p, t in zip(loaded, labels, strict=True)) / len(labels)
    assert accuracy > 0.7, accuracy  # it is a real model, not a stub
    assert 0.0 < adapter.predict(texts[0]).confidence <= 1.0


def test_a_pickled_model_is_refused_unless_trusted(
    registry: ModelRegistry, app: Aevos, banking_model: Any
) -> None:
    artifact = pickle.dumps(banking_model)
    assert is_pickle(artifact)
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        load_sklearn(artifact)
    version = registry.register("legacy", artifact, flavor="test-sklearn", created_by="ci")
    with pytest.raises(UnsafeArtifactError) as caught:
        registry.load(version)
    assert caught.value.code == "unsafe_artifact"
    assert "model.trusted_load" not in _actions(app)

    adapter = registry.load(version, trusted=True, by="alice")
    texts, _ = _rows("test.csv", 2)
    assert [adapter.predict(t).label for t in texts] == list(banking_model.predict(texts))
    (record,) = [r for r in app.audit.query("default") if r.action == "model.trusted_load"]
    assert record.actor == "alice" and record.subject == "model:legacy@1"
    assert record.data == {
        "model": "legacy",
        "version": 1,
        "digest": version.digest,
        "pickle": True,
    }
    registered = next(r for r in app.audit.query("default") if r.action == "model.registered")
    assert registered.data["pickle"] is True
    # A trusted load is never served to an untrusted caller from the cache.
    with pytest.raises(UnsafeArtifactError):
        registry.load(version)


class Unvetted:
    """A type outside skops's allow-list: loading it must be an explicit decision."""

    def __init__(self, factor: int = 2) -> None:
        self.factor = factor


def test_untrusted_types_in_a_skops_file_are_named() -> None:
    artifact = dump_sklearn(Unvetted(3))
    name = f"{Unvetted.__module__}.Unvetted"
    with pytest.raises(UnsafeArtifactError, match=rf"skops does not trust by default: {name}"):
        load_sklearn(artifact)
    assert load_sklearn(artifact, trusted_types=[Unvetted]).factor == 3
    assert load_sklearn(artifact, trusted_types=[name]).factor == 3
    assert load_sklearn(artifact, trusted=True).factor == 3


def test_pickle_detection_and_garbage() -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert is_pickle(pickle.dumps({"a": [1, 2.5]}, protocol=protocol)), protocol
    for data in (b"", b"hello", b"I am not a pickle", b"PK\x03\x04junk", b"\x08\x07onnx"):
        assert not is_pickle(data)
    # Text that parses as a STRING opcode with a bad escape: refused or not, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert is_pickle(b"S'\\(x'\n.")
        assert not is_pickle(b"S'\\(x'\nnot a pickle")
    with pytest.raises(InvalidArtifactError, match="neither a skops file"):
        load_sklearn(b"\x08\x07onnx")
    with pytest.raises(InvalidArtifactError):
        load_sklearn(b"PK\x03\x04junk")


# -- tenants and lineage -----------------------------------------------------------------------


def test_tenants_never_see_each_other(registry: ModelRegistry, app: Aevos) -> None:
    a = registry.register(
        "intent", b"acme", flavor="test-echo", tenant="acme", aliases=["champion"]
    )
    assert registry.names(tenant="globex") == []
    with pytest.raises(ModelNotFoundError) as caught:
        registry.get("intent", tenant="globex")
    assert "its models: none" in str(caught.value) and "acme" not in str(caught.value)
    for call in (
        lambda: registry.versions("intent", tenant="globex"),
        lambda: registry.aliases("intent", tenant="globex"),
        lambda: registry.set_alias("intent", "champion", 1, tenant="globex"),
        lambda: registry.rollback("intent", tenant="globex"),
        lambda: registry.set_tags("intent", 1, {"a": "b"}, tenant="globex"),
        lambda: registry.lineage("intent", 1, tenant="globex"),
    ):
        with pytest.raises(ModelNotFoundError):
            call()
    b = registry.register("intent", b"globex", flavor="test-echo", tenant="globex")
    assert (a.version, b.version) == (1, 1) and a.digest != b.digest
    assert registry.get("intent", tenant="acme").digest == a.digest
    assert registry.aliases("intent", tenant="globex") == {}
    assert _actions(app, "acme") == ["model.registered", "model.alias_moved"]
    assert _actions(app, "globex") == ["model.registered"]
    assert registry.names() == []


def test_lineage_links_card_run_and_alias_history(registry: ModelRegistry, app: Aevos) -> None:
    @app.workflow(name="train-intent")
    def train(ctx: WorkflowContext) -> str:
        return "trained"

    handle = train.options(idempotency_key="train-1")
    handle.run()
    run_id = app.list_runs(workflow="train-intent")[0].run_id
    card = ModelCard(owner="ml", training_data="banking77 sha256:feed", training_run_id=run_id)
    registry.register("intent", b"v1", flavor="test-echo", aliases=["champion"], created_by="ci")
    registry.register("intent", b"v2", flavor="test-echo", card=card, created_by="ci")
    registry.promote("intent", 2, by="approver")
    registry.set_alias("intent", "challenger", 2, by="bob")
    registry.rollback("intent", by="oncall")

    lineage = registry.lineage("intent", 2)
    assert lineage["ref"] == "intent@2" and lineage["created_by"] == "ci"
    assert lineage["card"]["training_data"] == "banking77 sha256:feed"
    assert lineage["training_run_id"] == run_id
    assert lineage["training_run"] == {
        "run_id": run_id,
        "workflow": "train-intent",
        "status": "SUCCEEDED",
    }
    assert lineage["aliases"] == ["challenger"]
    assert lineage["registered"]["actor"] == "ci"
    assert [(h["action"], h["actor"], h["data"]["alias"]) for h in lineage["alias_history"]] == [
        ("model.promoted", "approver", "champion"),
        ("model.alias_moved", "bob", "challenger"),
        ("model.rolled_back", "oncall", "champion"),  # moved away from version 2
    ]
    first = registry.lineage("intent", 1)
    assert first["training_run"] is None and first["aliases"] == ["champion"]
    assert [h["action"] for h in first["history"]] == [
        "model.registered",
        "model.alias_moved",
        "model.promoted",  # champion moved away from version 1
        "model.rolled_back",
    ]


def test_registry_without_an_audit_log(database_url: str) -> None:
    store = open_store(database_url)
    try:
        registry = ModelRegistry(store)
        registry.register("m", b"1", flavor="test-echo", aliases=["champion"])
        registry.register("m", b"2", flavor="test-echo", aliases=["champion"])
        assert registry.rollback("m").version == 1
        assert registry.lineage("m", 1)["history"] == []
    finally:
        store.close()
