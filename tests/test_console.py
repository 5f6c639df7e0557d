"""The web console in a real browser: sign-in, runs, models, roles, tenants, CSRF, sign-out.

A uvicorn server on a free loopback port serves a real app (SQLite; one test on PostgreSQL)
and the system chromium drives it through Playwright. Outside CI the tests skip when
Playwright or chromium (``AEVOS_TEST_CHROMIUM``, default ``/usr/bin/chromium``) is missing;
in CI (``CI=true``) they fail instead. Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from tests.conftest import IN_CI

from aevos import Aevos, StepContext, WorkflowContext
from aevos.errors import DefinitionError
from aevos.models.routing import Canary
from aevos.records.status import RunStatus
from aevos.server import create_app
from aevos.server.console import Sessions

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("AEVOS_TEST_CHROMIUM", "/usr/bin/chromium")  # Debian's package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _table(*rows: dict[str, Any], default: str) -> bytes:
    return json.dumps(
        {
            "input": {"amount": "number"},
            "table": list(rows),
            "default": {"label": default, "confidence": 0.5},
        }
    ).encode()


@dataclass
class Console:
    app: Aevos
    url: str
    runs: dict[str, str]  # what each test run is, by name: "done", "pending", "other"

    def token(self, tenant: str, role: str, name: str | None = None) -> str:
        issued = self.app.identity.create_token(
            tenant=tenant, role=role, name=name or role, created_by="test"
        )
        return issued.token


@contextmanager
def serving(database_url: str) -> Iterator[Console]:
    """A real app with finished and pending runs and a model, served by uvicorn."""
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.step(name="extract")
    def extract(ctx: StepContext, claim: dict[str, Any]) -> float:
        time.sleep(0.05)  # long enough to show as a bar of its own on the timeline
        return float(claim["amount"])

    @app.step(name="route")
    def route(ctx: StepContext, label: str) -> str:
        time.sleep(0.02)
        return f"queue:{label}"

    @app.workflow(name="claims.intake")
    def intake(ctx: WorkflowContext, claim: dict[str, Any]) -> dict[str, Any]:
        amount = extract(ctx, claim)
        risk = ctx.predict("claims-risk", {"amount": amount}, key=str(claim["id"]))
        return {"queue": route(ctx, str(risk.label))}

    @app.workflow(name="support.triage")
    def triage(ctx: WorkflowContext, ticket: str) -> str:
        return route(ctx, "billing" if "invoice" in ticket else "general")

    @app.step(name="shout")
    def shout(ctx: StepContext, text: str) -> str:
        return text.upper()

    @app.workflow(name="echo")
    def echo(ctx: WorkflowContext, text: str) -> str:
        return shout(ctx, text)

    models = app.models
    models.register(
        "claims-risk",
        _table(
            {"id": "small", "when": {"amount": {"lt": 1000}}, "label": "auto"}, default="review"
        ),
        flavor="rules",
        tenant="acme",
        aliases=["champion"],
        created_by="data-team",
    )
    models.register(
        "claims-risk",
        _table(
            {"id": "small", "when": {"amount": {"lt": 2000}}, "label": "auto"}, default="review"
        ),
        flavor="rules",
        tenant="acme",
        aliases=["challenger"],
        created_by="data-team",
    )
    app.gateway.route("claims-risk", canary=Canary("challenger", 10))

    operator = app.identity.create_token(
        tenant="acme", role="operator", name="starter", created_by="test"
    ).principal
    other = app.identity.create_token(
        tenant="globex", role="operator", name="starter", created_by="test"
    ).principal
    claim = {"id": 1, "amount": 500, "note": "<img src=x onerror=alert(1)>"}  # shown as text
    done = app.access.runs.start(operator, "claims.intake", [claim])
    other_run = app.access.runs.start(other, "support.triage", ["invoice missing"])
    worker = app.worker().start()
    try:
        for run_id in (done.run_id, other_run.run_id):
            app.handle(run_id).result(timeout=30)
    finally:
        worker.stop()
    # No worker from here on: this run stays ENQUEUED.
    pending = app.access.runs.start(operator, "claims.intake", [{"id": 3, "amount": 5000}])

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(app), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        runs = {"done": done.run_id, "pending": pending.run_id, "other": other_run.run_id}
        yield Console(app, f"http://127.0.0.1:{port}", runs)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.close()


@pytest.fixture
def console(sqlite_url: str) -> Iterator[Console]:
    with serving(sqlite_url) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright is not installed (pip install -e '.[test]')"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"chromium not found at {CHROMIUM} (Debian: apt-get install chromium)"
    if problem is not None:
        if IN_CI:
            pytest.fail(problem + " (CI must run the browser tests)")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[Console], Page]]:
    """A fresh browser context (no cookies) on a console; several per test if needed."""
    contexts = []

    def factory(served: Console) -> Page:
        context = browser.new_context(base_url=served.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield factory
    for context in contexts:
        context.close()


def sign_in(page: Page, token: str) -> None:
    page.goto("/console/login")
    page.fill("#token", token)
    page.click("button[type=submit]")


def csrf_of(page: Page) -> str:
    return page.locator("input[name=csrf_token]").first.input_value()


# -- signing in ------------------------------------------------------------------------------


def test_a_bad_token_shows_an_error_and_is_audited(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(console)
    page.goto("/console/runs")
    expect(page).to_have_url(f"{console.url}/console/login?next=/console/runs")
    page.fill("#token", "aevos_0123456789ab_" + "x" * 43)
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("That token was not accepted.")
    assert page.get_by_role("navigation").count() == 0
    assert not [c for c in page.context.cookies() if c["name"] == "aevos_console"]
    denied = [r for r in console.app.audit.query("default") if r.action == "auth.denied"]
    assert denied and denied[-1].actor == "token#0123456789ab"


def test_the_session_cookie_is_opaque_http_only_and_same_site_strict(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    token = console.token("acme", "operator")
    page = open_page(console)
    sign_in(page, token)
    page.wait_for_url("**/console/runs")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "aevos_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert token not in cookie["value"] and token.split("_", 2)[2] not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # no script can read it


# -- runs ------------------------------------------------------------------------------------


def test_an_operator_explores_runs_and_a_run_with_its_timeline_and_lineage(
    console: Console, open_page: Callable[[Console], Page], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = open_page(console)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    sign_in(page, console.token("acme", "operator", "olga"))
    page.wait_for_url("**/console/runs")
    nav = page.get_by_role("navigation", name="main")
    expect(nav.get_by_role("link")).to_have_text(
        ["Inbox", "Runs", "Models", "Dead letters", "Dashboard", "Evolution"]
    )
    runs = page.locator("#runs tbody tr")
    expect(runs).to_have_count(2)  # acme's two runs, not globex's
    expect(page.locator("#runs")).not_to_contain_text(console.runs["other"])

    # The status filter swaps the list in place (htmx) and keeps the filter in the URL.
    page.select_option("#status", "ENQUEUED")
    expect(page).to_have_url(f"{console.url}/console/runs?status=ENQUEUED")
    expect(runs).to_have_count(1)
    expect(runs.first).to_contain_text(console.runs["pending"])
    page.select_option("#status", "SUCCEEDED")
    expect(runs).to_have_count(1)
    expect(runs.first).to_contain_text("SUCCEEDED")

    page.click(f"text={console.runs['done']}")
    page.wait_for_url(f"**/console/runs/{console.runs['done']}")
    expect(page.locator("h1")).to_contain_text("SUCCEEDED")
    page.wait_for_function("() => window.Chart && Chart.getChart('timeline')")
    labels = page.evaluate("Chart.getChart('timeline').data.labels")
    bars = page.evaluate("Chart.getChart('timeline').data.datasets[0].data")
    assert labels == ["#0 extract", "#1 aevos.predict:claims-risk", "#2 route"]
    assert len(bars) == 3 and all(end >= start >= 0 for start, end in bars)
    assert bars[0][1] - bars[0][0] >= 0.04  # extract slept 50 ms
    steps = page.locator("#steps tbody tr")
    expect(steps).to_have_count(3)
    # Each step's output, as GET /v1/runs/{id}/steps gives it to this operator.
    expect(steps.nth(0).locator("td.output summary")).to_have_text("500.0")
    expect(steps.nth(2).locator("td.output summary")).to_have_text('"queue:auto"')
    token = {"Authorization": f"Bearer {console.token('acme', 'operator', 'olga')}"}
    api_steps = httpx.get(f"{console.url}/v1/runs/{console.runs['done']}/steps", headers=token)
    shown = [json.loads(pre.text_content() or "") for pre in steps.locator("td.output pre").all()]
    assert shown == [s["output"] for s in api_steps.json()]
    lineage = page.locator("#lineage")
    expect(lineage).to_contain_text("operator:starter")  # who started it
    expect(lineage).to_contain_text("claims-risk@")  # the model call, by version
    expect(lineage.locator("summary")).to_contain_text("Audit trail")
    page.locator("#input summary").click()
    expect(page.locator("#input pre")).to_contain_text('"note": "<img src=x onerror=alert(1)>"')
    assert page.locator("main img").count() == 0
    page.screenshot(path=str(tmp_path / "console-run.png"), full_page=True)
    assert (tmp_path / "console-run.png").stat().st_size > 10_000
    assert problems == []  # nothing blocked by the CSP, no script errors


def test_a_large_step_output_is_shown_in_part_with_a_link_to_all_of_it(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    app = console.app
    operator = app.identity.create_token(tenant="acme", role="operator", name="o", created_by="t")
    text = "ab" * 6000  # 12 KB of JSON: past the 8 KiB a page shows of a value
    run_id = app.access.runs.start(operator.principal, "echo", [text]).run_id
    worker = app.worker().start()
    try:
        assert app.handle(run_id).result(timeout=30) == text.upper()
    finally:
        worker.stop()
    page = open_page(console)
    sign_in(page, operator.token)
    page.goto(f"/console/runs/{run_id}")
    cell = page.locator("#steps tbody tr").first.locator("td.output")
    expect(cell.locator("summary")).to_contain_text('"ABABAB')
    cell.locator("summary").click()
    expect(cell).to_contain_text(f"{len(text) + 2} bytes of JSON, shown in part")
    href = cell.get_by_role("link", name="the whole value").get_attribute("href")
    assert href == f"/console/runs/{run_id}/steps/0/output"
    whole = page.request.get(href)
    assert whole.headers["content-type"] == "application/json"
    assert whole.json() == text.upper()
    assert page.request.get(f"/console/runs/{run_id}/input").json() == {
        "args": [text],
        "kwargs": {},
    }
    assert page.request.get(f"/console/runs/{run_id}/steps/5/output").status == 404


def test_an_operator_cancels_a_run_with_the_form(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(console)
    sign_in(page, console.token("acme", "operator"))
    page.goto(f"/console/runs/{console.runs['pending']}")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("h1")).to_contain_text("CANCELLED")
    expect(page.get_by_role("button", name="Resume run")).to_be_visible()
    assert console.app.store.get_run(console.runs["pending"]).status is RunStatus.CANCELLED


# -- models ----------------------------------------------------------------------------------


def test_a_model_page_shows_versions_aliases_and_rollout(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    gateway = console.app.gateway
    for key in range(100):  # the 10% canary takes the keys it hashes to, every time
        gateway.predict("claims-risk", {"amount": 1500}, key=str(key), tenant="acme")
    gateway.flush()
    page = open_page(console)
    sign_in(page, console.token("acme", "reviewer"))
    page.get_by_role("link", name="Models").click()
    expect(page.locator("#models tbody tr")).to_have_count(1)
    expect(page.locator("#models")).to_contain_text("champion → v1")
    page.get_by_role("link", name="claims-risk").click()
    page.wait_for_url("**/console/models/claims-risk")
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    expect(page.locator("#versions tbody tr").first).to_contain_text("v2")
    expect(page.locator("#versions tbody tr").first).to_contain_text("challenger")
    expect(page.locator("#aliases tbody tr")).to_have_count(2)
    expect(page.locator("#aliases")).to_contain_text("champion")
    rollout = page.locator("#rollout")
    expect(rollout).to_contain_text("claims-risk@champion")
    expect(rollout).to_contain_text("claims-risk@challenger takes 10% of calls")
    # Live metrics: the champion and the canary side by side, drawn as charts.
    totals = page.locator("#live-totals tbody tr")
    expect(totals).to_have_count(2)
    calls = {
        row.locator("td").nth(0).inner_text(): int(row.locator("td").nth(1).inner_text())
        for row in totals.all()
    }
    # The fixture's finished run called the model once too.
    assert sum(calls.values()) == 101 and 0 < calls["claims-risk@2"] < 30
    page.wait_for_function("Chart.getChart('model-calls') !== undefined")
    drawn = page.evaluate(
        "['model-calls', 'model-p95', 'model-confidence', 'model-overrides']"
        ".map(id => Chart.getChart(id).data.datasets.map(d => d.label))"
    )
    assert drawn == [["claims-risk@1", "claims-risk@2"]] * 4


def test_a_second_person_approves_a_promotion_on_the_model_page(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    from aevos import PolicySet

    app = console.app
    app._policies = PolicySet.load(Path(__file__).resolve().parents[1] / "examples" / "policies")
    ops = app.identity.create_token(tenant="acme", role="operator", name="ops", created_by="t")
    evidence = {  # a clear gain on too few cases: the example gate asks a person
        "candidate": {"accuracy": 0.9, "calibration_error": 0.05, "samples": 120},
        "champion": {"accuracy": 0.8, "calibration_error": 0.05},
    }
    asked = app.access.models.promote(ops.principal, "claims-risk", 2, evidence=evidence)
    assert asked.approval is not None

    # The requester sees their request and may only withdraw it.
    requester = open_page(console)
    sign_in(requester, ops.token)
    requester.goto("/console/models/claims-risk")
    row = requester.locator("#approval-list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("v2 to champion (was v1)")
    expect(row).to_contain_text("samples 120")
    expect(row.get_by_role("button", name="Withdraw")).to_be_visible()
    expect(row.get_by_role("button", name="Approve and promote")).to_have_count(0)

    lead = open_page(console)
    sign_in(lead, console.token("acme", "admin", "lead"))
    lead.goto("/console/models/claims-risk")
    # Enter in a reason box submits that box's action only: here the rejection.
    lead.get_by_role("textbox", name="reason to reject").fill("too few cases")
    lead.get_by_role("textbox", name="reason to reject").press("Enter")
    lead.wait_for_url("**/console/models/claims-risk#approvals")
    expect(lead.locator("#approval-list tbody tr")).to_contain_text("REJECTED")
    assert app.models.aliases("claims-risk", tenant="acme")["champion"] == 1

    again = app.access.models.promote(ops.principal, "claims-risk", 2, evidence=evidence)
    assert again.approval is not None
    lead.goto("/console/models/claims-risk")
    lead.get_by_role("textbox", name="reason to approve and promote").fill("read them myself")
    lead.get_by_role("textbox", name="reason to approve and promote").press("Enter")
    lead.wait_for_url("**/console/models/claims-risk#approvals")
    newest = lead.locator("#approval-list tbody tr").first
    expect(newest).to_contain_text("APPROVED")
    expect(newest).to_contain_text("read them myself")
    expect(lead.locator("#aliases")).to_contain_text("v2")
    assert app.models.aliases("claims-risk", tenant="acme")["champion"] == 2

    # A request past its decision cannot be decided again, from a stale page either.
    requester.get_by_role("button", name="Withdraw").click()
    expect(requester.locator("main")).to_contain_text("REJECTED: it was already decided")


# -- roles, tenants and CSRF -----------------------------------------------------------------


def test_a_reviewer_cannot_control_runs(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(console)
    sign_in(page, console.token("acme", "reviewer", "rita"))
    page.wait_for_url("**/console/inbox")  # a reviewer starts in their inbox
    page.goto(f"/console/runs/{console.runs['pending']}")
    expect(page.locator("h1")).to_contain_text("ENQUEUED")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    # Posting anyway, with a valid CSRF token, is refused by Access and audited.
    response = page.request.post(
        f"/console/runs/{console.runs['pending']}/cancel",
        form={"csrf_token": csrf_of(page)},
        max_redirects=0,
    )
    assert response.status == 403
    assert "may not cancel runs" in response.text()
    assert console.app.store.get_run(console.runs["pending"]).status is RunStatus.ENQUEUED
    denied = [r for r in console.app.audit.query("acme") if r.action == "authz.denied"]
    assert denied[-1].actor.startswith("reviewer:rita#")


def test_a_reviewer_reads_no_raw_pii_on_the_run_pages(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    operator = console.app.identity.create_token(
        tenant="acme", role="operator", name="pii", created_by="test"
    ).principal
    raw = ("john.doe@example.com", "4111 1111 1111 1111")
    run = console.app.access.runs.start(
        operator, "support.triage", [f"invoice for {raw[0]}, card {raw[1]}"]
    )
    page = open_page(console)
    sign_in(page, console.token("acme", "reviewer", "rita"))
    page.wait_for_url("**/console/inbox")  # a reviewer lands on the inbox
    page.goto("/console/runs")
    expect(page.locator("#runs")).to_contain_text(run.run_id)
    page.goto(f"/console/runs/{run.run_id}")
    page.locator("summary", has_text="Input").click()
    # What the run page shows is the stored form: the data policy's placeholders.
    shown_input = re.compile(r"invoice for <EMAIL(:tok_[a-z]+)?>, card <CREDIT_CARD(:tok_[a-z]+)?>")
    expect(page.locator("main")).to_contain_text(shown_input)
    for shown in (page.content(), page.inner_text("body")):
        assert not [value for value in raw if value in shown]
    page.goto("/console/runs")
    assert not [value for value in raw if value in page.content()]


def test_another_tenants_run_and_model_are_not_visible(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(console)
    sign_in(page, console.token("globex", "operator"))
    page.wait_for_url("**/console/runs")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs")).to_contain_text(console.runs["other"])
    response = page.goto(f"/console/runs/{console.runs['done']}")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator("main")).not_to_contain_text("claims.intake")
    expect(page.locator("main")).not_to_contain_text("acme")
    for value in ("input", "output", "steps/0/output"):
        response = page.goto(f"/console/runs/{console.runs['done']}/{value}")
        assert response is not None and response.status == 403, value
        expect(page.locator("main")).not_to_contain_text("onerror")
    response = page.goto("/console/models/claims-risk")
    assert response is not None and response.status == 404
    page.goto("/console/models")
    expect(page.locator("main")).to_contain_text("No models registered in this tenant.")
    denied = [r for r in console.app.audit.query("globex") if r.action == "authz.denied"]
    assert denied[-1].data["object"] == f"run:{console.runs['done']}"


def test_posts_need_the_sessions_csrf_token_and_a_same_site_origin(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    page = open_page(console)
    sign_in(page, console.token("acme", "operator"))
    pending = f"/console/runs/{console.runs['pending']}/cancel"
    forms: list[dict[str, str | float | bool]] = [{}, {"csrf_token": "forged"}]
    for form in forms:
        response = page.request.post(pending, form=form, max_redirects=0)
        assert response.status == 403 and "CSRF" in response.text()
    # Another site's page posting a form: the SameSite=Strict cookie is not sent with it.
    evil = (
        f'<form id="f" method="post" action="{console.url}{pending}">'
        '<input name="csrf_token" value="guess"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    page.route(
        "http://evil.test/", lambda route: route.fulfill(body=evil, content_type="text/html")
    )
    page.goto("http://evil.test/")
    page.wait_for_url("**/console/login**")
    assert console.app.store.get_run(console.runs["pending"]).status is RunStatus.ENQUEUED
    # htmx requests carry the token as a header (the layout's hx-headers).
    page.goto("/console/runs")
    headers = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")
    response = page.request.post(pending, headers=headers, max_redirects=0)
    assert response.status == 303
    assert console.app.store.get_run(console.runs["pending"]).status is RunStatus.CANCELLED


# -- signing out -----------------------------------------------------------------------------


def test_sign_out_ends_the_session_even_for_a_copied_cookie(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(console)
    sign_in(page, console.token("acme", "operator"))
    page.wait_for_url("**/console/runs")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "aevos_console"]
    elsewhere = open_page(console)  # the copied cookie works in another browser...
    elsewhere.context.add_cookies(
        [{"name": cookie["name"], "value": cookie["value"], "url": f"{console.url}/console"}]
    )
    elsewhere.goto("/console/runs")
    expect(elsewhere).to_have_url(f"{console.url}/console/runs")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login?reason=signed-out")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    assert not [c for c in page.context.cookies() if c["name"] == "aevos_console"]
    page.goto("/console/runs")
    expect(page).to_have_url(f"{console.url}/console/login?next=/console/runs")
    elsewhere.goto("/console/runs")  # ...until its session is signed out
    expect(elsewhere).to_have_url(f"{console.url}/console/login?reason=expired")


def test_revoking_the_token_ends_its_console_sessions(
    console: Console, open_page: Callable[[Console], Page]
) -> None:
    from playwright.sync_api import expect

    issued = console.app.identity.create_token(
        tenant="acme", role="operator", name="leaver", created_by="test"
    )
    admin = console.app.identity.create_token(
        tenant="acme", role="admin", name="admin", created_by="test"
    )
    page = open_page(console)
    sign_in(page, issued.token)
    page.wait_for_url("**/console/runs")
    console.app.identity.revoke(issued.principal.token_id, by=admin.principal)
    page.reload()
    expect(page).to_have_url(f"{console.url}/console/login?reason=expired")
    expect(page.get_by_role("status")).to_contain_text("Sign in again")


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_console_on_postgresql(postgres_url: str, open_page: Callable[[Console], Page]) -> None:
    from playwright.sync_api import expect

    with serving(postgres_url) as served:
        page = open_page(served)
        sign_in(page, served.token("acme", "operator"))
        page.wait_for_url("**/console/runs")
        expect(page.locator("#runs tbody tr")).to_have_count(2)
        page.goto(f"/console/runs/{served.runs['done']}")
        page.wait_for_function("() => window.Chart && Chart.getChart('timeline')")
        expect(page.locator("#steps tbody tr")).to_have_count(3)
        page.goto("/console/models/claims-risk")
        expect(page.locator("#versions tbody tr")).to_have_count(2)


# -- sessions, without a browser -------------------------------------------------------------


def test_sessions_refuse_tampered_expired_and_ended_cookies() -> None:
    sessions = Sessions(ttl=60)
    session, cookie = sessions.issue("aevos_0123456789ab_" + "s" * 43)
    assert sessions.open(cookie) == session
    assert "s" * 43 not in cookie
    assert sessions.open(cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB")) is None
    assert Sessions(ttl=60).open(cookie) is None  # another key
    assert sessions.open(None) is None and sessions.open("x" * 5000) is None
    sessions.end(session)
    assert sessions.open(cookie) is None

    old = Sessions(ttl=60)
    data = json.dumps({"t": "tok", "s": "sid", "c": "csrf"}).encode()
    stale = old._fernet.encrypt_at_time(data, int(time.time()) - 61).decode()
    assert old.open(stale) is None


def test_the_session_key_comes_from_the_environment() -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    one = Sessions.from_env({"AEVOS_CONSOLE_KEY": key})
    _, cookie = one.issue("tok")
    assert Sessions.from_env({"AEVOS_CONSOLE_KEY": key}).open(cookie) is not None
    with pytest.raises(DefinitionError, match="AEVOS_CONSOLE_KEY must be a Fernet key") as info:
        Sessions.from_env({"AEVOS_CONSOLE_KEY": "not-a-key"})
    assert "not-a-key" not in str(info.value)
