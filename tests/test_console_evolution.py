"""The console's evolution page in a real browser: the report's charts on one time axis,
the version change and the rollout outcome marked on them and listed, a model selector,
and another tenant's page empty.

The story is test_evolution_report.py's (a real triage with reviews, QA samples and a
promotion); the browser harness is test_console.py's (chromium through Playwright, uvicorn
on a loopback port).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from tests import test_console as harness
from tests import test_evolution_report as report_story

from aevos import Aevos
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

browser = harness.browser
open_page = harness.open_page
trained = report_story.trained
sign_in = harness.sign_in


@dataclass
class Served:
    app: Aevos
    url: str
    story: report_story.Story

    def token(self, tenant: str, role: str) -> str:
        return self.app.identity.create_token(
            tenant=tenant, role=role, name=role, created_by="test"
        ).token


@contextmanager
def serving(database_url: str, model: report_story.Trained) -> Iterator[Served]:
    app = Aevos(database_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    story = report_story.tell(app, model)
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
        yield Served(app, f"http://127.0.0.1:{port}", story)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.close()


CHARTS = [
    "evolution-automation",
    "evolution-precision",
    "evolution-reviews",
    "evolution-cost",
    "evolution-drift",
]


def test_the_evolution_page_charts_the_report_with_its_changes_marked(
    sqlite_url: str, trained: report_story.Trained, open_page: Callable[[Served], Page]
) -> None:
    from playwright.sync_api import expect

    with serving(sqlite_url, trained) as served:
        page = open_page(served)  # type: ignore[arg-type]
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        sign_in(page, served.token(report_story.TENANT, "operator"))
        page.get_by_role("navigation", name="main").get_by_role("link", name="Evolution").click()
        page.wait_for_url("**/console/evolution")
        expect(page.locator("#totals")).to_contain_text("20")  # cases of every model

        # Choose the model: the selector reloads the page for it.
        page.select_option("#model", "intent")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/console/evolution?model=intent&span=all")
        expected = served.app.reports.evolution("intent", tenant=report_story.TENANT).totals
        tiles = page.locator("#totals .tile .value")
        expect(tiles.nth(0)).to_have_text(str(expected["cases"]))
        expect(tiles.nth(1)).to_have_text(f"{expected['automation_rate'] * 100:.1f}%")
        expect(tiles.nth(2)).to_have_text(f"{expected['precision'] * 100:.1f}%")
        rows = page.locator("#markers tbody tr")
        expect(rows).to_have_count(5)  # "other"'s alert and rollback are not shown
        expect(rows.nth(1)).to_contain_text("model.promoted")
        expect(rows.nth(1)).to_contain_text("champion v1 → v2")
        expect(rows.nth(2)).to_contain_text("retraining.")
        expect(rows.nth(4)).to_contain_text("rollout.rolled_back")

        page.wait_for_function("Chart.getChart('evolution-drift') !== undefined")
        drawn = page.evaluate(
            "ids => ids.map(id => { const c = Chart.getChart(id); return ["
            "c.data.labels.length, c.data.datasets.map(d => d.label),"
            "c.options.plugins.markers.items.map(m => m.label)]; })",
            CHARTS,
        )
        labels = ["v1 champion", "v2 promoted", "v2 drift alert", "v3 rollout rolled back"]
        assert [d[0] for d in drawn] == [30] * 5
        assert all(len(d[2]) == 5 and d[2][2].startswith("retraining ") for d in drawn)
        assert [[x for i, x in enumerate(d[2]) if i != 2] for d in drawn] == [labels] * 5
        assert drawn[0][1] == ["automated"] and drawn[1][1] == ["precision", "95% low", "95% high"]
        # The automation rate the chart draws is the report's, bucket by bucket.
        rates = page.evaluate("Chart.getChart('evolution-automation').data.datasets[0].data")
        shown = page.evaluate("JSON.parse(document.getElementById('evolution-data').textContent)")
        report = served.app.reports.evolution(
            "intent",
            tenant=report_story.TENANT,
            since=shown["since"],
            until=shown["until"],
            buckets=30,
        )
        assert rates == [
            None if b.automation_rate is None else b.automation_rate * 100 for b in report.buckets
        ]
        # The promotion is drawn between the first and the last bucket with cases.
        positions = page.evaluate(
            "Chart.getChart('evolution-automation').options.plugins.markers.items"
            ".map(m => m.position)"
        )
        with_cases = [i for i, r in enumerate(rates) if r is not None]
        assert with_cases[0] - 0.5 <= positions[1] <= with_cases[-1] + 0.5
        assert problems == []

        # Another tenant's operator sees an empty report, and not acme's model.
        other = open_page(served)  # type: ignore[arg-type]
        sign_in(other, served.token("globex", "operator"))
        other.goto("/console/evolution")
        expect(other.locator("#totals .tile .value").nth(0)).to_have_text("0")
        expect(other.locator("#no-markers")).to_be_visible()
        assert other.locator("#model option").all_inner_texts() == ["Every model"]
        missing = other.goto("/console/evolution?model=intent")
        assert missing is not None and missing.status == 404

        # A service token cannot read the page (it needs tasks:read).
        machine = open_page(served)  # type: ignore[arg-type]
        sign_in(machine, served.token(report_story.TENANT, "service"))
        denied = machine.goto("/console/evolution")
        assert denied is not None and denied.status == 403
