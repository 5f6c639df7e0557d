"""``aevos models``: register, list, show, alias, roll back, verify; errors as
``error [code]: message`` with exit status 2."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from aevos import Aevos
from aevos.cli import cli
from aevos.models.artifact import dump_sklearn
from aevos.storage.schema import blobs


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    path = tmp_path_factory.mktemp("models") / "model.skops"
    path.write_bytes(dump_sklearn(model))
    return path


class Cli:
    def __init__(self, url: str) -> None:
        self.runner = CliRunner()
        self.url = url

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(cli, ["--database-url", self.url, "models", *args])
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result


POLICIES = str(Path(__file__).resolve().parents[1] / "examples" / "policies")
CLEAR = json.dumps(  # a clear improvement on plenty of traffic: examples' promotion-gate allows it
    {
        "candidate": {"accuracy": 0.93, "calibration_error": 0.03, "samples": 5000},
        "champion": {"accuracy": 0.90, "calibration_error": 0.03, "accuracy_stderr": 0.004},
    }
)


def test_register_show_alias_rollback_verify(
    database_url: str, model_file: Path, tmp_path: Path
) -> None:
    run = Cli(database_url)
    card = json.dumps({"intended_use": "demo", "owner": "ml", "metrics": {"accuracy": 1.0}})
    gated = run(
        "register", "intent", str(model_file), "--flavor", "sklearn", "--alias", "champion", code=2
    )
    assert "error [gated_alias]" in gated.stderr and "aevos models promote" in gated.stderr
    first = run(
        "register", "intent", str(model_file), "--flavor", "sklearn", "--card", card,
        "--tag", "team=support", "--config", '{"top_k": 3}',
    )  # fmt: skip
    assert first.stdout.startswith("intent@1 sha256:")
    promoted = run("promote", "intent", "1", "--evidence", CLEAR, "--policies", POLICIES)
    assert promoted.stdout.startswith("intent: champion - -> 1 (policy promotion-gate@")
    again = run(
        "register", "intent", str(model_file), "--flavor", "sklearn", "--config", '{"top_k": 3}'
    )
    assert "intent@1" in again.stdout and "already registered" in again.stdout
    second_file = tmp_path / "v2.bin"
    second_file.write_bytes(b"a second artifact")
    assert run("register", "intent", str(second_file), "--flavor", "rules").stdout.startswith(
        "intent@2 "
    )

    listed = json.loads(run("list", "--json").stdout)
    assert listed == {"name": "intent", "versions": 2, "latest": 2, "aliases": {"champion": 1}}
    assert "intent" in run("list").stdout
    versions = [
        json.loads(line) for line in run("versions", "intent", "--json").stdout.splitlines()
    ]
    assert [(v["version"], v["flavor"], v["aliases"]) for v in versions] == [
        (1, "sklearn", ["champion"]),
        (2, "rules", []),
    ]
    assert "team=support" in run("versions", "intent").stdout

    shown = json.loads(run("show", "intent@champion", "--json").stdout)
    assert shown["card"]["metrics"] == {"accuracy": 1.0} and shown["config"] == {"top_k": 3}
    assert shown["tags"] == {"team": "support"} and shown["created_by"].startswith("cli:")
    text = run("show", "intent").stdout  # bare NAME: latest
    assert text.startswith("intent@2") and "champion -> 1" in text

    assert "error [gated_alias]" in run("alias", "intent", "champion", "2", code=2).stderr
    promoted = run("promote", "intent", "2", "--evidence", CLEAR, "--policies", POLICIES)
    assert promoted.stdout.startswith("intent: champion 1 -> 2 (")
    small = json.loads(CLEAR)
    small["candidate"]["accuracy"] = 0.91  # a small improvement needs a second person
    needs = run(
        "promote", "intent", "1", "--evidence", json.dumps(small), "--policies", POLICIES, code=2
    )
    assert (
        "error [approval_required]" in needs.stderr and "/v1/models/intent/promote" in needs.stderr
    )
    small["candidate"]["accuracy"] = 0.85  # worse than the champion
    denied = run(
        "promote", "intent", "1", "--evidence", json.dumps(small), "--policies", POLICIES, code=2
    )
    assert "error [promotion_denied]" in denied.stderr
    reader = Aevos(database_url)
    try:
        decided = [r for r in reader.audit.query("default") if r.action == "policy.decided"]
    finally:
        reader.close()
    assert [r.data["result"] for r in decided[-4:]] == ["allow", "allow", "approve", "deny"]
    assert run("alias", "intent", "challenger", "2").stdout.strip() == "intent: challenger - -> 2"
    assert "already -> 2" in run("alias", "intent", "challenger", "2").stdout
    rolled = run("rollback", "intent")
    assert "champion rolled back 2 -> 1" in rolled.stdout
    assert json.loads(run("show", "intent@champion", "--json").stdout)["version"] == 1
    again_back = run("rollback", "intent", code=2)
    assert "error [no_previous_version]" in again_back.stderr

    verified = run("verify", "intent")
    assert verified.stdout.count("ok intent@") == 2
    lineage = json.loads(run("lineage", "intent@2").stdout)
    assert [h["action"] for h in lineage["alias_history"]] == [
        "model.promoted",
        "model.alias_moved",
        "model.rolled_back",
    ]

    app = Aevos(database_url)
    try:
        with app.store._tx() as conn:
            conn.execute(sa.update(blobs).values(data=b"tampered"))
        actors = {r.actor for r in app.audit.query("default")}
        assert len(actors) == 1 and actors.pop().startswith("cli:")
    finally:
        app.close()
    tampered = run("verify", "intent@1", code=2)
    assert "error [artifact_integrity]" in tampered.stderr and "intent@1" in tampered.stderr
    both = run("verify", "intent", code=2)
    assert both.stderr.count("error [artifact_integrity]") == 2


def test_errors_are_one_line_with_a_code(
    database_url: str, model_file: Path, tmp_path: Path
) -> None:
    run = Cli(database_url)
    unknown = run("show", "nope", code=2)
    assert "error [model_not_found]: no model 'nope' in tenant 'default'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    run("register", "intent", str(model_file), "--flavor", "sklearn")
    assert "error [model_not_found]" in run("show", "intent@7", code=2).stderr
    assert "no alias 'champion'" in run("rollback", "intent", code=2).stderr
    assert "error [definition_error]" in run("alias", "intent", "latest", "1", code=2).stderr
    assert (
        "error [bad_json]"
        in run(
            "register", "x", str(model_file), "--flavor", "sklearn", "--card", "{", code=2
        ).stderr
    )
    bad_card = run(
        "register", "x", str(model_file), "--flavor", "sklearn", "--card", '{"acc": 1}', code=2
    )
    assert "unknown model card field(s) acc" in bad_card.stderr
    assert (
        "error [bad_option]"
        in run(
            "register", "x", str(model_file), "--flavor", "sklearn", "--tag", "novalue", code=2
        ).stderr
    )
    assert (
        "error [bad_file]"
        in run("register", "x", str(tmp_path / "missing.bin"), "--flavor", "sklearn", code=2).stderr
    )
    assert (
        "error [definition_error]: model name 'a b'"
        in run("register", "a b", str(model_file), "--flavor", "sklearn", code=2).stderr
    )
    assert "error [bad_ref]" in run("show", "intent@", code=2).stderr
    assert "error [model_not_found]" in run("show", "intent", "--tenant", "globex", code=2).stderr

    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2]}))
    warned = run("register", "legacy", str(pickled), "--flavor", "sklearn")
    assert "is a pickle" in warned.stderr and warned.stdout.startswith("legacy@1")


def test_approvals_lists_promotions_waiting_for_a_second_person(database_url: str) -> None:
    from aevos import PolicySet

    policies = Path(__file__).resolve().parents[1] / "examples" / "policies"
    app = Aevos(database_url, policies=PolicySet.load(policies))
    try:
        app.models.register("m", b'{"input": {}, "table": [], "default": {"label": "a"}}',
                            flavor="rules", tenant="acme", aliases=["champion"])  # fmt: skip
        app.models.register("m", b'{"input": {}, "table": [], "default": {"label": "b"}}',
                            flavor="rules", tenant="acme")  # fmt: skip
        ops = app.identity.create_token(  # a name Rich would read as markup
            tenant="acme", role="operator", name="ops[/bold]", created_by="t"
        )
        evidence = {
            "candidate": {"accuracy": 0.9, "calibration_error": 0.05, "samples": 120},
            "champion": {"accuracy": 0.8, "calibration_error": 0.05},
        }
        asked = app.access.models.promote(ops.principal, "m", 2, evidence=evidence).approval
        assert asked is not None
    finally:
        app.close()
    run = Cli(database_url)
    listed = run("approvals", "m", "--tenant", "acme", "--status", "pending", "--json")
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["approval_id"] == asked.approval_id and row["status"] == "PENDING"
    assert (row["version"], row["alias"], row["alias_was"]) == (2, "champion", 1)
    table = run("approvals", "--tenant", "acme").stdout
    assert asked.approval_id in table and "m@2 -> champion (was 1)" in table
    assert "0 approval(s)" in run("approvals", "--tenant", "globex").stdout
    bad = run("approvals", "--status", "maybe", code=2)
    assert "unknown approval status 'maybe'" in bad.stderr
