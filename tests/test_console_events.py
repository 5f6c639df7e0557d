"""The console's dead-letter page in a real browser: list with reasons, replay the ticked
ones after a fix, no replay for a role that may not, nothing of another tenant."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import uvicorn
from tests.test_console import browser, open_page, sign_in  # noqa: F401  (fixtures)

from aevos import Aevos, WorkflowContext
from aevos.errors import EventMappingError, InvalidEventError
from aevos.events.webhook import Delivery, WebhookSource, sign
from aevos.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

SECRET = "whsec_console-events-0123456789ab"


@dataclass
class Served:
    app: Aevos
    url: str

    def token(self, tenant: str, role: str) -> str:
        return self.app.identity.create_token(
            tenant=tenant, role=role, name=role, created_by="test"
        ).token


def _deliver(app: Aevos, event_id: str, body: bytes) -> None:
    delivery = Delivery(
        "crm", body, len(body), signature=sign(SECRET, body, event_id=event_id), event_id=event_id
    )
    with pytest.raises((EventMappingError, InvalidEventError)):
        app.ingress.receive(delivery)


@pytest.fixture
def served(sqlite_url: str) -> Iterator[Served]:
    app = Aevos(sqlite_url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)

    @app.workflow(name="intake")
    def intake(ctx: WorkflowContext, ticket: str) -> str:
        return ticket

    app.webhook(
        "crm",
        workflow="intake",
        tenant="acme",
        secret=SECRET,
        map=lambda e: {"ticket": e["ticket"]},
    )
    _deliver(app, "e-1", json.dumps({"subject": "<b>printer</b>"}).encode())
    _deliver(app, "e-2", b"{broken")
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
        yield Served(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.close()


def test_an_operator_replays_dead_letters_after_a_fix(
    served: Served,
    open_page: Callable[[Served], Page],  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    page = open_page(served)
    sign_in(page, served.token("acme", "operator"))
    page.get_by_role("link", name="Dead letters").click()
    rows = page.locator("#letters tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#letters")).to_contain_text("event_mapping_failed")
    expect(page.locator("#letters")).to_contain_text("invalid_event")
    # The fix: the mapping accepts the sender's field.
    served.app.webhooks["crm"] = WebhookSource.declare(
        "crm",
        workflow="intake",
        tenant="acme",
        secret=SECRET,
        map=lambda e: {"ticket": e.get("ticket") or e["subject"]},
    )
    page.get_by_label("select dead letter 1").check()
    page.get_by_label("select dead letter 2").check()
    page.click("#replay-selected")
    outcomes = page.locator("#outcomes")
    expect(outcomes).to_contain_text("#1: replayed, run")
    expect(outcomes).to_contain_text("#2: failed again: invalid_event")
    # Only the unreplayable one is left DEAD; the replayed one started a run.
    expect(rows).to_have_count(1)
    letter = served.app.intake.get("acme", 1)
    assert letter.status.value == "REPLAYED" and letter.run_id is not None
    assert served.app.get_run(letter.run_id).workflow == "intake"
    # One row's own button replays it alone.
    page.locator("tr[data-id='2']").get_by_role("button", name="Replay").click()
    expect(page.locator("#outcomes")).to_contain_text("#2: failed again")
    assert served.app.intake.get("acme", 2).attempts == 2


def test_a_reviewer_cannot_replay_and_another_tenant_sees_nothing(
    served: Served,
    open_page: Callable[[Served], Page],  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    page = open_page(served)
    sign_in(page, served.token("acme", "reviewer"))
    page.goto("/console/dead-letters")
    expect(page.locator("#letters tbody tr")).to_have_count(2)
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    other = open_page(served)
    sign_in(other, served.token("globex", "operator"))
    other.goto("/console/dead-letters")
    expect(other.locator(".empty")).to_contain_text("No dead letters")
