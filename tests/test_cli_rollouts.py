"""``aevos rollouts``: start, list, show, pause, resume, abort, with clear errors (both backends)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner, Result

from aevos import Aevos
from aevos.cli import cli

TABLE = {"input": {"amount": "number"}, "table": [], "default": {"label": "approve"}}


@pytest.fixture
def models(database_url: str) -> Iterator[Aevos]:
    app = Aevos(database_url)
    for label in ("approve", "deny"):
        table = {**TABLE, "default": {"label": label}}
        app.models.register("claims", json.dumps(table).encode(), flavor="rules")
    app.models.promote("claims", 1, alias="champion")
    yield app
    app.close()


@pytest.fixture
def aevos(database_url: str) -> Callable[..., Result]:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["--database-url", database_url, *args])

    return invoke


def test_rollouts_start_list_show_pause_resume_abort(
    aevos: Callable[..., Result], models: Aevos
) -> None:
    started = aevos("rollouts", "start", "claims", "2", "--steps", "0,50,100")
    assert started.exit_code == 0, started.output
    rollout = json.loads(started.output)
    rid = rollout["rollout_id"]
    assert (rollout["state"], rollout["steps"], rollout["step_name"]) == (
        "progressing",
        [0, 50, 100],
        "shadow",
    )
    listed = aevos("rollouts", "list", "--json")
    assert [json.loads(line)["rollout_id"] for line in listed.output.splitlines()] == [rid]
    assert rid in aevos("rollouts", "list", "--active").output
    paused = aevos("rollouts", "pause", rid, "--reason", "holiday", "--json")
    assert paused.exit_code == 0 and json.loads(paused.output)["state"] == "paused"
    assert "progressing" in aevos("rollouts", "resume", rid).output
    assert "aborted" in aevos("rollouts", "abort", rid, "--reason", "enough").output
    shown = json.loads(aevos("rollouts", "show", rid).output)
    assert [h["action"] for h in shown["history"]] == [
        "rollout.started",
        "rollout.paused",
        "rollout.resumed",
        "rollout.aborted",
    ]
    assert shown["history"][1]["reason"] == "holiday" and shown["state"] == "aborted"


def test_rollouts_bad_input_is_a_clear_error(aevos: Callable[..., Result], models: Aevos) -> None:
    steps = aevos("rollouts", "start", "claims", "2", "--steps", "0,x")
    assert steps.exit_code == 2 and "[invalid_rollout]" in steps.output
    last = aevos("rollouts", "start", "claims", "2", "--steps", "0,50")
    assert last.exit_code == 2 and "[invalid_rollout]" in last.output and "100" in last.output
    missing = aevos("rollouts", "start", "claims", "9")
    assert missing.exit_code == 2 and "[model_not_found]" in missing.output
    unknown = aevos("rollouts", "pause", "ro_nope")
    assert unknown.exit_code == 2 and "[rollout_not_found]" in unknown.output
    rid = json.loads(aevos("rollouts", "start", "claims", "2").output)["rollout_id"]
    again = aevos("rollouts", "resume", rid)
    assert again.exit_code == 2 and "[rollout_conflict]" in again.output
    rejected = [r for r in models.audit.query(tenant="default") if r.action == "rollout.rejected"]
    assert len(rejected) == 2  # the two the service saw (--steps 0,x never reached it)
