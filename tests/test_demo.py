"""``aevos demo``: support triage on banking77, evolving.

The headless run over a slice (6 intents) is the real thing end to end in a process of its
own: the example's workflow on in-process workers, reviewers holding reviewer tokens, a
retraining by the worker's own trigger, certification, then the certified candidate's
rollout (a replay of kept cases, shadow, canaries) moved by the workers' rollout controller
on the step analysis and promoted through the rollout's policy gate; its JSON has the
issue's keys and figures that add up, and the database it leaves says the same. The interactive run serves the console and the API with the token it prints, and
stops cleanly on SIGINT. Bad input is refused before any work, naming the cause.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from aevos import Aevos
from aevos.cli import cli

ROOT = Path(__file__).resolve().parents[1]
# A slice that retrains, certifies and rolls out within about a minute: 8 intents,
# version 1 trained on 40 tickets, a retraining every 60 labels, rollouts of three steps.
SLICE = ["--intents", "8", "--tickets", "800", "--every", "60", "--seed", "3"]
STEPS = ["--steps", "0,50,100"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.pop("AEVOS_DATABASE_URL", None)
    return env


def _aevos(*args: str) -> list[str]:
    return [sys.executable, "-m", "aevos", "demo", *args]


def test_headless_slice_retrains_promotes_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    directory = tmp_path / "demo"
    done = subprocess.run(
        _aevos("--headless", *SLICE, *STEPS, "--dir", str(directory), "--json", str(report)),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for row in ("tickets", "reviews", "retrainings", "promotions", "rollbacks", "last tenth"):
        assert row in done.stdout, done.stdout
    # The rollout's path in the table, the evolution report after it.
    assert "replay -> shadow -> canary 50% -> canary 100% -> promoted" in done.stdout
    assert "Evolution of support-intent" in done.stdout and "rollout.promoted" in done.stdout

    result = json.loads(report.read_text(encoding="utf-8"))
    for key in ("promotions", "rollbacks", "retrainings", "reviews", "automation_rate"):
        assert key in result, key
    assert set(result["automation_rate"]) == {"first", "last"}
    assert result["retrainings"] >= 1 and result["promotions"] >= 1
    # A candidate may also be rolled back by a failed step: counted, never promoted.
    rolled_back = [r for r in result["rollouts"] if r["state"] == "rolled_back"]
    assert result["rollbacks"] == len(rolled_back)
    assert all(r["path"][-1] == "rolled back" for r in rolled_back)
    assert result["retrainings"] >= result["certified"] >= len(result["rollouts"])
    assert len(result["rollouts"]) >= result["promotions"]
    promoted = [r for r in result["rollouts"] if r["state"] == "promoted"]
    assert len(promoted) == result["promotions"]
    for rollout in promoted:
        assert rollout["path"] == ["replay", "shadow", "canary 50%", "canary 100%", "promoted"]
        assert rollout["steps"] == [0, 50, 100] and rollout["replay"]["status"] == "passed"
    first, last = result["automation_rate"]["first"], result["automation_rate"]["last"]
    assert 0.0 <= first <= 1.0 and 0.0 <= last <= 1.0
    # Every ticket routed once; every ticket a reviewer routed, and every QA sample, is a
    # review answered by the simulated reviewers.
    assert result["tickets"] == 800 == sum(result["routed"].values())
    assert result["reviews"] == result["routed"].get("reviewer", 0) + result["qa_samples"]
    assert result["champion"]["version"] > 1 and result["champion"]["threshold"] is not None

    # The database the demo leaves behind says the same.
    app = Aevos(f"sqlite:///{directory / 'aevos.db'}")
    try:
        assert app.models.aliases("support-intent")["champion"] == result["champion"]["version"]
        runs = app.retraining.runs("support-intent", limit=100)
        assert len(runs) == result["retrainings"]
        # Every certified candidate went to a rollout, none was promoted directly.
        assert sum(r.promotion == "rollout" for r in runs) == len(result["rollouts"])
        assert not any(r.promotion == "allow" for r in runs)
        promotions = app.audit.query("default", action="rollout.promoted", limit=100)
        assert len(promotions) == result["promotions"]
        last = promotions[-1]
        assert last.data["version"] == result["champion"]["version"]
        # Its history, from the database: replay passed, shadow, the canaries, promoted by
        # the controller through the gate.
        history = app.rollouts.history(last.data["rollout_id"])
        assert [t.action for t in history] == [
            "rollout.started",
            "rollout.advanced",
            "rollout.advanced",
            "rollout.advanced",
            "rollout.promoted",
        ]
        assert [t.step_name for t in history[1:4]] == ["shadow", "canary 50%", "canary 100%"]
        assert history[1].reason == "replay passed"
        assert all(t.actor == "system:rollouts" for t in history[1:])
        assert history[-1].analysis is not None
        assert history[-1].analysis["outcome"] == "successful"
        submitted = app.audit.query("default", action="task.submitted", limit=1000)
        assert len(submitted) == result["reviews"]
        # The reviewers decided as reviewer identities (their tokens' principals).
        assert {r.actor.split("#")[0] for r in submitted} <= {
            "reviewer:simulated reviewer 1",
            "reviewer:simulated reviewer 2",
        }
    finally:
        app.close()


def _read_line(stream: Any, timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def test_interactive_serves_the_console_and_stops_on_sigint(tmp_path: Path) -> None:
    process = subprocess.Popen(
        _aevos(*SLICE, "--dir", str(tmp_path / "demo"), "--port", "0"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        console_line = _read_line(process.stdout, 120)
        token_line = _read_line(process.stdout, 30)
        console = re.fullmatch(r"console: (http://127\.0\.0\.1:\d+)/console\n", console_line)
        token = re.fullmatch(r"token: (aevos_\S+)\n", token_line)
        assert console and token, (console_line, token_line)
        base = console.group(1)
        with httpx.Client(base_url=base, timeout=30) as client:
            page = client.get("/console", follow_redirects=True)
            assert page.status_code == 200 and "token" in page.text.lower()
            headers = {"Authorization": f"Bearer {token.group(1)}"}
            models = client.get("/v1/models", headers=headers)
            assert models.status_code == 200, models.text
            assert "support-intent" in models.text
            assert client.get("/v1/models").status_code == 401
            # A person signs in to the console with it, and sees the model.
            form = client.get("/console/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert form.status_code == 200 and csrf, form.text[:500]
            signed_in = client.post(
                "/console/login",
                data={"token": token.group(1), "csrf_token": csrf.group(1), "next": ""},
                headers={"Origin": base},
                follow_redirects=True,
            )
            assert signed_in.status_code == 200, signed_in.text[:500]
            assert "/console/login" not in str(signed_in.url)
            model_page = client.get("/console/models")
            assert model_page.status_code == 200 and "support-intent" in model_page.text
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert "aevos demo stopped" in stderr
    assert "Traceback" not in stderr


# -- bad input ---------------------------------------------------------------------------------


def _demo(*args: str) -> Result:
    return CliRunner().invoke(cli, ["demo", *args])


def _refused(result: Result, code: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert f"error [{code}]: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def test_a_negative_ticket_count_is_refused(tmp_path: Path) -> None:
    result = _demo("--headless", "--tickets", "-5", "--dir", str(tmp_path))
    assert result.exit_code == 2
    said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())
    assert "tickets" in said and "greater than or equal to 1" in said, said


def test_more_tickets_than_the_data_holds_is_refused(tmp_path: Path) -> None:
    stderr = _refused(
        _demo("--headless", "--intents", "2", "--tickets", "5000", "--dir", str(tmp_path)),
        "bad_option",
    )
    assert "--tickets 5000" in stderr and "2 intent(s)" in stderr


def test_a_directory_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    stderr = _refused(_demo("--headless", "--dir", str(blocker / "demo")), "bad_directory")
    assert str(blocker / "demo") in stderr and "Not a directory" in stderr


def test_a_port_in_use_is_refused_before_any_work(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stderr = _refused(
            _demo("--port", str(port), "--dir", str(tmp_path / "demo")), "address_in_use"
        )
    assert f"127.0.0.1:{port}" in stderr
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "no demo 'nope'"),
        (("support-triage", "--claims", "5"), "--claims applies to `aevos demo claims`"),
    ],
)
def test_unknown_demo_and_misplaced_options(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    stderr = _refused(_demo(*args, "--headless", "--dir", str(tmp_path)), "bad_option")
    assert message in stderr


@pytest.mark.parametrize(
    ("steps", "message"),
    [("0,five,100", "comma-separated list"), ("0,50", "the last step must be 100")],
)
def test_bad_rollout_steps_are_refused(tmp_path: Path, steps: str, message: str) -> None:
    stderr = _refused(
        _demo("--headless", "--steps", steps, "--dir", str(tmp_path / "demo")), "bad_option"
    )
    assert f"--steps {steps!r}" in stderr and message in stderr
    assert not (tmp_path / "demo").exists()


def test_json_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no" / "report.json"
    stderr = _refused(
        _demo("--headless", "--json", str(path), "--dir", str(tmp_path)), "bad_option"
    )
    assert "does not exist" in stderr


def test_the_claims_demo_stays_available_by_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    result = CliRunner().invoke(
        cli, ["--database-url", url, "demo", "claims", "--claims", "5", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "auto-approved" in result.stdout and "claims intake" in result.stdout
