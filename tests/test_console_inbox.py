"""The console's reviewer inbox, task page and dashboard in a real browser.

The harness is test_console.py's (its browser fixtures, chromium through Playwright, uvicorn
on a loopback port). The app here has a real model: a scikit-learn text classifier trained
on four banking77 intents (test_tasks.py's) suggests an intent, the workflow asks a person
with ``ctx.ask_human(prediction=...)``, and an embedded worker runs it all.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from tests import test_console as harness
from tests import test_tasks

from aevos import Aevos, Field, RunStatus, TaskStatus, WorkflowContext
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

# The shared fixtures: a chromium per module, fresh browser contexts per test.
browser = harness.browser
open_page = harness.open_page
intent_model = test_tasks.intent_model
sign_in = harness.sign_in

REPO = Path(__file__).resolve().parents[1]
INTENTS = test_tasks.INTENTS
TEAMS = ["cards", "fraud", "fx", "payments", "loans", "savings", "mortgages", "kyc", "general"]
FORM = [
    Field.choice("intent", INTENTS, label="Intent", help="What the customer wants."),
    Field.number("refund", required=False, minimum=0, maximum=500, label="Refund"),
    Field.boolean("urgent", required=False, label="Urgent"),
    Field.text("note", required=False, max_length=200, label="Note"),
    # More choices than radio buttons show well: a select.
    Field.choice("team", TEAMS, required=False, label="Hand over to"),
]
TICKETS = {
    "arrival": "My new card has still not arrived, it has been two weeks",
    "stolen": "Someone stole my wallet with my card in it, please block it",
    "rate": "What exchange rate do you use when I pay in euros abroad?",
}
CUSTOMER = {"name": "Ana <b>Silva</b>", "since": 2019, "vip": True, "products": ["card", "fx"]}


@dataclass
class Served:
    app: Aevos
    url: str
    runs: dict[str, str]  # by ticket name; "other" is globex's

    def token(self, tenant: str, role: str, name: str | None = None) -> str:
        return self.app.identity.create_token(
            tenant=tenant, role=role, name=name or role, created_by="test"
        ).token

    def task(self, name: str) -> Any:
        (task,) = self.app.tasks.list(tenant=self.tenant(name), run_id=self.runs[name])
        return task

    def tenant(self, name: str) -> str:
        return "globex" if name == "other" else "acme"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@contextmanager
def serving(database_url: str, model: bytes) -> Iterator[Served]:
    """Three acme tickets waiting for a reviewer (the "arrival" one escalated past its SLA),
    two acme tickets the model settles alone, one globex ticket; a worker; uvicorn."""
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    for tenant in ("acme", "globex"):
        app.models.register(
            "intent",
            model,
            flavor="sklearn",
            signature={"type": "string"},
            tenant=tenant,
            aliases=["champion"],
            created_by="data-team",
        )

    @app.workflow(name="support.triage")
    def triage(
        ctx: WorkflowContext, ticket: dict[str, Any], review: bool = True, sla: float = 3600
    ) -> dict[str, Any]:
        prediction = ctx.predict("intent", ticket["text"])
        if not review:
            return {"intent": prediction.label, "by": "model"}
        decision = ctx.ask_human(
            "Which intent is this?",
            form=FORM,
            case=ticket,
            prediction=prediction,
            queue="support",
            sla=sla,
            escalate_to="senior",
        )
        return {"by": decision.reviewer, "changed": decision.overridden, **decision.values}

    operators = {
        tenant: app.identity.create_token(
            tenant=tenant, role="operator", name="starter", created_by="test"
        ).principal
        for tenant in ("acme", "globex")
    }

    def start(tenant: str, text: str, **options: Any) -> str:
        ticket = {"text": text, "customer": CUSTOMER, "channel": "chat"}
        return app.access.runs.start(operators[tenant], "support.triage", [ticket], options).run_id

    worker = app.worker().start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server = uvicorn.Server(uvicorn.Config(create_app(app), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    try:
        runs = {"arrival": start("acme", TICKETS["arrival"], sla=0.5)}
        wait_for(lambda: bool(app.tasks.list(tenant="acme", run_id=runs["arrival"])))
        runs |= {name: start("acme", TICKETS[name]) for name in ("stolen", "rate")}
        runs["other"] = start("globex", "I lost my card yesterday")
        automated = [
            start("acme", "How long until my card is delivered?", review=False),
            start("acme", "Which currencies can I exchange?", review=False),
        ]
        wait_for(lambda: len(app.tasks.list(tenant="acme")) == 3)
        wait_for(lambda: len(app.tasks.list(tenant="globex")) == 1)
        for run_id in automated:
            assert app.handle(run_id).result(timeout=20)["by"] == "model"
        (arrival,) = app.tasks.list(tenant="acme", run_id=runs["arrival"])
        wait_for(lambda: time.time() > (arrival.due_at or 0))
        app.tasks.escalate_overdue()  # what a worker's sweep does every 5 s
        assert app.tasks.get(arrival.task_id).escalated

        sock.bind(("127.0.0.1", 0))
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = sock.getsockname()[1]
        served = Served(app, f"http://127.0.0.1:{port}", runs)
        yield served
    finally:
        server.should_exit = True
        if thread.is_alive():
            thread.join(timeout=15)
        sock.close()
        worker.stop()
        app.close()


@pytest.fixture
def served(sqlite_url: str, intent_model: bytes) -> Iterator[Served]:
    with serving(sqlite_url, intent_model) as it:
        yield it


def errors_of(page: Page) -> list[str]:
    """Console errors of ``page`` from now on (a CSP violation is one)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return problems


def task_id_of(page: Page) -> str:
    return page.url.split("/console/tasks/", 1)[1].split("?", 1)[0]


def other_intent(suggested: str) -> str:
    return next(intent for intent in INTENTS if intent != suggested)


# -- the reviewer's loop ---------------------------------------------------------------------


def test_a_reviewer_works_three_tasks_from_the_inbox_and_their_runs_complete(
    database_url: str,
    intent_model: bytes,
    open_page: Callable[[Any], Page],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    with serving(database_url, intent_model) as served:
        app = served.app
        page = open_page(served)
        problems = errors_of(page)
        sign_in(page, served.token("acme", "reviewer", "rita"))
        page.wait_for_url("**/console/inbox")  # where a reviewer starts
        nav = page.get_by_role("navigation", name="main")
        expect(nav.get_by_role("link", name="Inbox")).to_have_attribute("aria-current", "page")

        # The inbox: acme's three tasks in inbox order, the escalated one first.
        rows = page.locator("#waiting tbody tr")
        expect(rows).to_have_count(3)
        expect(page.locator("#inbox")).not_to_contain_text("I lost my card yesterday")
        escalated = served.task("arrival")
        first = rows.first
        expect(first).to_have_attribute("data-task", escalated.task_id)
        expect(first).to_contain_text("Which intent is this?")
        expect(first).to_contain_text("senior")
        expect(first.locator(".chip.escalated")).to_have_text("escalated")
        expect(first.locator(".overdue")).to_contain_text("overdue")
        expect(first).to_contain_text(f"intent: {escalated.suggestion['intent']}")
        expect(first).to_contain_text(f"{(escalated.confidence or 0) * 100:.0f}%")
        expect(rows.nth(1)).to_contain_text("due in 59 min")
        expect(rows.nth(1)).to_contain_text("support")
        expect(page.locator(".chip.escalated")).to_have_count(1)

        # Next task: claims the first in inbox order and shows case, suggestion, confidence.
        page.get_by_role("button", name="Next task").click()
        page.wait_for_url(f"**/console/tasks/{escalated.task_id}")
        assert (app.tasks.get(escalated.task_id).assignee or "").startswith("reviewer:rita#")
        case = page.locator("#case")
        expect(case).to_contain_text(TICKETS["arrival"])
        expect(case).to_contain_text("Ana <b>Silva</b>")  # text, not markup
        assert case.locator("b").count() == 0
        expect(case.locator("dt")).to_contain_text(["text", "customer", "name", "since"])
        suggestion = page.locator("#suggestion")
        expect(suggestion).to_contain_text(escalated.suggestion["intent"])
        expect(suggestion).to_contain_text("intent@1")
        meter = suggestion.locator("meter")
        assert float(meter.get_attribute("value") or "nan") == pytest.approx(escalated.confidence)
        chosen = page.locator(f"input[name='field.intent'][value={escalated.suggestion['intent']}]")
        expect(chosen).to_be_checked()
        expect(page.locator("input[name='field.intent']")).to_have_count(len(INTENTS))
        expect(page.locator("input[type=number][name='field.refund']")).to_have_attribute(
            "max", "500"
        )
        expect(page.locator("input[type=checkbox][name='field.urgent']")).not_to_be_checked()
        expect(page.locator("select[name='field.team'] option")).to_have_count(len(TEAMS) + 1)
        expect(page.locator("select[name='field.team']")).to_have_value("")

        # 1: the suggestion stands, with a refund and marked urgent.
        page.fill("input[name='field.refund']", "25")
        page.check("input[name='field.urgent']")
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_role("status")).to_contain_text("Decision recorded")
        decisions: dict[str, dict[str, Any]] = {
            escalated.task_id: {
                "intent": escalated.suggestion["intent"],
                "refund": 25.0,
                "urgent": True,
                "note": None,
                "team": None,
            }
        }

        # 2: overridden, with a note.
        second = app.tasks.get(task_id_of(page))
        assert second.status is TaskStatus.CLAIMED and second.task_id not in decisions
        expect(page.locator("#suggestion")).to_contain_text(second.suggestion["intent"])
        changed = other_intent(second.suggestion["intent"])
        page.check(f"input[name='field.intent'][value={changed}]")
        page.fill("textarea[name='field.note']", "The customer's own words say otherwise.")
        page.select_option("select[name='field.team']", "fraud")
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_role("status")).to_contain_text("Decision recorded")
        decisions[second.task_id] = {
            "intent": changed,
            "refund": None,
            "urgent": False,
            "note": "The customer's own words say otherwise.",
            "team": "fraud",
        }

        # 3: as suggested, as is. Then nothing is left.
        third = app.tasks.get(task_id_of(page))
        assert third.task_id not in decisions
        page.get_by_role("button", name="Submit").click()
        page.wait_for_url("**/console/inbox?note=done")
        expect(page.get_by_role("status")).to_contain_text("No more tasks")
        expect(page.locator("#inbox")).to_contain_text("No tasks waiting")
        decisions[third.task_id] = {
            "intent": third.suggestion["intent"],
            "refund": None,
            "urgent": False,
            "note": None,
            "team": None,
        }

        # The runs resume with the decisions; each decision is a feedback record.
        overridden = {escalated.task_id: False, second.task_id: True, third.task_id: False}
        for task_id, decision in decisions.items():
            task = app.tasks.get(task_id)
            assert task.status is TaskStatus.SUBMITTED
            output = app.handle(task.run_id).result(timeout=20)
            assert app.handle(task.run_id).status() is RunStatus.SUCCEEDED
            assert output == {
                "by": task.submitted_by,
                "changed": overridden[task_id],
                **decision,
            }
            assert (task.submitted_by or "").startswith("reviewer:rita#")
        records = {r.task_id: r for r in app.tasks.feedback(tenant="acme")}
        assert set(records) == set(decisions)
        for task_id, record in records.items():
            assert record.overridden is overridden[task_id]
            assert record.decision == decisions[task_id]
            assert record.model_version == "intent@1" and record.confidence is not None
        assert app.tasks.list(tenant="globex")[0].status is TaskStatus.OPEN
        assert problems == []

        # An operator reads the dashboard: Chart.js charts of the same story.
        page = open_page(served)
        problems = errors_of(page)
        sign_in(page, served.token("acme", "operator", "olga"))
        page.wait_for_url("**/console/runs")
        page.get_by_role("link", name="Dashboard").click()
        page.wait_for_url("**/console/dashboard")
        check_dashboard(page)
        page.get_by_role("link", name="Last hour").click()
        page.wait_for_url("**/console/dashboard?window=hour")
        expect(page.get_by_role("link", name="Last hour")).to_have_attribute("aria-current", "page")
        check_dashboard(page)
        assert problems == []
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        for path in (REPO / "test-artifacts" / "dashboard.png", tmp_path / "dashboard.png"):
            page.screenshot(path=str(path), full_page=True)
            assert path.stat().st_size > 20_000


CHARTS = ["throughput", "latency", "automation", "overrides", "cost", "drift"]


def check_dashboard(page: Page) -> None:
    """Every chart is drawn by Chart.js from acme's five finished runs: two automated, three
    decided by a person, one of whom overrode the model."""
    from playwright.sync_api import expect

    expect(page.locator("canvas")).to_have_count(len(CHARTS))
    page.wait_for_function(
        "ids => window.Chart && ids.every(id => Chart.getChart('chart-' + id))",
        arg=CHARTS,
    )
    total = "d => d.data.reduce((sum, v) => sum + (v || 0), 0)"
    throughput = page.evaluate(f"Chart.getChart('chart-throughput').data.datasets.map({total})")
    assert throughput == [2, 3]  # automated, with a person
    types = page.evaluate(f"{CHARTS}.map(id => Chart.getChart('chart-' + id).config.type)")
    assert types == ["bar", "line", "line", "line", "line", "line"]
    latency = page.evaluate("Chart.getChart('chart-latency').data.datasets.map(d => d.label)")
    assert latency == ["p50", "p95", "p99"]
    assert page.evaluate("Chart.getChart('chart-latency').data.datasets[0].data.some(v => v > 0)")
    overrides = page.evaluate(
        "Chart.getChart('chart-overrides').data.datasets[0].data.filter(v => v !== null)"
    )
    assert overrides and all(0 <= v <= 100 for v in overrides)
    drift = page.evaluate("Chart.getChart('chart-drift').data.datasets.map(d => d.label)")
    assert drift[0] == "intent"
    assert page.evaluate("document.getElementById('chart-drift').width") > 0
    tiles = {
        "runs finished": "5",
        "automated": "40%",
        "human decisions": "3",
        "overrode the model": "33%",
    }
    for label, value in tiles.items():
        tile = page.locator("#totals .tile", has_text=label)
        expect(tile.locator(".value")).to_have_text(value)


# -- mistakes and races ----------------------------------------------------------------------


def test_a_bad_value_shows_the_field_error_and_changes_nothing(
    served: Served, open_page: Callable[[Any], Page]
) -> None:
    from playwright.sync_api import expect

    app = served.app
    task = served.task("stolen")
    page = open_page(served)
    sign_in(page, served.token("acme", "reviewer", "rita"))
    page.goto("/console/inbox")
    page.locator(f"tr[data-task='{task.task_id}']").get_by_role("button", name="Claim").click()
    page.wait_for_url(f"**/console/tasks/{task.task_id}")
    changed = other_intent(task.suggestion["intent"])
    page.check(f"input[name='field.intent'][value={changed}]")
    page.fill("input[name='field.refund']", "900")
    page.fill("textarea[name='field.note']", "kept as typed")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Submit").click()
    response = posted.value
    assert response.status == 422
    expect(page.locator("#form-error")).to_contain_text("check the highlighted field")
    field = page.locator(".field.invalid")
    expect(field).to_have_count(1)
    expect(field).to_have_attribute("data-field", "refund")
    expect(field.locator(".field-error")).to_have_text("Refund must be at most 500")
    expect(page.locator("input[name='field.refund']")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("input[name='field.refund']")).to_have_attribute(
        "aria-describedby", "field-refund-error"
    )
    # What the reviewer entered is still there, not the suggestion.
    expect(page.locator("input[name='field.refund']")).to_have_value("900")
    expect(page.locator(f"input[name='field.intent'][value={changed}]")).to_be_checked()
    expect(page.locator("textarea[name='field.note']")).to_have_value("kept as typed")
    now = app.tasks.get(task.task_id)
    assert now.status is TaskStatus.CLAIMED and now.result is None
    assert app.tasks.feedback(tenant="acme") == []

    page.fill("input[name='field.refund']", "50")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("status")).to_contain_text("Decision recorded")
    output = app.handle(task.run_id).result(timeout=20)
    assert output["intent"] == changed and output["refund"] == 50.0 and output["changed"]


def test_a_cancelled_run_or_a_decision_elsewhere_shows_a_conflict(
    served: Served, open_page: Callable[[Any], Page]
) -> None:
    from playwright.sync_api import expect

    app = served.app
    page = open_page(served)
    sign_in(page, served.token("acme", "reviewer", "rita"))
    page.goto("/console/inbox")
    page.get_by_role("button", name="Next task").click()
    page.wait_for_url("**/console/tasks/**")
    claimed = app.tasks.get(task_id_of(page))
    assert claimed.status is TaskStatus.CLAIMED

    # The run is cancelled while the page is open: the submission changes nothing.
    app.cancel(claimed.run_id)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Submit").click()
    assert posted.value.status == 409
    expect(page.locator("#conflict")).to_have_text(
        "This task's run was cancelled: there is nothing left to decide. Nothing was changed."
    )
    expect(page.locator("h1")).to_contain_text("CANCELLED")
    expect(page.locator("#task-form")).to_have_count(0)
    assert app.tasks.get(claimed.task_id).status is TaskStatus.CANCELLED
    assert app.tasks.feedback(tenant="acme") == []

    # Another reviewer decides an open task first.
    other = next(
        t for t in app.tasks.list(tenant="acme", status=[TaskStatus.OPEN]) if not t.escalated
    )
    page.goto(f"/console/tasks/{other.task_id}")
    expect(page.locator("#task-form")).to_be_visible()
    bob = app.identity.create_token(tenant="acme", role="reviewer", name="bob", created_by="t")
    app.access.tasks.submit(bob.principal, other.task_id, {"intent": INTENTS[0]})
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Submit").click()
    assert posted.value.status == 409
    expect(page.locator("#conflict")).to_have_text(
        "This task was already decided by someone else. Nothing was changed."
    )
    expect(page.locator("#decision")).to_contain_text(INTENTS[0])
    (record,) = app.tasks.feedback(tenant="acme")
    assert record.reviewer == bob.principal.actor

    # ...or claims it first.
    (last,) = app.tasks.list(tenant="acme", status=[TaskStatus.OPEN])
    page.goto(f"/console/tasks/{last.task_id}")
    app.access.tasks.claim(bob.principal, last.task_id)
    page.get_by_role("button", name="Claim").click()
    expect(page.locator("#conflict")).to_have_text(
        "Someone else claimed this task first. Nothing was changed."
    )
    assert app.tasks.get(last.task_id).assignee == bob.principal.actor


def test_release_puts_a_claimed_task_back(served: Served, open_page: Callable[[Any], Page]) -> None:
    from playwright.sync_api import expect

    page = open_page(served)
    sign_in(page, served.token("acme", "reviewer", "rita"))
    page.goto("/console/inbox")
    page.get_by_role("button", name="Next task").click()
    page.wait_for_url("**/console/tasks/**")
    task_id = task_id_of(page)
    page.get_by_role("button", name="Release").click()
    page.wait_for_url("**/console/inbox?note=released")
    expect(page.locator("#mine")).to_have_count(0)
    expect(page.locator("#waiting tbody tr")).to_have_count(3)
    task = served.app.tasks.get(task_id)
    assert task.status is TaskStatus.OPEN and task.assignee is None


def test_a_queue_filter_narrows_the_inbox_and_next_task(
    served: Served, open_page: Callable[[Any], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(served)
    sign_in(page, served.token("acme", "reviewer", "rita"))
    page.goto("/console/inbox")
    expect(page.locator(".queues .chip")).to_have_text(["senior", "support"])
    page.locator(".queues").get_by_role("link", name="support").click()
    page.wait_for_url("**/console/inbox?queue=support")
    expect(page.locator("#waiting tbody tr")).to_have_count(2)
    expect(page.locator(".chip.escalated")).to_have_count(0)
    # Next task stays in the queue: not the escalated task, which is first overall.
    page.get_by_role("button", name="Next task").click()
    page.wait_for_url("**/console/tasks/**?queue=support")
    task = served.app.tasks.get(task_id_of(page))
    assert task.queue == "support" and task.status is TaskStatus.CLAIMED
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url("**/console/tasks/**?queue=support&decided=1")
    assert served.app.tasks.get(task_id_of(page)).queue == "support"
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url("**/console/inbox?queue=support&note=done")
    expect(page.locator("#inbox")).to_contain_text("No tasks waiting in support")
    assert served.task("arrival").status is TaskStatus.OPEN


# -- small screens ---------------------------------------------------------------------------


def test_the_console_fits_a_390_px_screen(served: Served, browser: Any) -> None:
    """Nothing scrolls sideways on a phone: the inbox and the runs become cards, other tables
    scroll in their own box, the header wraps."""
    task, run_id = served.task("stolen").task_id, served.runs["stolen"]
    pages = {
        "reviewer": ["/console/inbox", f"/console/tasks/{task}", "/console/runs"],
        "operator": [
            "/console/inbox",
            "/console/runs",
            f"/console/runs/{run_id}",
            "/console/models",
            "/console/models/intent",
            "/console/dashboard",
        ],
    }
    for role, paths in pages.items():
        context = browser.new_context(base_url=served.url, viewport={"width": 390, "height": 844})
        try:
            page = context.new_page()
            sign_in(page, served.token("acme", role))
            page.wait_for_url("**/console/*")
            for path in paths:
                page.goto(path)
                page.wait_for_load_state("load")
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, (role, path, width)
        finally:
            context.close()


# -- tenants and roles -----------------------------------------------------------------------


def test_a_reviewer_sees_only_their_tenants_tasks(
    served: Served, open_page: Callable[[Any], Page]
) -> None:
    from playwright.sync_api import expect

    app = served.app
    page = open_page(served)
    sign_in(page, served.token("globex", "reviewer", "gus"))
    page.goto("/console/inbox")
    rows = page.locator("#waiting tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task", served.task("other").task_id)
    for name in ("arrival", "stolen", "rate"):
        expect(page.locator("main")).not_to_contain_text(served.task(name).task_id)

    acme = served.task("stolen")
    response = page.goto(f"/console/tasks/{acme.task_id}")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator("main")).not_to_contain_text(TICKETS["stolen"])
    csrf = harness.csrf_of(page)
    for action in ("claim", "submit"):
        posted = page.request.post(
            f"/console/tasks/{acme.task_id}/{action}",
            form={"csrf_token": csrf, "intent": INTENTS[0]},
            max_redirects=0,
        )
        assert posted.status == 403
    assert app.tasks.get(acme.task_id).status is TaskStatus.OPEN
    denied = [r for r in app.audit.query("globex") if r.action == "authz.denied"]
    assert denied and denied[-1].data["object"] == f"task:{acme.task_id}"
    # Next task never reaches into another tenant: globex has one task.
    page.goto("/console/inbox")
    page.get_by_role("button", name="Next task").click()
    page.wait_for_url(f"**/console/tasks/{served.task('other').task_id}")


def test_an_operator_sees_live_tasks_without_working_them(
    served: Served, open_page: Callable[[Any], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(served)
    sign_in(page, served.token("acme", "operator"))
    page.goto("/console/inbox")
    expect(page.locator("h2")).to_have_text(["Live tasks"])
    expect(page.locator("#waiting tbody tr")).to_have_count(3)
    expect(page.get_by_role("button", name="Next task")).to_have_count(0)
    expect(page.get_by_role("button", name="Claim")).to_have_count(0)
    page.goto(f"/console/tasks/{served.task('rate').task_id}")
    expect(page.locator("#case")).to_contain_text(TICKETS["rate"])
    expect(page.locator("#task-form")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("Waiting for a reviewer.")


def test_form_fields_cannot_collide_with_the_pages_own_inputs() -> None:
    """A form may name a field "queue" or "csrf_token" like the page's hidden inputs: the
    field's value is posted under its own prefixed name, never taken from the page's."""
    from starlette.datastructures import FormData

    from aevos import Field
    from aevos.server.console.inbox import _values

    fields = (Field.choice("queue", ["a", "b"], required=False), Field.text("csrf_token"))
    posted = FormData(
        [
            ("csrf_token", "session-secret"),
            ("queue", "general"),
            ("field.csrf_token", "typed"),
            ("field.queue", ""),
        ]
    )
    assert _values(fields, posted) == {"queue": None, "csrf_token": "typed"}


def test_the_console_does_not_name_the_database_in_error_pages() -> None:
    from aevos.errors import StorageError, StorageUnavailableError
    from aevos.server.errors import public_message

    locked = StorageUnavailableError("the database sqlite:////srv/a.db stayed locked")
    assert "srv" not in public_message(locked) and "unavailable" in public_message(locked)
    broken = StorageError("database error on postgresql://u@db.internal/prod: DataError")
    assert "db.internal" not in public_message(broken)
