"""Schedules on both backends: one run per tick however many workers race (threads, and
processes), the catch-up limit, time zones across daylight-saving changes, pause, resume
and trigger (from the CLI too), and a real worker ticking on the wall clock.

The ticker takes ``now`` (``app.schedules.tick(now=...)``), so every tick here happens on a
fixed clock: no test waits for a minute to pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aevos import Aevos, RunStatus, WorkflowContext
from aevos.cli import cli
from aevos.errors import DefinitionError, ScheduleNotFoundError, WorkflowArgumentError
from aevos.schedules import Cron

ROOT = Path(__file__).resolve().parents[1]


def at(text: str) -> float:
    """Epoch seconds of an ISO time in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report(app: Aevos, name: str = "report") -> Aevos:
    @app.workflow(name=name)
    def report_wf(ctx: WorkflowContext, region: str, full: bool = False) -> str:
        return f"{region}:{full}"

    return app


def keys(app: Aevos, workflow: str = "report") -> list[str]:
    return sorted(
        r.idempotency_key or ""
        for r in app.list_runs(workflow=workflow, limit=10_000)
        if (r.idempotency_key or "").startswith("schedule:")
    )


# -- declaring -----------------------------------------------------------------------------


def test_declaration_refuses_misuse_with_the_cause(tmp_path: Path) -> None:
    app = report(Aevos(f"sqlite:///{tmp_path / 'a.db'}"))
    wf = app.workflow_named("report")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"cron": "* * * *"}, DefinitionError, "five fields"),
        ({"cron": "61 * * * *"}, DefinitionError, "invalid cron expression"),
        ({"cron": "0 0 30 2 *"}, DefinitionError, "never matches"),
        ({"cron": "@reboot"}, DefinitionError, "unknown cron alias"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, DefinitionError, "unknown time zone"),
        ({"cron": "* * * * *", "catch_up": 0}, DefinitionError, "catch_up must be between"),
        ({"cron": "* * * * *", "catch_up": True}, DefinitionError, "catch_up must be an integer"),
        ({"cron": "* * * * *", "args": "eu"}, DefinitionError, "list or tuple"),
        ({"cron": "* * * * *", "queue": "nope"}, DefinitionError, "unknown queue"),
        ({"cron": "* * * * *", "tenant": "Bad Tenant"}, DefinitionError, "tenant"),
        ({"cron": "* * * * *", "kwargs": {"regoin": "eu"}}, WorkflowArgumentError, "regoin"),
        ({"cron": "* * * * *", "args": [{1, 2}]}, Exception, "JSON"),
    ]
    for options, error, words in cases:
        with pytest.raises(error, match=words):
            app.schedule("nightly", wf, **options)
    with pytest.raises(DefinitionError, match="schedule name"):
        app.schedule("no spaces", wf, cron="* * * * *", args=["eu"])
    app.schedule("nightly", wf, cron="0 2 * * *", args=["eu"])
    with pytest.raises(DefinitionError, match="declared twice"):
        app.schedule("nightly", "report", cron="0 3 * * *", args=["eu"])
    app.close()


def test_a_schedule_declared_before_its_workflow_is_checked_at_its_tick(
    app: Aevos, caplog: pytest.LogCaptureFixture
) -> None:
    app.schedule("early", "report", cron="*/5 * * * *", kwargs={"regoin": "eu"})
    app.schedule("orphan", "missing", cron="*/5 * * * *")
    report(app)
    app.schedules.sync(now=at("2026-06-01T10:00:00"))
    assert app.schedules.tick(now=at("2026-06-01T10:06:00")) == []
    assert app.list_runs() == []  # no run, not even a rejected one
    logged = [r.getMessage() for r in caplog.records if r.name == "aevos.schedules"]
    assert any("early" in m and "invalid_arguments" in m and "regoin" in m for m in logged)
    assert any("orphan" in m and "unknown_workflow" in m for m in logged)


# -- exactly once --------------------------------------------------------------------------


def test_each_tick_starts_one_run_with_its_lateness(make_app: Callable[..., Aevos]) -> None:
    first, second = report(make_app()), report(make_app())
    for app in (first, second):
        app.schedule("five", "report", cron="*/5 * * * *", args=["eu"], kwargs={"full": True})
    t0 = at("2026-06-01T10:01:00")
    first.schedules.sync(now=t0)
    assert first.schedules.tick(now=t0 + 60) == []  # 10:02: nothing due yet

    started = first.schedules.tick(now=at("2026-06-01T10:05:03"))
    assert [(r.status, iso(r.tick_at), r.lateness) for r in started] == [
        ("started", "2026-06-01T10:05:00Z", 3.0)
    ]
    # The same moment again, and another app (process) on the same database: nothing more.
    assert first.schedules.tick(now=at("2026-06-01T10:05:04")) == []
    assert second.schedules.tick(now=at("2026-06-01T10:05:04")) == []
    assert second.schedules.tick(now=at("2026-06-01T10:10:00")) != []
    assert keys(first) == [
        "schedule:five:2026-06-01T10:05:00Z",
        "schedule:five:2026-06-01T10:10:00Z",
    ]
    run = first.get_run(started[0].run_id or "")
    assert run.status is RunStatus.ENQUEUED and run.queue == "default"
    assert run.input == {"args": ["eu"], "kwargs": {"full": True}}
    with first.store.reading() as uow:
        recorded = uow.audit.query("default", run_id=run.run_id)
    start = next(r for r in recorded if r.action == "run.started")
    assert start.actor == "schedule:five"
    data = json.loads(start.payload)["data"]
    assert data["schedule"] == "five" and data["tick"] == "2026-06-01T10:05:00Z"
    assert data["lateness"] == 3.0
    view = first.schedules.get("five")
    assert view.state.last_tick == at("2026-06-01T10:10:00")
    assert view.state.next_tick == at("2026-06-01T10:15:00")


def test_workers_racing_on_threads_start_each_tick_once(
    make_app: Callable[..., Aevos],
) -> None:
    apps = [report(make_app()) for _ in range(4)]
    for app in apps:
        app.schedule("minutely", "report", cron="* * * * *", args=["eu"], catch_up=3)
    t0 = at("2026-06-01T00:00:30")
    apps[0].schedules.sync(now=t0)
    # Each round, every worker ticks at once, each at a slightly different moment (as on
    # different hosts): some look before a new minute, some after; some see more ticks.
    rounds = 12
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(apps))

    def work(index: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait()
                apps[index].schedules.tick(now=t0 + 60 * r + 20 * index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    last = t0 + 60 * (rounds - 1) + 20 * (len(apps) - 1)
    expected = Cron.parse("* * * * *").ticks(t0, last, 100)
    assert keys(apps[0]) == sorted(f"schedule:minutely:{iso(t)}" for t in expected)
    # Every tick is accounted for once: started or skipped, never both.
    with apps[0].store.reading() as uow:
        records = uow.schedules.ticks("minutely", limit=1000)
    started = [r.tick_at for r in records if r.status == "started"]
    skipped = sum(r.count for r in records if r.status == "skipped")
    assert sorted(started) == expected and skipped == 0


WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    from aevos import Aevos, WorkflowContext

    url, t0, rounds, step = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    app = Aevos(url)

    @app.workflow(name="report")
    def report_wf(ctx: WorkflowContext, region: str, full: bool = False) -> str:
        return region

    app.schedule("minutely", "report", cron="* * * * *", args=["eu"], catch_up=2)
    started = 0
    for r in range(rounds):
        started += sum(1 for t in app.schedules.tick(now=t0 + r * step) if t.status == "started")
    app.close()
    print(started)
    """
)


def test_two_processes_racing_start_each_tick_once(
    make_app: Callable[..., Aevos], database_url: str, tmp_path: Path
) -> None:
    app = report(make_app())
    app.schedule("minutely", "report", cron="* * * * *", args=["eu"], catch_up=2)
    t0 = at("2026-06-01T00:00:30")
    app.schedules.sync(now=t0)
    script = tmp_path / "ticker.py"
    script.write_text(WORKER_SCRIPT)
    rounds, step = 40, 30.0  # a tick due every other round, for both processes at once
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), database_url, str(t0), str(rounds), str(step)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    expected = Cron.parse("* * * * *").ticks(t0, t0 + (rounds - 1) * step, 100)
    assert keys(app) == sorted(f"schedule:minutely:{iso(t)}" for t in expected)
    # The two processes' own counts add up to the ticks: none started twice.
    assert sum(int(out.strip()) for out, _ in outputs) == len(expected)


# -- catch-up ------------------------------------------------------------------------------


def test_missed_ticks_beyond_the_catch_up_limit_are_skipped_and_recorded(app: Aevos) -> None:
    report(app)
    app.schedule("five", "report", cron="*/5 * * * *", args=["eu"], catch_up=3)
    app.schedules.sync(now=at("2026-06-01T10:00:00"))
    # No worker for an hour: 12 ticks due (10:05 ... 11:00); the newest 3 start.
    now = at("2026-06-01T11:00:42")
    recorded = app.schedules.tick(now=now)
    assert [(r.status, iso(r.first_at), iso(r.tick_at), r.count) for r in recorded] == [
        ("skipped", "2026-06-01T10:05:00Z", "2026-06-01T10:45:00Z", 9),
        ("started", "2026-06-01T10:50:00Z", "2026-06-01T10:50:00Z", 1),
        ("started", "2026-06-01T10:55:00Z", "2026-06-01T10:55:00Z", 1),
        ("started", "2026-06-01T11:00:00Z", "2026-06-01T11:00:00Z", 1),
    ]
    assert [r.lateness for r in recorded[1:]] == [642.0, 342.0, 42.0]
    assert keys(app) == [
        "schedule:five:2026-06-01T10:50:00Z",
        "schedule:five:2026-06-01T10:55:00Z",
        "schedule:five:2026-06-01T11:00:00Z",
    ]
    stored = app.schedules.ticks("five")
    assert [(t.status, t.count) for t in stored] == [
        ("started", 1),
        ("started", 1),
        ("started", 1),
        ("skipped", 9),
    ]


def test_a_schedule_far_behind_skips_in_bounded_passes(app: Aevos) -> None:
    report(app)
    app.schedule("minutely", "report", cron="* * * * *", args=["eu"], catch_up=2)
    app.schedules.sync(now=at("2026-01-01T00:00:00"))
    # 20 days of minutes: 28,800 ticks due; two start, the rest are counted as skipped.
    recorded = app.schedules.tick(now=at("2026-01-21T00:00:00"))
    assert sum(r.count for r in recorded if r.status == "skipped") == 28_800 - 2
    assert [iso(r.tick_at) for r in recorded if r.status == "started"] == [
        "2026-01-20T23:59:00Z",
        "2026-01-21T00:00:00Z",
    ]
    # Just past one pass (10,001 ticks due): the newest three still start, though two of
    # them are in the first pass's 10,000.
    app.schedule("minutely3", "report", cron="* * * * *", args=["eu"], catch_up=3)
    start = at("2026-02-01T00:00:00")
    app.schedules.sync(now=start)
    recorded = [r for r in app.schedules.tick(now=start + 60 * 10_001) if r.schedule == "minutely3"]
    assert sum(r.count for r in recorded if r.status == "skipped") == 10_001 - 3
    assert [r.tick_at for r in recorded if r.status == "started"] == [
        start + 60 * n for n in (9_999, 10_000, 10_001)
    ]


# -- time zones ----------------------------------------------------------------------------


def test_time_zone_ticks_follow_local_time_across_dst_changes(app: Aevos) -> None:
    report(app)
    app.schedule("paris-9", "report", cron="0 9 * * *", tz="Europe/Paris", args=["fr"])
    app.schedule("paris-230", "report", cron="30 2 * * *", tz="Europe/Paris", args=["fr"])
    app.schedules.sync(now=at("2026-03-27T12:00:00"))
    # One tick a day, each day, across the spring change (29 March 2026, 02:00 -> 03:00).
    for day in ("2026-03-28", "2026-03-29", "2026-03-30"):
        app.schedules.tick(now=at(f"{day}T12:00:00"))
    assert keys(app) == [
        "schedule:paris-230:2026-03-28T01:30:00Z",  # 02:30 CET
        "schedule:paris-230:2026-03-29T01:00:00Z",  # 02:30 does not exist: 03:00 CEST
        "schedule:paris-230:2026-03-30T00:30:00Z",  # 02:30 CEST
        "schedule:paris-9:2026-03-28T08:00:00Z",  # 09:00 CET
        "schedule:paris-9:2026-03-29T07:00:00Z",  # 09:00 CEST
        "schedule:paris-9:2026-03-30T07:00:00Z",
    ]


def test_a_repeated_wall_time_ticks_once_when_clocks_go_back(app: Aevos) -> None:
    report(app)
    app.schedule("paris-230", "report", cron="30 2 * * *", tz="Europe/Paris", args=["fr"])
    app.schedules.sync(now=at("2026-10-24T12:00:00"))
    # 25 October 2026: 03:00 CEST -> 02:00 CET, so 02:30 happens twice. Tick every 15 min.
    now = at("2026-10-24T23:00:00")
    while now <= at("2026-10-25T04:00:00"):
        app.schedules.tick(now=now)
        now += 900
    assert keys(app) == ["schedule:paris-230:2026-10-25T00:30:00Z"]  # 02:30 CEST only


# -- pause, resume, trigger ----------------------------------------------------------------


def test_paused_schedules_start_nothing_and_resume_from_now(app: Aevos) -> None:
    report(app)
    app.schedule("five", "report", cron="*/5 * * * *", args=["eu"], catch_up=10)
    app.schedules.sync(now=at("2026-06-01T10:00:00"))
    view = app.schedules.pause("five", actor="test:ops", now=at("2026-06-01T10:01:00"))
    assert view.state.paused and view.declared
    assert app.schedules.tick(now=at("2026-06-01T10:30:00")) == []
    app.schedules.resume("five", actor="test:ops", now=at("2026-06-01T10:31:00"))
    # The ticks of the pause are not caught up: the next is 10:35.
    started = app.schedules.tick(now=at("2026-06-01T10:36:00"))
    assert [iso(r.tick_at) for r in started] == ["2026-06-01T10:35:00Z"]
    # Pausing twice changes nothing (and records one pause).
    app.schedules.pause("five", actor="test:ops")
    app.schedules.pause("five", actor="test:ops")
    with app.store.reading() as uow:
        actions = [r.action for r in uow.audit.query("default") if r.subject == "schedule:five"]
    assert actions == ["schedule.paused", "schedule.resumed", "schedule.paused"]


def test_trigger_starts_a_run_now_and_leaves_the_ticks(app: Aevos) -> None:
    report(app)
    app.schedule("five", "report", cron="*/5 * * * *", args=["eu"])
    app.schedules.sync(now=at("2026-06-01T10:00:00"))
    app.schedules.pause("five", actor="test:ops")
    record = app.schedules.trigger("five", actor="test:ops", now=at("2026-06-01T10:02:00"))
    assert record.status == "triggered" and record.run_id is not None
    run = app.get_run(record.run_id)
    assert run.workflow == "report" and run.input == {"args": ["eu"], "kwargs": {}}
    view = app.schedules.get("five")
    assert view.state.paused and view.state.last_tick == at("2026-06-01T10:00:00")
    with pytest.raises(ScheduleNotFoundError, match="no schedule named 'nope'"):
        app.schedules.trigger("nope", actor="test:ops")
    with pytest.raises(ScheduleNotFoundError):
        app.schedules.pause("five", actor="test:ops", tenant="acme")  # another tenant's


def test_state_survives_a_restart_and_a_changed_definition(
    make_app: Callable[..., Aevos],
) -> None:
    first = report(make_app())
    first.schedule("five", "report", cron="*/5 * * * *", args=["eu"])
    first.schedules.sync(now=at("2026-06-01T10:00:00"))
    first.schedules.tick(now=at("2026-06-01T10:05:00"))
    first.schedules.pause("five", actor="test:ops")
    first.close()
    # A new process, whose code now says every ten minutes: paused, and its last tick kept.
    second = report(make_app())
    second.schedule("five", "report", cron="*/10 * * * *", args=["eu"])
    view = second.schedules.get("five")
    assert view.state.paused and view.state.cron == "*/10 * * * *"
    assert view.state.last_tick == at("2026-06-01T10:05:00")
    assert view.state.next_tick == at("2026-06-01T10:10:00")


APP_SOURCE = textwrap.dedent(
    """
    from aevos import Aevos, WorkflowContext

    def make_app(database_url=None):
        app = Aevos(database_url)

        @app.workflow(name="report")
        def report_wf(ctx: WorkflowContext, region: str) -> str:
            return region

        app.schedule("nightly", "report", cron="0 2 * * *", tz="Europe/Paris", args=["eu"])
        return app
    """
)


def test_cli_lists_pauses_resumes_and_triggers(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"schedapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AEVOS_DATABASE_URL", raising=False)
    runner = CliRunner()

    def aevos(*args: str) -> Any:
        return runner.invoke(cli, ["--database-url", database_url, *args])

    empty = aevos("schedules", "list", "--json")
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout) == []
    listed = aevos("schedules", "list", "--app", f"{module}:make_app", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["cron"], row["timezone"], row["paused"], row["declared"]) == (
        "nightly",
        "0 2 * * *",
        "Europe/Paris",
        False,
        True,
    )
    paused = aevos("schedules", "pause", "nightly")
    assert paused.exit_code == 0, paused.output
    assert "nightly: paused" in paused.stdout
    text = aevos("schedules", "list")
    assert "paused" in text.stdout and "not declared by this app" in text.stdout
    resumed = aevos("schedules", "resume", "nightly", "--json")
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["paused"] is False
    triggered = aevos("schedules", "trigger", "nightly", "--app", f"{module}:make_app")
    assert triggered.exit_code == 0, triggered.output
    run_id = triggered.stdout.strip()
    shown = aevos("runs", "show", run_id, "--json")
    assert json.loads(shown.stdout)["run"]["workflow"] == "report"
    missing = aevos("schedules", "pause", "nope")
    assert missing.exit_code == 2 and "error [schedule_not_found]" in missing.stderr
    undeclared = aevos("schedules", "trigger", "nightly", "--app", "nosuchmodule:app")
    assert undeclared.exit_code == 2 and "app_not_found" in undeclared.stderr
    with Aevos(database_url) as app, app.store.reading() as uow:
        records = [r for r in uow.audit.query("default") if r.action.startswith("schedule.")]
    assert [r.action for r in records] == [
        "schedule.paused",
        "schedule.resumed",
        "schedule.triggered",
    ]
    assert all(r.actor.startswith("cli:") for r in records)


# -- a real worker -------------------------------------------------------------------------


def test_a_worker_ticks_schedules_on_the_wall_clock(app: Aevos) -> None:
    report(app)
    app.schedule("minutely", "report", cron="* * * * *", args=["eu"], catch_up=1)
    # Stored as if declared three minutes ago: the worker's first sweep finds ticks due.
    app.schedules.sync(now=time.time() - 180)
    worker = app.worker()
    worker.escalation_interval = 0.05
    worker.start()
    try:
        deadline = time.monotonic() + 60
        runs: list[Any] = []
        while time.monotonic() < deadline:
            runs = [r for r in app.list_runs(workflow="report") if r.status is RunStatus.SUCCEEDED]
            if runs:
                break
            time.sleep(0.05)
    finally:
        worker.stop()
    assert len(runs) == 1 and app.get_run(runs[0].run_id).output == "eu:False"
    records = app.schedules.ticks("minutely")
    assert [r.status for r in records][:1] == ["started"]
    assert any(r.status == "skipped" for r in records)  # the older missed ticks


# -- the HTTP API --------------------------------------------------------------------------


def test_api_lists_pauses_resumes_and_triggers_within_the_tenant(app: Aevos) -> None:
    from fastapi.testclient import TestClient

    from aevos.server import create_app

    report(app)
    app.schedule("five", "report", cron="*/5 * * * *", args=["eu"], tenant="acme")

    def bearer(tenant: str, role: str) -> dict[str, str]:
        issued = app.identity.create_token(tenant=tenant, role=role, name=role, created_by="t")
        return {"Authorization": f"Bearer {issued.token}"}

    operator, reviewer = bearer("acme", "operator"), bearer("acme", "reviewer")
    stranger = bearer("other", "admin")
    with TestClient(create_app(app)) as client:
        assert client.get("/v1/schedules").status_code == 401
        [listed] = client.get("/v1/schedules", headers=reviewer).json()
        assert (listed["name"], listed["paused"], listed["declared"]) == ("five", False, True)
        assert client.get("/v1/schedules", headers=stranger).json() == []

        refused = client.post("/v1/schedules/five/pause", headers=reviewer)
        assert refused.status_code == 403
        foreign = client.post("/v1/schedules/five/trigger", headers=stranger)
        assert foreign.status_code == 403 and "five" in foreign.json()["error"]["message"]
        missing = client.post("/v1/schedules/nope/pause", headers=operator)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "schedule_not_found"
        bad = client.post("/v1/schedules/no%20spaces/pause", headers=operator)
        assert bad.status_code == 422

        paused = client.post("/v1/schedules/five/pause", headers=operator)
        assert paused.status_code == 200 and paused.json()["paused"] is True
        triggered = client.post("/v1/schedules/five/trigger", headers=operator)
        assert triggered.status_code == 201 and triggered.json()["status"] == "triggered"
        run = app.get_run(triggered.json()["run_id"])
        assert run.tenant == "acme" and run.workflow == "report"
        resumed = client.post("/v1/schedules/five/resume", headers=operator)
        assert resumed.json()["paused"] is False
        detail = client.get("/v1/schedules/five", headers=reviewer).json()
        assert [t["status"] for t in detail["ticks"]] == ["triggered"]

    actions = [r.action for r in app.audit.query("acme")]
    assert "schedule.rejected" in actions  # the unknown schedule, with its reason
    assert {"schedule.paused", "schedule.triggered", "schedule.resumed"} <= set(actions)
    assert "authz.denied" in [r.action for r in app.audit.query("other")]


def test_the_docs_example_declares_a_working_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    section = text[text.index("## Schedules") :]
    snippet = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    monkeypatch.setenv("AEVOS_DATABASE_URL", f"sqlite:///{tmp_path / 'docs.db'}")
    namespace: dict[str, Any] = {"Aevos": Aevos}
    exec(compile(snippet, "docs/integrations.md", "exec"), namespace)
    app: Aevos = namespace["app"]
    try:
        app.schedules.sync(now=at("2026-03-27T12:00:00"))
        started = app.schedules.tick(now=at("2026-03-29T12:00:00"))
        assert [(r.status, iso(r.tick_at)) for r in started] == [
            ("started", "2026-03-28T01:30:00Z"),
            ("started", "2026-03-29T01:00:00Z"),  # 02:30 skipped by the clocks: 03:00 CEST
        ]
        run = app.get_run(started[0].run_id or "")
        assert run.input == {"args": ["eu"], "kwargs": {"full": True}}
    finally:
        app.close()
