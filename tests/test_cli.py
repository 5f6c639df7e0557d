"""The ``aevos`` command, on both backends: every command, and its refusals.

Expected errors must print ``error [<code>]: <message>`` on stderr, exit 2, show no
traceback, and never print a database password.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aevos import Aevos, RunStatus
from aevos.cli import cli
from aevos.storage.migration import head_revision

APP_SOURCE = textwrap.dedent(
    """
    from aevos import Aevos, StepContext, WorkflowContext

    def make_app(database_url=None):
        app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
        app.queue("work")

        @app.step()
        def double(ctx: StepContext, x: int) -> int:
            return x * 2

        @app.step()
        def boom(ctx: StepContext) -> None:
            raise ValueError("kaput")

        @app.workflow(name="double")
        def double_wf(ctx: WorkflowContext, x: int, extra: int = 0) -> dict:
            return {"doubled": double(ctx, x) + extra}

        @app.workflow(name="fails", queue="work")
        def fails(ctx: WorkflowContext) -> None:
            boom(ctx)

        @app.workflow(name="waits")
        def waits(ctx: WorkflowContext) -> object:
            return ctx.wait_signal("go", timeout=60)

        @app.workflow(name="route")
        def route(ctx: WorkflowContext, queue: str, priority: int = 0) -> dict:
            return {"queue": queue, "priority": priority}

        return app

    app = make_app()
    """
)

UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/x"


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh importable app module in the current directory (``--app`` imports it)."""
    name = f"cliapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AEVOS_DATABASE_URL", raising=False)
    return name


@pytest.fixture
def aevos(database_url: str, app_module: str) -> Callable[..., Result]:
    """Run ``aevos --database-url <backend> ARGS``; ``{app}`` in ARGS is the test app."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        argv = ["--database-url", database_url]
        argv += [a.replace("{app}", f"{app_module}:make_app") for a in args]
        return runner.invoke(cli, argv)

    return invoke


@pytest.fixture
def test_app(database_url: str, app_module: str) -> Iterator[Aevos]:
    """The same app, opened by the test to look at the database directly."""
    spec = importlib.util.spec_from_file_location(app_module, Path.cwd() / f"{app_module}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    application: Aevos = module.make_app(database_url)
    yield application
    application.close()


def assert_error(result: Result, code: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert f"error [{code}]: " in result.stderr, result.stderr
    assert "Traceback" not in result.output


def run_id_of(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def show(aevos: Callable[..., Result], run_id: str) -> dict[str, Any]:
    result = aevos("runs", "show", run_id, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- schema ----------------------------------------------------------------------------------


def test_migrate_brings_schema_to_head_then_reports_up_to_date(
    aevos: Callable[..., Result], database_url: str
) -> None:
    first = aevos("migrate")
    assert first.exit_code == 0, first.output
    assert head_revision() in first.stdout
    if database_url.startswith("sqlite"):
        assert "<empty> -> " in first.stdout  # a brand-new file
    again = aevos("migrate")
    assert again.exit_code == 0, again.output
    assert "already at revision" in again.stdout


def test_migrate_refuses_a_database_from_a_newer_aevos(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_future')")
    conn.close()
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{path}", "migrate"])
    assert_error(result, "schema_error")
    assert "9999_future" in result.stderr


# -- start -----------------------------------------------------------------------------------


def test_start_wait_prints_the_result_as_json(aevos: Callable[..., Result]) -> None:
    result = aevos("start", "double", "--app", "{app}", "--args", "[21]", "--wait")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"doubled": 42}
    assert "SUCCEEDED" in result.stderr


def test_start_with_kwargs_and_key_is_idempotent(aevos: Callable[..., Result]) -> None:
    args = ("start", "double", "--app", "{app}", "--kwargs", '{"x": 2, "extra": 1}')
    first = run_id_of(aevos(*args, "--key", "order-7", "--priority", "3"))
    second = run_id_of(aevos(*args, "--key", "order-7"))
    assert first == second
    run = show(aevos, first)["run"]
    assert run["status"] == "ENQUEUED"
    assert run["priority"] == 3
    assert run["idempotency_key"] == "order-7"
    assert run["input"] == {"args": [], "kwargs": {"x": 2, "extra": 1}}
    waited = aevos(*args, "--key", "order-7", "--wait")
    assert json.loads(waited.stdout) == {"doubled": 5}  # the recorded run, not a new one


def test_start_on_a_named_queue(aevos: Callable[..., Result]) -> None:
    run_id = run_id_of(
        aevos("start", "double", "--app", "{app}", "--args", "[1]", "--queue", "work")
    )
    assert show(aevos, run_id)["run"]["queue"] == "work"
    assert_error(
        aevos("start", "double", "--app", "{app}", "--args", "[1]", "--queue", "nope"),
        "definition_error",
    )


def test_unknown_workflow_exits_2_and_leaves_a_rejected_run(aevos: Callable[..., Result]) -> None:
    result = aevos("start", "no.such.workflow", "--app", "{app}", "--args", "[1]")
    assert_error(result, "unknown_workflow")
    assert "no.such.workflow" in result.stderr
    listed = aevos("runs", "list", "--status", "rejected", "--json")
    assert listed.exit_code == 0, listed.output
    rejected = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["workflow"] for r in rejected] == ["no.such.workflow"]
    assert rejected[0]["error"]["code"] == "unknown_workflow"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--args", "[1, 2", "--args is not valid JSON"),
        ("--args", '{"x": 1}', "--args must be a JSON list"),
        ("--kwargs", "[1]", "--kwargs must be a JSON object"),
        ("--kwargs", "{x: 1}", "--kwargs is not valid JSON"),
    ],
)
def test_malformed_json_names_the_option(
    aevos: Callable[..., Result], option: str, value: str, message: str
) -> None:
    result = aevos("start", "double", "--app", "{app}", option, value)
    assert_error(result, "bad_json")
    assert message in result.stderr
    assert aevos("runs", "list", "--json").stdout == ""  # refused before reaching the kernel


def test_kwargs_are_the_workflows_and_options_come_from_flags(
    aevos: Callable[..., Result],
) -> None:
    # A workflow whose parameters are named like start options receives them as arguments.
    named = '{"queue": "refunds", "priority": 7}'
    args = ("start", "route", "--app", "{app}", "--kwargs", named)
    run_id = run_id_of(aevos(*args, "--queue", "work", "--priority", "2", "--key", "r-1"))
    run = show(aevos, run_id)["run"]
    assert (run["queue"], run["priority"], run["idempotency_key"]) == ("work", 2, "r-1")
    assert run["input"] == {"args": [], "kwargs": {"queue": "refunds", "priority": 7}}
    # One without such a parameter refuses the keyword by name; the refusal is recorded.
    result = aevos("start", "double", "--app", "{app}", "--kwargs", '{"x": 1, "queue": "work"}')
    assert_error(result, "invalid_arguments")
    assert "no parameter 'queue'" in result.stderr
    assert "start option" in result.stderr
    listed = aevos("runs", "list", "--status", "rejected", "--json")
    (rejected,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rejected["workflow"] == "double"
    assert rejected["error"]["code"] == "invalid_arguments"
    assert rejected["error"]["argument"] == "queue"


def test_wrong_arguments_for_the_workflow(aevos: Callable[..., Result]) -> None:
    result = aevos("start", "double", "--app", "{app}", "--args", "[1, 2, 3, 4]")
    assert_error(result, "invalid_arguments")
    assert "bad arguments for workflow 'double'" in result.stderr


def test_failed_run_with_wait_exits_2_and_shows_its_error(aevos: Callable[..., Result]) -> None:
    result = aevos("start", "fails", "--app", "{app}", "--wait", "--timeout", "30")
    assert_error(result, "run_failed")
    assert "kaput" in result.stderr
    (failed,) = [
        json.loads(line)
        for line in aevos("runs", "list", "--status", "FAILED", "--json").stdout.splitlines()
    ]
    text = aevos("runs", "show", failed["run_id"])
    assert text.exit_code == 0, text.output
    assert "FAILED" in text.stdout and "kaput" in text.stdout
    assert "step(s)" in text.stdout


def test_wait_timeout_is_an_error_and_the_run_survives(aevos: Callable[..., Result]) -> None:
    result = aevos("start", "waits", "--app", "{app}", "--wait", "--timeout", "0.5")
    assert_error(result, "run_timeout")
    (line,) = aevos("runs", "list", "--workflow", "waits", "--json").stdout.splitlines()
    assert json.loads(line)["status"] in ("ENQUEUED", "RUNNING", "WAITING")


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("no_such_module_xyz:app", "app_not_found"),
        ("{module}", "bad_app"),
        ("{module}:missing", "app_not_found"),
        ("{module}:StepContext", "bad_app"),
        ("{module}:make_app.__name__", "bad_app"),
    ],
)
def test_bad_app_reference(
    aevos: Callable[..., Result], app_module: str, ref: str, code: str
) -> None:
    result = aevos("start", "double", "--app", ref.replace("{module}", app_module))
    assert_error(result, code)


def test_app_instance_uses_the_cli_database(aevos: Callable[..., Result], app_module: str) -> None:
    # The module-level `app` defaults to ./aevos.db; --database-url must win over it.
    result = aevos("start", "double", "--app", f"{app_module}:app", "--args", "[4]", "--wait")
    assert json.loads(result.stdout) == {"doubled": 8}
    assert len(aevos("runs", "list", "--json").stdout.splitlines()) == 1


# -- runs ------------------------------------------------------------------------------------


def test_runs_list_filters_and_renders_a_table(aevos: Callable[..., Result]) -> None:
    done = aevos("start", "double", "--app", "{app}", "--args", "[1]", "--wait")
    assert done.exit_code == 0, done.output
    queued = run_id_of(aevos("start", "fails", "--app", "{app}"))
    table = aevos("runs", "list")
    assert table.exit_code == 0, table.output
    assert queued in table.stdout and "double" in table.stdout and "SUCCEEDED" in table.stdout
    by_status = aevos("runs", "list", "--status", "ENQUEUED", "--json").stdout.splitlines()
    assert [json.loads(line)["run_id"] for line in by_status] == [queued]
    by_workflow = aevos("runs", "list", "--workflow", "double", "--json").stdout.splitlines()
    assert [json.loads(line)["status"] for line in by_workflow] == ["SUCCEEDED"]
    by_queue = aevos("runs", "list", "--queue", "work", "--json").stdout.splitlines()
    assert [json.loads(line)["run_id"] for line in by_queue] == [queued]
    assert len(aevos("runs", "list", "--limit", "1", "--json").stdout.splitlines()) == 1
    assert_error(aevos("runs", "list", "--status", "DONE"), "bad_option")


def test_runs_show_lists_steps(aevos: Callable[..., Result]) -> None:
    aevos("start", "double", "--app", "{app}", "--args", "[3]", "--key", "k", "--wait")
    (line,) = aevos("runs", "list", "--json").stdout.splitlines()
    run_id = json.loads(line)["run_id"]
    data = show(aevos, run_id)
    assert data["run"]["output"] == {"doubled": 6}
    assert [(s["seq"], s["status"], s["output"]) for s in data["steps"]] == [(0, "SUCCEEDED", 6)]
    text = aevos("runs", "show", run_id)
    assert text.exit_code == 0, text.output
    assert "1 step(s)" in text.stdout and "double" in text.stdout


def test_cancel_then_resume(aevos: Callable[..., Result]) -> None:
    run_id = run_id_of(aevos("start", "double", "--app", "{app}", "--args", "[1]"))
    cancelled = aevos("runs", "cancel", run_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert "CANCELLED" in cancelled.stdout
    assert show(aevos, run_id)["run"]["status"] == "CANCELLED"
    again = aevos("runs", "cancel", run_id)
    assert again.exit_code == 0 and "already ended CANCELLED" in again.stdout
    resumed = aevos("runs", "resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert show(aevos, run_id)["run"]["status"] == "ENQUEUED"
    assert_error(aevos("runs", "resume", run_id), "invalid_run_state")


def test_fork_copies_steps_before_the_position(
    aevos: Callable[..., Result], test_app: Aevos
) -> None:
    aevos("start", "double", "--app", "{app}", "--args", "[5]", "--wait")
    (line,) = aevos("runs", "list", "--json").stdout.splitlines()
    source = json.loads(line)
    bare = run_id_of(aevos("runs", "fork", source["run_id"], "--from-step", "1"))
    forked = show(aevos, bare)
    assert forked["run"]["status"] == "ENQUEUED"
    assert forked["run"]["code_version"] == source["code_version"]
    assert forked["run"]["queue"] == "default"
    assert [s["output"] for s in forked["steps"]] == [10]
    with_app = run_id_of(
        aevos(
            "runs",
            "fork",
            source["run_id"],
            "--from-step",
            "0",
            "--app",
            "{app}",
            "--queue",
            "work",
        )
    )
    fresh = show(aevos, with_app)
    assert fresh["run"]["code_version"] == test_app.code_version
    assert fresh["run"]["queue"] == "work" and fresh["steps"] == []
    assert_error(aevos("runs", "fork", source["run_id"], "--from-step", "-1"), "invalid_run_state")
    assert_error(
        aevos("runs", "fork", source["run_id"], "--from-step", "0", "--queue", "_bad"),
        "definition_error",
    )


def test_signal_is_delivered(aevos: Callable[..., Result], test_app: Aevos) -> None:
    run_id = run_id_of(aevos("start", "waits", "--app", "{app}"))
    sent = aevos("signal", run_id, "go", "--payload", '{"approved": true}')
    assert sent.exit_code == 0, sent.output
    worker = test_app.worker().start()
    try:
        result = test_app.handle(run_id).result(timeout=20)
    finally:
        worker.stop()
    assert result == {"approved": True}
    assert_error(aevos("signal", run_id, "go", "--payload", "{nope"), "bad_json")


@pytest.mark.parametrize(
    "command",
    [
        ("runs", "show", "feedface"),
        ("runs", "cancel", "feedface"),
        ("runs", "resume", "feedface"),
        ("runs", "fork", "feedface", "--from-step", "0"),
        ("signal", "feedface", "topic"),
    ],
)
def test_unknown_run_id(aevos: Callable[..., Result], command: tuple[str, ...]) -> None:
    result = aevos(*command)
    assert_error(result, "run_not_found")
    assert "feedface" in result.stderr


# -- databases that cannot be used ------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("migrate",),
        ("runs", "list"),
        ("runs", "show", "x"),
        ("signal", "x", "t"),
        ("start", "double", "--app", "{app}"),
        ("worker", "--app", "{app}"),
        ("demo", "--claims", "1"),
    ],
)
def test_unreachable_database_never_prints_the_password(
    app_module: str, command: tuple[str, ...]
) -> None:
    argv = ["--database-url", UNREACHABLE]
    argv += [a.replace("{app}", f"{app_module}:make_app") for a in command]
    result = CliRunner().invoke(cli, argv)
    assert_error(result, "storage_unavailable")
    assert "secret" not in result.output
    assert "u:***@127.0.0.1:1/x" in result.stderr


def test_unreachable_database_from_the_environment(app_module: str) -> None:
    result = CliRunner().invoke(cli, ["runs", "list"], env={"AEVOS_DATABASE_URL": UNREACHABLE})
    assert_error(result, "storage_unavailable")
    assert "secret" not in result.output


def test_unparseable_and_unsupported_urls(tmp_path: Path) -> None:
    garbled = CliRunner().invoke(cli, ["--database-url", "::not a url::", "runs", "list"])
    assert_error(garbled, "bad_database_url")
    mysql = CliRunner().invoke(cli, ["--database-url", "mysql://u:secret@h/db", "migrate"])
    assert_error(mysql, "storage_unavailable")
    assert "secret" not in mysql.output
    missing_dir = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    assert_error(
        CliRunner().invoke(cli, ["--database-url", missing_dir, "runs", "list"]),
        "storage_unavailable",
    )


def test_corrupt_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{path}", "runs", "list"])
    assert_error(result, "corrupt_database")


# -- the worker process ------------------------------------------------------------------------


def _read_line(stream: Any, timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def test_worker_serves_queues_until_sigint(
    aevos: Callable[..., Result], database_url: str, app_module: str, test_app: Aevos
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AEVOS_DATABASE_URL", None)
    command = [sys.executable, "-m", "aevos", "--database-url", database_url, "worker"]
    command += ["--app", f"{app_module}:make_app", "--queue", "default", "--concurrency", "2"]
    process = subprocess.Popen(
        command,
        cwd=os.getcwd(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = _read_line(process.stdout, 30)
        assert "aevos worker" in banner, banner
        assert "queues default (+ recovery)" in banner and "concurrency 2" in banner
        served = run_id_of(aevos("start", "double", "--app", "{app}", "--args", "[8]"))
        not_served = run_id_of(aevos("start", "fails", "--app", "{app}"))  # queue "work"
        assert test_app.handle(served).result(timeout=30) == {"doubled": 16}
        assert test_app.handle(not_served).status() is RunStatus.ENQUEUED
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "stopped after 1 run(s)" in stderr
    assert "Traceback" not in stderr


def test_worker_with_unknown_queue(aevos: Callable[..., Result]) -> None:
    assert_error(aevos("worker", "--app", "{app}", "--queue", "nope"), "definition_error")


def test_python_dash_m_aevos_and_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aevos", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("aevos ")
    help_text = CliRunner().invoke(cli, ["--help"])
    assert help_text.exit_code == 0
    for command in ("migrate", "start", "runs", "signal", "worker", "demo"):
        assert command in help_text.stdout
